"""Asymmetric backpropagation layers: the forward uses W, the input-gradient uses the feedback V.

One autograd Function per layer type. Weight and bias gradients are exactly backprop's (they do not
depend on W), so only the signal sent to the layer below changes (protocol decision 1 in docs/protocol.md). The conv
backward is ONE ``aten.convolution_backward`` call with V in the weight slot, so it costs what plain BP costs.

Inside ``torch.autocast`` the forward runs in the low precision as ``nn.Linear``/``nn.Conv2d`` do; the
backward computes in that same dtype (the saved input and V cast to it, as autocast cast them in the
forward) and returns each gradient in its tensor's dtype. Second derivatives (``create_graph=True``) are
exact in ``bp`` mode (the backward is then differentiable plain autograd through W) and refused with a
RuntimeError in every other mode: the derivative of a backward that uses V ≠ W is not defined.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .feedback import Feedback, FeedbackSpec, make_feedback


def save_asym_context(ctx, input, weight, bias, feedback, output, name: str) -> None:
    """What every asymmetric backward needs: the input, W, V (None: V = W, i.e. bp), the dtype the forward
    computed in (autocast's), the gradients' dtypes, and the layer's name for errors."""
    ctx.save_for_backward(input, weight, feedback)
    ctx.bp, ctx.dtype, ctx.name = feedback is None, output.dtype, name
    ctx.dtypes = (input.dtype, weight.dtype, None if bias is None else bias.dtype)


def saved_in_compute_dtype(ctx) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, V) cast to the dtype the forward computed in, as autocast cast them there (no-ops outside it)."""
    input, weight, feedback = ctx.saved_tensors
    return input.to(ctx.dtype), (weight if feedback is None else feedback).to(ctx.dtype)


class _NoSecondDerivative(torch.autograd.Function):
    """Identity on a gradient; differentiating through it raises, naming the layer (``once_differentiable``
    with the layer's name in the message)."""

    @staticmethod
    def forward(grad, weight, name):
        return grad.view_as(grad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.name = inputs[2]

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(f"{ctx.name}: second derivatives through asymmetric feedback are not defined "
                           "(create_graph=True); use feedback=bp for exact second derivatives")


def finish_grads(ctx, grads: tuple) -> tuple:
    """The gradients in their tensors' dtypes; with grad mode on (``create_graph=True``, ``torch.func``) and
    V ≠ W, each made to raise if it is differentiated again (bp's backward is plain differentiable autograd,
    so its second derivatives are exact). W joins as an input so the refusal is reached also when the
    gradient depends on nothing else."""
    out = tuple(None if g is None else g.to(dt) for g, dt in zip(grads, ctx.dtypes))
    if torch.is_grad_enabled() and not ctx.bp:
        weight = ctx.saved_tensors[1]
        out = tuple(None if g is None else _NoSecondDerivative.apply(g, weight, ctx.name) for g in out)
    return out


class AsymLinearFunction(torch.autograd.Function):
    """y = x Wᵀ + b; dL/dx = dL/dy · V; dL/dW, dL/db as in backprop. ``feedback`` None means V = W (bp)."""

    @staticmethod
    def forward(input, weight, bias, feedback, name):
        return F.linear(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, feedback, name = inputs
        save_asym_context(ctx, input, weight, bias, feedback, output, name)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_output):
        input, feedback = saved_in_compute_dtype(ctx)
        grad_output = grad_output.to(ctx.dtype)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = grad_output @ feedback
        if ctx.needs_input_grad[1]:
            grad_weight = grad_output.reshape(-1, grad_output.shape[-1]).T @ input.reshape(-1, input.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output.reshape(-1, grad_output.shape[-1]).sum(0)
        return (*finish_grads(ctx, (grad_input, grad_weight, grad_bias)), None, None)


class AsymConv2dFunction(torch.autograd.Function):
    """conv2d forward with W; one convolution_backward with V in the weight slot (None: V = W, bp)."""

    @staticmethod
    def forward(input, weight, bias, feedback, stride, padding, dilation, groups, name):
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, feedback, stride, padding, dilation, groups, name = inputs
        save_asym_context(ctx, input, weight, bias, feedback, output, name)
        ctx.conv_args = (stride, padding, dilation, groups)
        ctx.bias_sizes = [weight.shape[0]] if bias is not None else None

    @staticmethod
    def backward(ctx, grad_output):
        input, feedback = saved_in_compute_dtype(ctx)
        stride, padding, dilation, groups = ctx.conv_args
        need_bias = ctx.bias_sizes is not None and ctx.needs_input_grad[2]
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], need_bias]
        grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_output.to(ctx.dtype), input, feedback, ctx.bias_sizes if need_bias else None,
            stride, padding, dilation, False, [0, 0], groups, mask)
        grads = finish_grads(ctx, (grad_input, grad_weight, grad_bias if need_bias else None))
        return (*grads, None, None, None, None, None, None)


