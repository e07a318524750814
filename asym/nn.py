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


def feedback_arg(layer, weight: "torch.Tensor | None" = None) -> "torch.Tensor | None":
    """What an asymmetric Function takes for ``layer`` (an AsymLinear/AsymConv2d or a run-group layer): its V for
    this step, or None for bp (the backward then uses W itself, so second derivatives are exact). ``weight``: W
    as this forward computed it (a parametrized weight is computed once per forward); default ``layer.weight``.
    Call it before ``Function.apply``: a batchwise draw then breaks a compiled graph with nothing on the stack
    (drawn inside the call, it recompiles every step)."""
    if layer.feedback_spec.mode == "bp":
        return None
    return layer.feedback_matrix() if weight is None else layer.feedback_matrix(weight)


def _pair(v) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


class _AsymMixin:
    """Shared by the layers: owns the feedback strategy made from ``feedback`` and ``feedback_seed``."""

    def _init_feedback(self, feedback, feedback_seed):
        self.feedback_spec = FeedbackSpec.parse(feedback)
        if feedback_seed is None:  # follows torch.manual_seed, like the weight init
            feedback_seed = int(torch.randint(0, 2**62, (1,)).item())
        self.feedback: Feedback = make_feedback(self.feedback_spec, self.weight.shape, feedback_seed)

    def feedback_matrix(self, weight: "torch.Tensor | None" = None) -> torch.Tensor:
        """V for the current step from W (``weight``, default ``self.weight``): draws a new one for batchwise modes in
        training mode; W itself for bp."""
        return self.feedback((self.weight if weight is None else weight).detach())


