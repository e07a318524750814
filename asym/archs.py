"""Table 1 of the paper as data: each network's input shape and layer rows (torch-free).

``asym.models.build_network`` turns a row list into a network; the datasets (``asym.data``) read the input
shapes to resize and cache their tensors, without loading torch.
"""
from __future__ import annotations

# Table 1, as (kind, args) rows; "C" = conv (out, k, stride, pad), "F" = FC (out), pools (k, stride)
ARCHS = {
    "mnist": dict(input=(1, 28, 28), layers=[("C", 20, 5, 1, 0), ("max", 2, 2), ("C", 50, 5, 1, 0),
                                             ("max", 2, 2), ("F", 500), ("F", "classes")]),
    "cifar": dict(input=(3, 32, 32), layers=[("C", 32, 5, 1, 2), ("maxpad", 3, 2), ("C", 64, 5, 1, 2),
                                             ("avgpad", 3, 2), ("C", 64, 5, 1, 2), ("avgpad", 3, 2),
                                             ("F", 128), ("F", "classes")]),
    "svhn": dict(input=(3, 32, 32), layers=[("C", 20, 5, 1, 0), ("max", 2, 2), ("C", 512, 7, 1, 0),
                                            ("max", 2, 2), ("F", 40), ("F", "classes")]),
    "timit": dict(input=(1845,), layers=[("F", 512), ("F", 256), ("F", "classes")]),
    "default119": dict(input=(3, 119, 119), layers=[("C", 48, 9, 2, 0), ("max", 2, 2), ("C", 128, 5, 1, 0),
                                                    ("max", 2, 2), ("F", "max(256,3c)"), ("F", "2c"),
                                                    ("F", "classes")]),
}


def layer_width(w, classes: int) -> int:
    return {"classes": classes, "max(256,3c)": max(256, 3 * classes), "2c": 2 * classes}.get(w, w)


def input_shape(arch: str) -> tuple:
    return ARCHS[arch]["input"]
