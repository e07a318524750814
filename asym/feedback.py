"""Feedback strategies (paper Section 2): how a layer's feedback matrix V is made from its weight W.

A strategy is a small ``nn.Module`` owned by one asymmetric layer. Calling it with W returns V for
the current mini-batch. Random draws come from the strategy's own ``torch.Generator``, seeded at
construction; the generator state travels in ``state_dict`` (``get_extra_state``) so a run resumed on
the same device type draws exactly the same V sequence as an uninterrupted one (on another device type it
continues with a stream seeded from that state: ``Feedback.generator``).

Batchwise strategies (brSF, brSF-p) redraw on every training-mode call, i.e. once per mini-batch;
fixed ones (frSF, frSF-p, RndF) draw once, at construction. sign(0) = +1 (protocol decision 2 in docs/protocol.md).
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from .labels import FEEDBACK_MODES, RNDF_STD, FeedbackSpec  # noqa: F401  (the modes' vocabulary)


def sign(w: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, so every feedback weight is -1 or 1 times a magnitude."""
    return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)


def fan_in(weight: torch.Tensor) -> int:
    """kh·kw·C_in for a conv weight, in_features for a linear one."""
    return weight[0].numel()


class Feedback(nn.Module):
    """Base strategy: V = W (plain backprop). Subclasses override ``make``."""

    def __init__(self, weight_shape: torch.Size, seed: int = 0):
        super().__init__()
        self.weight_shape = tuple(weight_shape)
        self.seed = int(seed)
        self._gen: torch.Generator | None = None
        # a loaded generator state and the device type of the generator that wrote it, until the first draw
        self._pending_state: torch.Tensor | None = None
        self._pending_device = "cpu"

    def generator(self, device: torch.device) -> torch.Generator:
        """The generator for draws on ``device``: a loaded state goes back to a generator of the device type
        that wrote it (a CUDA state to a CUDA generator); a run resumed on another device type, whose
        generator cannot take that state, continues with a stream seeded from it (not the seed's own
        stream again, which would replay the first draws)."""
        device = torch.device(device)
        if self._gen is None or self._gen.device.type != device.type:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
            if self._pending_state is not None:
                if self._pending_device == device.type:
                    self._gen.set_state(self._pending_state)
                else:
                    self._gen.manual_seed(state_seed(self._pending_state))
                self._pending_state = None
        return self._gen

    def get_extra_state(self):
        gen = self._gen
        if gen is None or self._pending_state is not None:  # loaded, not drawn from since: pass it on as it is
            return {"seed": self.seed, "rng": self._pending_state, "rng_device": self._pending_device}
        return {"seed": self.seed, "rng": gen.get_state(), "rng_device": gen.device.type}

    def set_extra_state(self, state) -> None:
        """Keeps the state (a CPU byte tensor, as ``Generator.get_state`` returns it for any device) until the
        next draw, which knows its device: nothing is created on a device here, so a checkpoint written on a
        GPU loads on a machine without one."""
        self.seed = int(state["seed"])
        self._gen = None
        rng = state["rng"]
        self._pending_state = None if rng is None else rng.to("cpu")
        self._pending_device = state.get("rng_device", "cpu")

    def make(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.make(weight)

    def extra_repr(self) -> str:
        return f"seed={self.seed}"


class UniformSF(Feedback):
    """uSF: V = sign(W); NuSF (``normalized``): V = sign(W) / fan_in."""

    def __init__(self, weight_shape, seed=0, normalized=False):
        super().__init__(weight_shape, seed)
        self.normalized = normalized

    def make(self, weight):
        scale = weight.new_tensor(1.0 / fan_in(weight) if self.normalized else 1.0)
        return torch.where(weight >= 0, scale, -scale)  # sign(W)·scale in one pass, sign(0) = +1


class RandomMagnitudeSF(Feedback):
    """brSF / frSF and their -p variants: V = M ∘ sign(W) ∘ S_p, M ~ U[0,1], S_p = -1 w.p. p.

    Batchwise: M and S_p redrawn on every training-mode call. Fixed: drawn once, kept as buffers.
    """

    def __init__(self, weight_shape, seed=0, batchwise=False, flip=0.0):
        super().__init__(weight_shape, seed)
        self.batchwise = batchwise
        self.flip = float(flip)
        mask = self._draw(torch.device("cpu"))
        # the magnitudes times the flip signs; for batchwise modes this is the latest draw
        self.register_buffer("mask", mask)

    def _draw(self, device) -> torch.Tensor:
        gen = self.generator(device)
        m = torch.rand(self.weight_shape, generator=gen, device=device)
        if self.flip > 0:
            flips = torch.rand(self.weight_shape, generator=gen, device=device) < self.flip
            m = torch.where(flips, -m, m)
        return m

    @torch.compiler.disable  # a generator draw: runs eagerly, outside any torch.compile graph
    def _redraw(self, device) -> None:
        self.mask.copy_(self._draw(device))  # in place: compiled graphs keep seeing the same buffer

    def make(self, weight):
        if self.batchwise and self.training:
            self._redraw(weight.device)
        return self.mask.to(weight.dtype) * sign(weight)

    def extra_repr(self):
        return f"seed={self.seed}, batchwise={self.batchwise}, flip={self.flip}"


class RandomFixed(Feedback):
    """RndF: V ~ N(0, 0.05²), drawn once, independent of W."""

    def __init__(self, weight_shape, seed=0, std=RNDF_STD):
        super().__init__(weight_shape, seed)
        gen = self.generator(torch.device("cpu"))
        self.register_buffer("v", torch.randn(self.weight_shape, generator=gen) * std)

    def make(self, weight):
        return self.v.to(weight.dtype)


def state_seed(state: torch.Tensor) -> int:
    """A 63-bit seed made from a generator state's bytes (deterministic: the same state, the same seed)."""
    return int.from_bytes(hashlib.sha256(state.cpu().numpy().tobytes()).digest()[:8], "little") >> 1


def make_feedback(spec: "str | FeedbackSpec", weight_shape, seed: int = 0) -> Feedback:
    """The strategy for ``spec`` (e.g. ``"usf"``, ``"brsf-p25"``) for a weight of ``weight_shape``."""
    spec = FeedbackSpec.parse(spec)
    if spec.mode == "bp":
        return Feedback(weight_shape, seed)
    if spec.mode in ("usf", "nusf"):
        return UniformSF(weight_shape, seed, normalized=spec.mode == "nusf")
    if spec.mode in ("brsf", "frsf"):
        return RandomMagnitudeSF(weight_shape, seed, batchwise=spec.mode == "brsf", flip=spec.flip)
    return RandomFixed(weight_shape, seed)