class AsymLinear(_AsymMixin, nn.Linear):
    """``nn.Linear`` whose backward sends the error through V = feedback(W) instead of W."""

    def __init__(self, in_features, out_features, bias=True, feedback="usf", feedback_seed=None,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_feedback(feedback, feedback_seed)
        self._name = f"AsymLinear({in_features}, {out_features}, feedback={self.feedback_spec.name})"

    def forward(self, input):
        weight = self.weight  # once: a parametrized weight (weight_norm, spectral_norm…) is computed on each access
        v = feedback_arg(self, weight)  # before apply (feedback_arg)
        return AsymLinearFunction.apply(input, weight, self.bias, v, self._name)

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
        weight = self.weight  # once: a parametrized weight (weight_norm, spectral_norm…) is computed on each access
        v = feedback_arg(self, weight)  # before apply (feedback_arg)
        return AsymConv2dFunction.apply(input, weight, self.bias, v,
                                        _pair(self.stride), _pair(self.padding), _pair(self.dilation),
                                        self.groups, self._name)

    def extra_repr(self):
        return super().extra_repr() + f", feedback={self.feedback_spec.name}"


# Parents known to read a child layer's weight without calling the child: converting that child would change
# nothing (nn.MultiheadAttention hands out_proj.weight to F.multi_head_attention_forward). ``convert`` refuses them;
# ``_BypassCheck`` catches the parents it does not know at the converted model's first forward.
BYPASSING_PARENTS: dict[type, tuple[str, ...]] = {nn.MultiheadAttention: ("out_proj",)}


def _refusal(path: str, layer: nn.Module, why: str) -> ValueError:
    return ValueError(f"convert: '{path or '<root>'}' ({type(layer).__name__}) {why}")


def _migrate_legacy_weight_norm(layer: nn.Module, path: str) -> None:
    """Turn the legacy hook-based ``nn.utils.weight_norm`` of ``layer`` into ``nn.utils.parametrizations.weight_norm``
    with the same g and v (both compute ``torch._weight_norm(v, g, dim)``: the same weight, bit for bit), so it
    moves to the asymmetric layer like any parametrization. Refuses the legacy ``nn.utils.spectral_norm``, whose
    power iteration (v before u) the parametrization (u before v) does not reproduce in training mode, and any
    other hook, which the new layer would not run."""
    from torch.nn.utils import parametrizations, remove_weight_norm
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm
    # the legacy forms are forward pre-hooks with no public accessor: Module._forward_pre_hooks is where they live
    for hook in list(layer._forward_pre_hooks.values()):
        if isinstance(hook, WeightNorm):
            g, v = getattr(layer, f"{hook.name}_g"), getattr(layer, f"{hook.name}_v")
            remove_weight_norm(layer, hook.name)
            parametrizations.weight_norm(layer, hook.name, hook.dim)
            plist = getattr(layer.parametrizations, hook.name)
            with torch.no_grad():
                plist.original0.copy_(g)
                plist.original1.copy_(v)
            plist.original0.requires_grad_(g.requires_grad)
            plist.original1.requires_grad_(v.requires_grad)
        elif isinstance(hook, SpectralNorm):
            raise _refusal(path, layer, "uses the legacy torch.nn.utils.spectral_norm hook, whose power iteration "
                           "the new layer cannot reproduce; register torch.nn.utils.parametrizations.spectral_norm "
                           "instead (convert keeps parametrizations)")
    hooks = {"forward pre-hooks": layer._forward_pre_hooks, "forward hooks": layer._forward_hooks,
             "backward hooks": layer._backward_hooks, "backward pre-hooks": layer._backward_pre_hooks}
    found = [kind for kind, registered in hooks.items() if registered]
    if found:
        raise _refusal(path, layer, f"has {' and '.join(found)}, which the new layer would not run; "
                       "register them on the converted model")


def _asym_twin(layer: nn.Module, feedback, seed, path: str = "") -> nn.Module:
    """The asymmetric layer computing ``layer``'s forward: the same weights, bias, parametrizations (moved over
    with their state), ``requires_grad`` flags and train/eval mode. ValueError naming ``path`` if it cannot."""
    from torch.nn.utils import parametrize
    kind = nn.Linear if isinstance(layer, nn.Linear) else nn.Conv2d
    if parametrize.type_before_parametrizations(layer).forward is not kind.forward:
        raise _refusal(path, layer, f"overrides {kind.__name__}.forward, which an asymmetric layer would not compute")
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in layer.parameters()):
        raise _refusal(path, layer, "is not initialised yet (a lazy layer): run one forward before convert")
    if kind is nn.Conv2d and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
        raise _refusal(path, layer, f"uses padding {layer.padding!r} with padding_mode={layer.padding_mode!r}; only "
                       "numeric zero padding is supported")
    _migrate_legacy_weight_norm(layer, path)
    state = layer.state_dict()  # not layer.weight: computing a parametrized weight can change its state (spectral_norm)
    like = next(t for k, t in state.items() if k in ("weight", "parametrizations.weight.original",
                                                     "parametrizations.weight.original0"))
    kw = dict(feedback=feedback, feedback_seed=seed, device=like.device, dtype=like.dtype)
    if kind is nn.Linear:
        twin = AsymLinear(layer.in_features, layer.out_features, layer.bias is not None, **kw)
    else:
        twin = AsymConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, layer.dilation, layer.groups, layer.bias is not None, **kw)
    if parametrize.is_parametrized(layer):  # kept, in order; their state (original*, _u, _v…) comes with the load
        for name, plist in layer.parametrizations.items():
            for p in plist:
                parametrize.register_parametrization(twin, name, copy.deepcopy(p), unsafe=True)
    try:  # every key of the layer's state must land; the twin may only add its feedback's
        missing, unexpected = twin.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape that does not fit
        why = str(e).strip().splitlines()[-1]
        raise _refusal(path, layer, f"has state an asymmetric layer cannot hold ({why})") from None
    if unexpected or any(not k.startswith("feedback.") for k in missing):
        raise _refusal(path, layer, "has state an asymmetric layer cannot hold ("
                       + ", ".join(unexpected or [k for k in missing if not k.startswith("feedback.")]) + ")")
    for name, p in layer.named_parameters():
        twin.get_parameter(name).requires_grad_(p.requires_grad)
    return twin.train(layer.training)


class _BypassCheck:
    """Forward hooks ``convert`` puts on the model it returns: at its first forward with autograd recording, a
    converted layer whose forward did not run but whose parameters the output depends on was read by a parent
    that bypasses its forward (as nn.MultiheadAttention does with ``out_proj``): its backward would be plain BP.
    Raises RuntimeError naming it (at every forward). After a forward that passes, the hooks do nothing."""

    def __init__(self, layers: dict[str, nn.Module]):
        self.layers, self.ran, self.done = layers, set(), False

    def before(self, module, args) -> None:
        self.ran.clear()

    def after(self, module, args, output) -> None:
        if self.done or not torch.is_grad_enabled():
            return
        params = {id(p): name for name, layer in self.layers.items() if name not in self.ran
                  for p in layer.parameters()}
        bypassed = sorted({params[i] for i in _leaves_of(output) if i in params})
        self.done = not bypassed  # a bypassed layer is refused at every forward, not once
        for name in bypassed:
            raise RuntimeError(f"convert: '{name}' ({type(self.layers[name]).__name__}) is read by its parent without "
                               "being called (the parent uses its weight directly), so its backward is plain BP; "
                               "leave that parent out with convert(..., skip=(ParentType,))")