def feedback_arg(layer) -> "torch.Tensor | None":
    """What an asymmetric Function takes for ``layer`` (an AsymLinear/AsymConv2d or a run-group layer): its V for
    this step, or None for bp (the backward then uses W itself, so second derivatives are exact). Call it
    before ``Function.apply``: a batchwise draw then breaks a compiled graph with nothing on the stack (drawn
    inside the call, it recompiles every step)."""
    return None if layer.feedback_spec.mode == "bp" else layer.feedback_matrix()


def _pair(v) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


class _AsymMixin:
    """Shared by the layers: owns the feedback strategy made from ``feedback`` and ``feedback_seed``."""

    def _init_feedback(self, feedback, feedback_seed):
        self.feedback_spec = FeedbackSpec.parse(feedback)
        if feedback_seed is None:  # follows torch.manual_seed, like the weight init
            feedback_seed = int(torch.randint(0, 2**62, (1,)).item())
        self.feedback: Feedback = make_feedback(self.feedback_spec, self.weight.shape, feedback_seed)

    def feedback_matrix(self) -> torch.Tensor:
        """V for the current step (draws a new one for batchwise modes in training mode; W itself for bp)."""
        return self.feedback(self.weight.detach())



class AsymLinear(_AsymMixin, nn.Linear):
    """``nn.Linear`` whose backward sends the error through V = feedback(W) instead of W."""

    def __init__(self, in_features, out_features, bias=True, feedback="usf", feedback_seed=None,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_feedback(feedback, feedback_seed)
        self._name = f"AsymLinear({in_features}, {out_features}, feedback={self.feedback_spec.name})"

    def forward(self, input):
        v = feedback_arg(self)  # before apply (feedback_arg)
        return AsymLinearFunction.apply(input, self.weight, self.bias, v, self._name)

    def extra_repr(self):
        return super().extra_repr() + f", feedback={self.feedback_spec.name}"


class AsymConv2d(_AsymMixin, nn.Conv2d):
    """``nn.Conv2d`` (zero padding) whose backward sends the error through V = feedback(W)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, feedback="usf", feedback_seed=None, device=None, dtype=None):
        if isinstance(padding, str):
            raise ValueError("AsymConv2d takes numeric padding, not 'same'/'valid'")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         device=device, dtype=dtype)
        self._init_feedback(feedback, feedback_seed)
        self._name = f"AsymConv2d({in_channels}, {out_channels}, feedback={self.feedback_spec.name})"

    def forward(self, input):
        v = feedback_arg(self)  # before apply (feedback_arg)
        return AsymConv2dFunction.apply(input, self.weight, self.bias, v,
                                        _pair(self.stride), _pair(self.padding), _pair(self.dilation),
                                        self.groups, self._name)

    def extra_repr(self):
        return super().extra_repr() + f", feedback={self.feedback_spec.name}"


def _asym_twin(layer: nn.Module, feedback, seed) -> nn.Module:
    kw = dict(feedback=feedback, feedback_seed=seed, device=layer.weight.device, dtype=layer.weight.dtype)
    if isinstance(layer, nn.Linear):
        twin = AsymLinear(layer.in_features, layer.out_features, layer.bias is not None, **kw)
    else:
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(f"convert: {layer} uses padding {layer.padding!r}/{layer.padding_mode!r}; "
                             "only numeric zero padding is supported")
        twin = AsymConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, layer.dilation, layer.groups, layer.bias is not None, **kw)
    twin.load_state_dict(layer.state_dict(), strict=False)
    twin.weight.requires_grad_(layer.weight.requires_grad)
    if layer.bias is not None:
        twin.bias.requires_grad_(layer.bias.requires_grad)
    return twin


def convert(module: nn.Module, feedback: "str | FeedbackSpec", seed: int = 0) -> nn.Module:
    """A copy of ``module`` with every nn.Linear / nn.Conv2d replaced by its asymmetric twin.

    Weights are kept. Layer i (in ``named_modules`` order) gets feedback seed ``seed + i``.
    """
    feedback = FeedbackSpec.parse(feedback)
    module = copy.deepcopy(module)
    if isinstance(module, (nn.Linear, nn.Conv2d)) and not isinstance(module, _AsymMixin):
        return _asym_twin(module, feedback, seed)
    targets = [(name, m) for name, m in module.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)) and not isinstance(m, _AsymMixin)]
    for i, (name, layer) in enumerate(targets):
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, _asym_twin(layer, feedback, seed + i))
    return module
