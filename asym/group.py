"""Run groups' network ops: N runs of one model that differ only in their lr multiplier, as ONE network.

Members of a group share model, dataset, clamp, procedure and seed, so they start from the same
weights, draw the same feedback and see the same batches (the data order comes from the seed); only
their learning rates differ. The group network is the member network N times side by side:

- the first layer (its input is shared) is one conv/FC with N×C_out outputs;
- every later conv is a grouped convolution (groups = N); FC layers are batched matmuls;
- BN over N×C channels is exactly per-member BN; ReLU and pooling act per channel;
- the asymmetric backward is the same one ``convolution_backward`` with V stacked per member;
- Batch Manhattan runs on the stacked parameters, each member's block with its own lr.

A member's NaN stays in its own channels (grouped convs and per-channel BN never mix members), so a
member diverges alone. ``asym.engine.Engine`` builds a group from these ops for N > 1.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .models import PaperBatchNorm
from .nn import (AsymConv2dFunction, AsymLinear, _AsymMixin, feedback_arg, finish_grads, save_asym_context,
                 saved_in_compute_dtype)
from .optim import BatchManhattan


class GroupLinearFunction(torch.autograd.Function):
    """N linear layers side by side on (B, N·in) → (B, N·out): batched matmuls; dL/dx through each V_i.
    Autocast and second derivatives as ``asym.nn.AsymLinearFunction`` (``feedback`` None: V = W)."""

    @staticmethod
    def forward(input, weight, bias, feedback, shared_input, name):
        n, out_f, in_f = weight.shape
        x = input.unsqueeze(0).expand(n, -1, -1) if shared_input else input.view(len(input), n, in_f).transpose(0, 1)
        y = torch.bmm(x, weight.transpose(1, 2)) if bias is None else \
            torch.baddbmm(bias.view(n, 1, out_f), x, weight.transpose(1, 2))
        return y.transpose(0, 1).reshape(len(input), n * out_f)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, feedback, shared_input, name = inputs
        save_asym_context(ctx, input, weight, bias, feedback, output, name)
        ctx.shape, ctx.has_bias, ctx.shared_input = weight.shape, bias is not None, shared_input

    @staticmethod
    def backward(ctx, grad_output):
        input, feedback = saved_in_compute_dtype(ctx)
        grad_output = grad_output.to(ctx.dtype)
        n, out_f, in_f = ctx.shape
        g = grad_output.view(len(grad_output), n, out_f).transpose(0, 1)                      # (N, B, out)
        x = input.unsqueeze(0).expand(n, -1, -1) if ctx.shared_input else input.view(len(input), n, in_f).transpose(0, 1)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.bmm(g, feedback).transpose(0, 1).reshape(input.shape)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(g.transpose(1, 2), x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = g.sum(1).reshape(-1)
        return (*finish_grads(ctx, (grad_input, grad_weight, grad_bias)), None, None, None)


class _Stacked(nn.Module):
    """N copies of one asymmetric layer's parameters, stacked along dim 0 (member k's block is k-th)."""

    def __init__(self, member: _AsymMixin, n: int, weight: torch.Tensor, shared_input: bool):
        super().__init__()
        self.n, self.member_shape, self.shared_input = n, tuple(member.weight.shape), shared_input
        self.weight = nn.Parameter(weight, requires_grad=member.weight.requires_grad)
        self.bias = None if member.bias is None else nn.Parameter(
            member.bias.detach().repeat(n), requires_grad=member.bias.requires_grad)
        self.feedback_spec, self.feedback = member.feedback_spec, copy.deepcopy(member.feedback)
        self._name = f"{type(self).__name__}(n={n}, {member._name})"

    def feedback_matrix(self) -> torch.Tensor:
        """V of every member, stacked: one draw per step (as each member alone), applied to each W_i."""
        w = self.weight.detach()
        blocks = w.reshape(self.n, *self.member_shape)
        first = self.feedback(blocks[0])  # batchwise modes draw here, in training mode
        training = self.feedback.training
        self.feedback.eval()  # the other members reuse that draw
        rest = [self.feedback(b) for b in blocks[1:]]
        self.feedback.train(training)
        return torch.stack([first, *rest]).reshape(w.shape)


class GroupConv2d(_Stacked):
    """N convolutions as one: (B, C_in) shared input → N·C_out outputs, else grouped with groups = N."""

    def __init__(self, member, n: int, shared_input: bool):
        super().__init__(member, n, member.weight.detach().repeat(n, 1, 1, 1), shared_input)
        self.stride, self.padding = list(member.stride), list(member.padding)

    def forward(self, x):
        v = feedback_arg(self)  # before apply (feedback_arg)
        return AsymConv2dFunction.apply(x, self.weight, self.bias, v, self.stride, self.padding, [1, 1],
                                        1 if self.shared_input else self.n, self._name)


class GroupLinear(_Stacked):
    """N linear layers as batched matmuls on (B, N·features) tensors."""

    def __init__(self, member, n: int, shared_input: bool):
        super().__init__(member, n, member.weight.detach().repeat(n, 1, 1), shared_input)

    def forward(self, x):
        v = feedback_arg(self)  # before apply (feedback_arg)
        return GroupLinearFunction.apply(x, self.weight, self.bias, v, self.shared_input, self._name)


def widen(member: nn.Sequential, n: int) -> nn.Sequential:
    """The group network of N copies of ``member`` (a ``build_network`` Sequential). Output: (B, N·classes).

    Activations keep the members side by side in the channel/feature dimension, each member's block
    contiguous, so nn.Flatten of (B, N·C, H, W) gives N blocks of C·H·W in the member's own order.
    """
    layers, first = [], True
    for m in member:
        if isinstance(m, _AsymMixin):
            layers.append((GroupLinear if isinstance(m, AsymLinear) else GroupConv2d)(m, n, shared_input=first))
            first = False
        elif isinstance(m, PaperBatchNorm):
            bn = PaperBatchNorm(n * m.running_mean.numel(), affine=m.weight is not None, eps=m.eps, alpha=m.alpha)
            bn.load_state_dict({k: v.repeat(n) if v.dim() else v for k, v in m.state_dict().items()})
            for p_group, p in zip(bn.parameters(), m.parameters()):
                p_group.requires_grad_(p.requires_grad)
            layers.append(bn)
        else:
            layers.append(copy.deepcopy(m))
    return nn.Sequential(*layers).to(member[0].weight.device, member[0].weight.dtype)


class GroupBatchManhattan(BatchManhattan):
    """Batch Manhattan on stacked parameters: the direction τ does not depend on lr, so each member's block
    takes ``w_i += lr_i·τ_i`` with the same kernel a member alone would use. ``lrs`` replaces the param
    groups' ``lr``; with one member it is plain ``BatchManhattan``."""

    def __init__(self, params, lrs: list[float], **kw):
        super().__init__(params, lr=0.0, **kw)
        self.lrs = list(lrs)

    def _update(self, params, step, lr):
        n = len(self.lrs)
        if n == 1:
            return super()._update(params, step, self.lrs[0])
        for i, lr_i in enumerate(self.lrs):
            torch._foreach_add_([p.view(n, -1)[i] for p in params], [s.view(n, -1)[i] for s in step], alpha=lr_i)