class _Ran:
    """Forward pre-hook of a converted layer: notes that its forward ran (``_BypassCheck``)."""

    def __init__(self, check: _BypassCheck, name: str):
        self.check, self.name = check, name

    def __call__(self, module, args) -> None:
        if not self.check.done:
            self.check.ran.add(self.name)


def _leaves_of(output) -> set[int]:
    """ids of the leaf tensors (parameters) the autograd graph of ``output``'s tensors reaches."""
    tensors, stack = [], [output]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            tensors.append(x)
        elif isinstance(x, (tuple, list)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
    seen, found, nodes = set(), set(), [t.grad_fn for t in tensors if t.grad_fn is not None]
    while nodes:
        fn = nodes.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if (variable := getattr(fn, "variable", None)) is not None:  # AccumulateGrad: a leaf
            found.add(id(variable))
        nodes.extend(f for f, _ in fn.next_functions)
    return found


def convert(module: nn.Module, feedback: "str | FeedbackSpec", seed: int = 0, skip: tuple[type, ...] = ()) -> nn.Module:
    """A copy of ``module`` with every nn.Linear / nn.Conv2d replaced by its asymmetric twin (AsymLinear /
    AsymConv2d): the same forward, the input-gradient through V (protocol decision 1).

    Kept on the new layer: weights and bias, ``requires_grad``, train/eval mode, and every
    ``torch.nn.utils.parametrize`` registration (``parametrizations.weight_norm``, ``spectral_norm``,
    ``orthogonal``, your own) with its state — the layer trains the same parameters, and V is drawn from the
    effective weight each forward computes. The legacy ``nn.utils.weight_norm`` becomes the equivalent
    ``parametrizations.weight_norm`` (same g and v; its state-dict keys become ``parametrizations.weight.original0/1``).
    Layer i (in ``named_modules`` order) gets feedback seed ``seed + i``. Modules of a type in ``skip`` are left as
    they are, with everything inside them.

    Raises ValueError (one line naming the layer's path and why) for a layer it cannot convert exactly: a subclass
    with its own forward, a lazy layer, non-zero or string padding, the legacy ``nn.utils.spectral_norm`` hook,
    other hooks, state the new layer cannot hold; or whose parent reads its weight without calling it
    (``BYPASSING_PARENTS``: nn.MultiheadAttention's ``out_proj``). A parent not known to do so is caught at the
    converted model's first forward with autograd on (RuntimeError naming the layer).
    """
    feedback = FeedbackSpec.parse(feedback)
    # the legacy nn.utils.weight_norm leaves the last forward's weight (not a leaf) as a plain attribute, which
    # deepcopy refuses (pytorch/pytorch#103001): the copy gets it detached (the next forward recomputes it anyway)
    stale = {id(t): t.detach() for m in module.modules() for t in vars(m).values()
             if isinstance(t, torch.Tensor) and not t.is_leaf}
    module = copy.deepcopy(module, stale)
    if isinstance(module, (nn.Linear, nn.Conv2d)) and not isinstance(module, _AsymMixin):
        return _asym_twin(module, feedback, seed)
    skipped = [name for name, m in module.named_modules() if skip and isinstance(m, skip)]
    inside = lambda name: any(name == s or name.startswith(f"{s}.") for s in skipped)
    targets = [(name, m) for name, m in module.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)) and not isinstance(m, _AsymMixin) and not inside(name)]
    for name, m in module.named_modules():
        for child in next((c for t, c in BYPASSING_PARENTS.items() if isinstance(m, t)), ()):
            path = f"{name}.{child}" if name else child
            if not inside(name) and any(t == path for t, _ in targets):
                raise _refusal(path, m.get_submodule(child), f"is read directly by its parent '{name or '<root>'}' "
                               f"({type(m).__name__} uses {child}.weight without calling {child}), so its backward "
                               f"would stay plain BP; leave it out with convert(..., skip=({type(m).__name__},))")
    twins = {}
    for i, (name, layer) in enumerate(targets):
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        twins[name] = _asym_twin(layer, feedback, seed + i, name)
        setattr(parent, child, twins[name])
    if twins:
        check = _BypassCheck(twins)
        module.register_forward_pre_hook(check.before)
        module.register_forward_hook(check.after)
        for name, twin in twins.items():
            twin.register_forward_pre_hook(_Ran(check, name))
    return module
