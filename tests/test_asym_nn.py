"""The backward really uses V: recover V from the input-gradient and check it per feedback mode."""
import math

import pytest
import torch
from torch import nn

import asym
import asym.optim
from asym.feedback import sign
from asym.nn import AsymConv2d, AsymLinear

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("float64")]


def recovered_v(layer: AsymLinear) -> torch.Tensor:
    """One-hot output gradients: row j of dL/dx is row j of V."""
    x = torch.randn(layer.out_features, layer.in_features, requires_grad=True)
    layer(x).backward(torch.eye(layer.out_features))
    return x.grad


def conv_input_grad(layer: AsymConv2d, x: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    layer(x).backward(gy)
    return x.grad


def test_bp_linear_matches_autograd_exactly():
    torch.manual_seed(0)
    ref = nn.Linear(7, 5)
    ours = asym.convert(ref, "bp")
    x = torch.randn(3, 4, 7, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    gy = torch.randn(3, 4, 5)
    ref(x).backward(gy)
    ours(x2).backward(gy)
    assert torch.equal(ours.weight, ref.weight)
    torch.testing.assert_close(x2.grad, x.grad, rtol=0, atol=1e-14)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=0, atol=1e-14)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=0, atol=1e-14)


@pytest.mark.parametrize("stride,padding,groups", [(1, 0, 1), (2, 2, 1), (1, 1, 2)])
def test_bp_conv_matches_autograd_exactly(stride, padding, groups):
    torch.manual_seed(0)
    ref = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, groups=groups)
    ours = asym.convert(ref, "bp")
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    gy = torch.randn_like(ref(x))
    ref(x).backward(gy)
    ours(x2).backward(gy)
    torch.testing.assert_close(x2.grad, x.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=0, atol=1e-12)


def test_weight_gradient_does_not_depend_on_feedback():
    torch.manual_seed(1)
    ref = nn.Conv2d(3, 5, 3)
    x, gy = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 6, 6)
    ref(x).backward(gy)
    for mode in ("usf", "rndf", "brsf-p50"):
        ours = asym.convert(ref, mode)
        ours.zero_grad()
        ours(x.clone().requires_grad_(True)).backward(gy)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad)


def test_usf_and_nusf_linear():
    torch.manual_seed(2)
    layer = AsymLinear(6, 4, feedback="usf")
    with torch.no_grad():
        layer.weight[0, 0] = 0.0  # sign(0) = +1
    v = recovered_v(layer)
    assert torch.equal(v, sign(layer.weight))
    assert v[0, 0] == 1 and set(v.unique().tolist()) <= {-1.0, 1.0}
    assert not torch.allclose(v, layer.weight)
    nlayer = AsymLinear(6, 4, feedback="nusf")
    torch.testing.assert_close(recovered_v(nlayer), sign(nlayer.weight) / 6)


@pytest.mark.parametrize("mode", ["usf", "nusf", "frsf", "rndf", "frsf-p50"])
def test_conv_input_gradient_equals_conv2d_input_with_v(mode):
    torch.manual_seed(3)
    layer = AsymConv2d(3, 4, 3, stride=2, padding=1, feedback=mode)
    x = torch.randn(2, 3, 9, 9)
    gy = torch.randn(2, 4, 5, 5)
    got = conv_input_grad(layer, x, gy)
    v = layer.feedback_matrix()
    fan = 3 * 3 * 3
    expected_v = {"usf": sign(layer.weight), "nusf": sign(layer.weight) / fan}.get(mode, v)
    torch.testing.assert_close(v, expected_v)
    want = torch.nn.grad.conv2d_input(x.shape, v, gy, stride=2, padding=1)
    torch.testing.assert_close(got, want)
    bp = torch.nn.grad.conv2d_input(x.shape, layer.weight.detach(), gy, stride=2, padding=1)
    assert not torch.allclose(got, bp)


def test_brsf_sign_concordant_redrawn_per_training_batch_not_in_eval():
    torch.manual_seed(4)
    layer = AsymLinear(30, 20, feedback="brsf")
    v1, v2 = recovered_v(layer), recovered_v(layer)
    s = sign(layer.weight)
    for v in (v1, v2):
        assert torch.all(v * s >= 0) and v.abs().max() <= 1
    assert not torch.equal(v1, v2)
    layer.eval()
    e1, e2 = recovered_v(layer), recovered_v(layer)
    assert torch.equal(e1, e2) and torch.equal(e1, v2)


def test_brsf_conv_uses_the_batch_draw():
    torch.manual_seed(5)
    layer = AsymConv2d(2, 3, 3, feedback="brsf")
    x, gy = torch.randn(1, 2, 6, 6), torch.randn(1, 3, 4, 4)
    g = conv_input_grad(layer, x, gy)
    v = layer.feedback.mask * sign(layer.weight)  # the draw made by that forward
    torch.testing.assert_close(g, torch.nn.grad.conv2d_input(x.shape, v.detach(), gy))


