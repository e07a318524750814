"""Model labels (the paper's table columns) and the Table 1 networks.

A label is ``+``-joined tokens, e.g. ``uSF+BN+BM3`` or ``brSF-p50+BN+BM``:
  feedback  uSF | NuSF | brSF | frSF | brSF-p<P> | frSF-p<P> | RndF   (none: symmetric BP)
  BN        batch normalisation (learnable scale/shift only in the symmetric ``BN`` / ``BN+BM``)
  BM[1-3]   Batch Manhattan setting (BM = BM1; none: setting 0, SGD)
  SGD       alone: plain SGD with momentum and weight decay
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .feedback import FeedbackSpec
from .nn import AsymConv2d, AsymLinear

_FEEDBACK_LABELS = {"usf": "uSF", "nusf": "NuSF", "brsf": "brSF", "frsf": "frSF", "rndf": "RndF"}
_FEEDBACK_RE = re.compile(r"^(uSF|NuSF|brSF|frSF|RndF)(?:-p(\d{1,3}))?$")
_BM_RE = re.compile(r"^BM([123])?$")
LABEL_GRAMMAR = ("[uSF|NuSF|brSF|frSF|brSF-p<P>|frSF-p<P>|RndF][+BN][+BM|+BM1|+BM2|+BM3], or SGD "
                 "(e.g. 'uSF+BN+BM', 'brSF-p50+BN+BM', 'RndF+BN', 'BM2')")
FREEZE_CHOICES = ("none", "bottom", "top")


@dataclass(frozen=True)
class ModelSpec:
    """An experimental condition: how feedback, normalisation and the update rule are set."""

    feedback: str = "bp"        # a feedback mode of asym.feedback
    flip: float = 0.0           # sign-flip probability p of the -p variants
    batchnorm: bool = False
    bn_affine: bool = False     # learnable BN scale/shift (only the symmetric BN models)
    setting: int = 0            # Batch Manhattan setting, 0 = SGD

    @property
    def feedback_name(self) -> str:
        return FeedbackSpec(self.feedback, self.flip).name

    @property
    def label(self) -> str:
        """The canonical label: ``BM1`` is written ``BM`` and ``brSF-p0`` is ``brSF``."""
        parts = []
        if self.feedback != "bp":
            fb = _FEEDBACK_LABELS[self.feedback]
            parts.append(f"{fb}-p{round(self.flip * 100)}" if self.flip else fb)
        if self.batchnorm:
            parts.append("BN")
        if self.setting:
            parts.append("BM" if self.setting == 1 else f"BM{self.setting}")
        return "+".join(parts) or "SGD"


def parse_model(label: "str | ModelSpec") -> ModelSpec:
    """Parse a table column label such as ``uSF+BN+BM3`` into a ModelSpec; ValueError if unknown."""
    if isinstance(label, ModelSpec):
        return label

    def bad(why: str) -> ValueError:
        return ValueError(f"unknown model label {label!r} ({why}); grammar: {LABEL_GRAMMAR}")

    tokens = str(label).strip().split("+")
    if tokens == ["SGD"]:
        return ModelSpec()
    feedback, flip, batchnorm, setting = "bp", 0.0, False, 0
    for i, tok in enumerate(tokens):
        fb, bm = _FEEDBACK_RE.match(tok), _BM_RE.match(tok)
        if fb and i == 0:
            feedback = fb.group(1).lower()
            if fb.group(2) is not None:
                if feedback not in ("brsf", "frsf"):
                    raise bad("only brSF and frSF take -p<P>")
                if int(fb.group(2)) > 100:
                    raise bad("P is a percentage")
                flip = int(fb.group(2)) / 100
        elif tok == "BN" and not batchnorm and not setting:
            batchnorm = True
        elif bm and not setting:
            setting = int(bm.group(1) or 1)
        else:
            raise bad(f"unexpected {tok!r}")
    return ModelSpec(feedback, flip, batchnorm, batchnorm and feedback == "bp", setting)


class PaperBatchNorm(nn.Module):
    """Batch normalisation with the paper's test statistics (GUIDE item 4).

    Training mode normalises with the batch mean and std. ``calibrating`` mode does the same and
    updates an exponential moving average (α) of batch mean and std, started from the first batch.
    Eval mode normalises with those averages. Works for (N, C) and (N, C, H, W) inputs.
    """

    def __init__(self, num_features: int, affine: bool = False, eps: float = 1e-5, alpha: float = 0.05):
        super().__init__()
        self.eps, self.alpha, self.calibrating = eps, alpha, False
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("calibrated_batches", torch.zeros((), dtype=torch.long))

    def reset_statistics(self) -> None:
        self.calibrated_batches.zero_()

    def forward(self, x):
        if self.training or self.calibrating:
            if self.calibrating:
                with torch.no_grad():
                    dims = [0] + list(range(2, x.dim()))
                    var, mean = torch.var_mean(x, dims, unbiased=False)
                    std = (var + self.eps).sqrt()
                    a = 1.0 if self.calibrated_batches.item() == 0 else self.alpha
                    self.running_mean.lerp_(mean.to(self.running_mean.dtype), a)
                    self.running_std.lerp_(std.to(self.running_std.dtype), a)
                    self.calibrated_batches += 1
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = (x - self.running_mean.view(shape)) / self.running_std.view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def extra_repr(self):
        return f"{self.running_mean.numel()}, affine={self.weight is not None}, alpha={self.alpha}"


class PadRightBottom(nn.Module):
    """One unit of zero padding at the right and bottom (CIFAR net's pooling, Table 1)."""

    def forward(self, x):
        return F.pad(x, (0, 1, 0, 1))


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


def _width(w, classes: int) -> int:
    return {"classes": classes, "max(256,3c)": max(256, 3 * classes), "2c": 2 * classes}.get(w, w)


def input_shape(arch: str) -> tuple:
    return ARCHS[arch]["input"]


def build_network(arch: str, num_classes: int, model: "str | ModelSpec" = "SGD", freeze: str = "none",
                  seed: int = 0, in_features: int | None = None) -> nn.Sequential:
    """A Table 1 network for ``model``: weights initialised and feedback drawn from ``seed``.

    Every Conv/FC except the output layer is followed by [BN] and ReLU (GUIDE item 4).
    ``freeze``: ``bottom`` clamps the last layer at its random init, ``top`` clamps all layers before it.
    ``in_features`` replaces the MLP's 1845 inputs (user feature sets on the ``timit`` arch).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {freeze!r}")
    spec = parse_model(model)
    fb = spec.feedback_name
    init = torch.random.fork_rng(devices=[])
    with init:
        torch.manual_seed(seed)
        shape, layers, weighted = ARCHS[arch]["input"], [], 0
        if in_features and len(shape) == 1:
            shape = (in_features,)
        channels, flat = shape[0], None
        size = shape[1] if len(shape) == 3 else None
        rows = ARCHS[arch]["layers"]
        for i, row in enumerate(rows):
            kind, last = row[0], i == len(rows) - 1
            if kind == "C":
                out, k, stride, pad = row[1:]
                layers.append(AsymConv2d(channels, out, k, stride, pad, feedback=fb, feedback_seed=seed * 1000 + weighted))
                channels, size = out, (size + 2 * pad - k) // stride + 1
            elif kind == "F":
                if flat is None:
                    flat = channels * size * size if size else channels
                    if size:
                        layers.append(nn.Flatten())
                out = _width(row[1], num_classes)
                layers.append(AsymLinear(flat, out, feedback=fb, feedback_seed=seed * 1000 + weighted))
                flat = out
            else:
                k, stride = row[1:]
                if kind.endswith("pad"):
                    layers.append(PadRightBottom())
                    size += 1
                layers.append((nn.MaxPool2d if kind.startswith("max") else nn.AvgPool2d)(k, stride))
                size = (size - k) // stride + 1
                continue
            weighted += 1
            if not last:
                if spec.batchnorm:
                    layers.append(PaperBatchNorm(flat if kind == "F" else channels, affine=spec.bn_affine))
                layers.append(nn.ReLU())
    net = nn.Sequential(*layers)  # net[-1] is the output layer
    if freeze == "bottom":
        net[-1].requires_grad_(False)
    elif freeze == "top":
        for module in layers[:-1]:
            module.requires_grad_(False)
    return net


def batchnorm_layers(net: nn.Module) -> list[PaperBatchNorm]:
    return [m for m in net.modules() if isinstance(m, PaperBatchNorm)]
