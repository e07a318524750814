"""Batch Manhattan (paper Section 3; protocol decision 5 in docs/protocol.md): w ← w + η·τ.

  setting 0 (SGD): τ = −g + m·τ − d·w
  setting 1 (BM):  τ = −sign(g) + m·τ − d·w
  setting 2:       τ = sign(−sign(g) + m·τ_prev − d·w)
  setting 3:       κ = −sign(g) + m·κ − d·w,  τ = sign(κ)

g is the gradient of the batch-mean loss. Here sign(0) = 0 (MATLAB's sign, as in the paper's
MatConvNet): a parameter with an exactly zero gradient gets no direction from it.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer

from .protocol import MOMENTUM, WEIGHT_DECAY


class BatchManhattan(Optimizer):
    """The paper's update family; ``setting=0`` is SGD with momentum and weight decay."""

    def __init__(self, params, lr: float, momentum: float = MOMENTUM, weight_decay: float = WEIGHT_DECAY,
                 setting: int = 1):
        if setting not in (0, 1, 2, 3):
            raise ValueError(f"BatchManhattan setting must be 0, 1, 2 or 3, got {setting!r}")
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr, momentum and weight_decay must be non-negative")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, setting=setting))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            # the buffer is τ for settings 0–2 and κ for setting 3; zeros before the first step
            bufs = []
            for p in params:
                state = self.state[p]
                if "buffer" not in state:
                    state["buffer"] = torch.zeros_like(p)
                bufs.append(state["buffer"])
            setting, m, d = group["setting"], group["momentum"], group["weight_decay"]
            direction = grads if setting == 0 else torch._foreach_sign(grads)
            torch._foreach_mul_(bufs, m)
            torch._foreach_sub_(bufs, direction)
            if d:
                torch._foreach_add_(bufs, params, alpha=-d)
            if setting == 2:
                torch._foreach_sign_(bufs)
            step = torch._foreach_sign(bufs) if setting == 3 else bufs
            self._update(params, step, group["lr"])
        return loss

    def _update(self, params: list[torch.Tensor], step: list[torch.Tensor], lr: float) -> None:
        """w ← w + η·τ (a run group overrides this: one η per member)."""
        torch._foreach_add_(params, step, alpha=lr)
