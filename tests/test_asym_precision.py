"""Issue 13: the asymmetric layers under mixed precision, second derivatives and torch.compile."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import asym
from asym.nn import AsymConv2d, AsymLinear

LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}
ASYM_MODES = ("usf", "nusf", "brsf", "frsf-p25", "rndf")


def linear_pair(feedback):
    torch.manual_seed(0)
    ref = nn.Linear(12, 7)
    return ref, asym.convert(ref, feedback), torch.randn(5, 12)


def conv_pair(feedback):
    torch.manual_seed(0)
    ref = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    return ref, asym.convert(ref, feedback), torch.randn(2, 3, 9, 9)


PAIRS = {"linear": linear_pair, "conv": conv_pair}


def grads_under_autocast(layer, x, dtype, gy=None):
    """(output, x.grad, weight.grad, bias.grad) of one forward/backward in ``torch.autocast('cpu', dtype)``."""
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype):
        y = layer(x)
    y.backward(torch.ones_like(y) if gy is None else gy)
    return y, x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("amp", LOW)
@pytest.mark.parametrize("kind", PAIRS)
def test_bp_under_autocast_equals_the_torch_layer(kind, amp):
    """bp mode inside autocast computes what nn.Linear / nn.Conv2d compute there (output in the low dtype,
    gradients in their tensors' float32), within the low precision's tolerance."""
    ref, ours, x = PAIRS[kind]("bp")
    gy = torch.randn_like(ref(x)).to(LOW[amp])
    want = grads_under_autocast(ref, x, LOW[amp], gy)
    got = grads_under_autocast(ours, x, LOW[amp], gy)
    assert got[0].dtype == want[0].dtype == LOW[amp]
    for g, w, t in zip(got[1:], want[1:], (x, ours.weight, ours.bias)):
        assert g.dtype == t.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got[0], want[0], rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("mode", ASYM_MODES)
@pytest.mark.parametrize("kind", PAIRS)
def test_asymmetric_modes_under_autocast_send_the_error_through_v(kind, mode):
    """Under bf16 autocast dL/dx = dL/dy·V computed by hand in bf16 (V of that very step), while dL/dW and
    dL/db equal the torch layer's: V is still the only thing that differs from backprop."""
    ref, ours, x = PAIRS[kind](mode)
    low = torch.bfloat16
    gy = torch.randn_like(ref(x)).to(low)
    _, gx, gw, gb = grads_under_autocast(ours, x, low, gy)
    ours.feedback.eval()  # eval: the batchwise modes return the draw of that step instead of a new one
    v = ours.feedback_matrix().to(low)
    ours.feedback.train()
    if kind == "linear":
        by_hand = gy @ v
    else:
        by_hand = torch.nn.grad.conv2d_input(x.shape, v, gy, stride=2, padding=1)
    torch.testing.assert_close(gx, by_hand.float(), rtol=2e-2, atol=2e-2)
    _, _, ref_gw, ref_gb = grads_under_autocast(ref, x, low, gy)
    torch.testing.assert_close(gw, ref_gw, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gb, ref_gb, rtol=2e-2, atol=2e-2)


def gradient_penalty_grads(layer, x):
    """∂/∂(x, W, b) of ‖∂L/∂x‖² with L = Σ tanh(layer(x))² — a second derivative through the layer."""
    x = x.clone().requires_grad_(True)
    loss = torch.tanh(layer(x)).pow(2).sum()
    gx, = torch.autograd.grad(loss, x, create_graph=True)
    return torch.autograd.grad(gx.pow(2).sum(), (x, layer.weight, layer.bias))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("kind", PAIRS)
def test_bp_second_derivatives_equal_autograd(kind):
    """bp mode is exact backprop also to second order: a gradient penalty's gradients w.r.t. input, weight and
    bias equal plain autograd's through nn.Linear / nn.Conv2d."""
    ref, ours, x = PAIRS[kind]("bp")
    for got, want in zip(gradient_penalty_grads(ours, x.double()), gradient_penalty_grads(ref, x.double())):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ("usf", "brsf", "frsf-p50", "rndf"))
@pytest.mark.parametrize("kind", PAIRS)
def test_second_derivatives_through_asymmetric_feedback_are_refused(kind, mode):
    """create_graph=True through V ≠ W raises one error naming the layer, never a silently wrong number;
    first-order gradients are unaffected."""
    ref, ours, x = PAIRS[kind](mode)
    name = f"{'AsymLinear(12, 7' if kind == 'linear' else 'AsymConv2d(3, 4'}, feedback={mode})"
    with pytest.raises(RuntimeError, match=rf"^{name}: second derivatives through asymmetric feedback are not defined"
                                           .replace("(", r"\(").replace(")", r"\)")):
        gradient_penalty_grads(ours, x)
    x = x.clone().requires_grad_(True)
    F.softplus(ours(x)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("mode", ("usf", "bp"))
def test_group_layers_follow_the_same_rules(mode):
    """The run-group network (asym.group) trains under autocast and refuses or computes second derivatives
    like its members."""
    from asym.group import widen
    torch.manual_seed(0)
    member = nn.Sequential(AsymConv2d(1, 3, 3, feedback=mode), nn.ReLU(), nn.Flatten(),
                           AsymLinear(3 * 6 * 6, 4, feedback=mode), nn.ReLU(), AsymLinear(4, 2, feedback=mode))
    net = widen(member, 2)
    x = torch.randn(5, 1, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    y.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in net.parameters())
    gx, = torch.autograd.grad(torch.tanh(net(x)).pow(2).sum(), x, create_graph=True)
    if mode == "bp":
        gx.pow(2).sum().backward()
    else:
        with pytest.raises(RuntimeError, match=r"^Group(Linear|Conv2d)\(n=2, Asym\w+\(\d+, \d+, feedback=usf\)\): second"):
            gx.pow(2).sum().backward()