def test_frsf_constant_across_batches():
    torch.manual_seed(6)
    layer = AsymLinear(30, 20, feedback="frsf")
    v1, v2 = recovered_v(layer), recovered_v(layer)
    assert torch.equal(v1, v2)
    assert torch.all(v1 * sign(layer.weight) >= 0) and v1.abs().max() <= 1
    # magnitudes are fixed, signs follow W as W changes
    with torch.no_grad():
        layer.weight.neg_()
    torch.testing.assert_close(recovered_v(layer), -v1)


def binomial_bounds(n, p, z=5.0):
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


@pytest.mark.parametrize("mode,p", [("brsf-p25", 0.25), ("brsf-p50", 0.5), ("frsf-p75", 0.75),
                                    ("frsf-p100", 1.0), ("brsf-p0", 0.0)])
def test_p_variants_flip_a_binomial_fraction_of_signs(mode, p):
    torch.manual_seed(7)
    layer = AsymLinear(100, 80, feedback=mode)
    v = recovered_v(layer)
    flipped = int((v * sign(layer.weight) < 0).sum())
    lo, hi = binomial_bounds(v.numel(), p)
    assert lo <= flipped <= hi, (flipped, lo, hi)
    assert v.abs().max() <= 1
    if mode.startswith("brsf") and p:
        v2 = recovered_v(layer)
        assert not torch.equal((v * sign(layer.weight) < 0), (v2 * sign(layer.weight) < 0))
    if mode.startswith("frsf"):
        assert torch.equal(v, recovered_v(layer))


def test_rndf_fixed_gaussian_independent_of_w():
    torch.manual_seed(8)
    layer = AsymLinear(200, 150, feedback="rndf")
    v = recovered_v(layer)
    assert abs(v.std().item() - 0.05) < 0.002 and abs(v.mean().item()) < 0.002
    assert torch.equal(v, recovered_v(layer))
    agree = (sign(v) == sign(layer.weight)).double().mean().item()
    assert 0.47 < agree < 0.53
    with torch.no_grad():
        layer.weight.neg_()
    assert torch.equal(recovered_v(layer), v)


def test_state_dict_round_trip_keeps_feedback_generator():
    torch.manual_seed(9)
    a = AsymLinear(10, 8, feedback="brsf-p25")
    recovered_v(a)
    b = AsymLinear(10, 8, feedback="brsf-p25", feedback_seed=123)
    b.load_state_dict(a.state_dict())
    seq_a = [recovered_v(a) for _ in range(3)]
    seq_b = [recovered_v(b) for _ in range(3)]
    for va, vb in zip(seq_a, seq_b):
        assert torch.equal(va, vb)
    assert not torch.equal(seq_a[0], seq_a[1])


def test_fixed_feedback_reloads_into_fresh_layer():
    a = AsymConv2d(2, 3, 3, feedback="rndf", feedback_seed=1)
    b = AsymConv2d(2, 3, 3, feedback="rndf", feedback_seed=2)
    assert not torch.equal(a.feedback.v, b.feedback.v)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.feedback_matrix(), b.feedback_matrix())


def test_first_layer_skips_input_gradient():
    layer = AsymConv2d(1, 2, 3, feedback="usf")
    x = torch.randn(1, 1, 5, 5)  # no requires_grad
    layer(x).sum().backward()
    assert layer.weight.grad is not None and x.grad is None


def test_bad_feedback_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="brsf-p<P>"):
        AsymLinear(2, 2, feedback="sign")
    with pytest.raises(ValueError, match="only brsf and frsf"):
        AsymLinear(2, 2, feedback="usf-p50")


def test_convert_resnet18_trains_one_step():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(10)
    net = torchvision.models.resnet18(num_classes=5).float()
    asym_net = asym.convert(net, "brsf")
    n_linear = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())
    n_asym = sum(isinstance(m, (AsymConv2d, AsymLinear)) for m in asym_net.modules())
    assert n_asym == n_linear == 21
    assert torch.equal(asym_net.conv1.weight, net.conv1.weight)
    opt = asym.optim.BatchManhattan(asym_net.parameters(), lr=1e-3)
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float32), torch.tensor([0, 1, 2, 3])
    before = asym_net.fc.weight.detach().clone()
    loss = nn.functional.cross_entropy(asym_net(x), y)
    loss.backward()
    opt.step()
    assert not torch.equal(before, asym_net.fc.weight)
    assert torch.isfinite(loss)


def test_function_works_under_torch_func_grad():
    layer = AsymLinear(4, 3, feedback="usf")
    x = torch.randn(2, 4)
    g = torch.func.grad(lambda inp: layer(inp).sum())(x)
    torch.testing.assert_close(g, torch.ones(2, 3) @ sign(layer.weight.detach()))
