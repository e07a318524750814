"""The Table 1 networks, built for a model label (``asym.labels``: the paper's table columns).

The label grammar and ``parse_model`` live in the torch-free ``asym.labels``, Table 1's rows in
``asym.archs``; both are re-exported here, where a network is built from them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .archs import ARCHS, input_shape, layer_width
from .labels import FREEZE_CHOICES, LABEL_GRAMMAR, ModelSpec, parse_model  # noqa: F401  (re-exported)
from .nn import AsymConv2d, AsymLinear



class PaperBatchNorm(nn.Module):
    """Batch normalisation with the paper's test statistics (protocol decision 4 in docs/protocol.md).

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


def build_network(arch: str, num_classes: int, model: "str | ModelSpec" = "SGD", freeze: str = "none",
                  seed: int = 0, in_features: int | None = None) -> nn.Sequential:
    """A Table 1 network for ``model``: weights initialised and feedback drawn from ``seed``.

    Every Conv/FC except the output layer is followed by [BN] and ReLU (protocol decision 4 in docs/protocol.md).
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
                out = layer_width(row[1], num_classes)
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
