"""``asym.convert`` is exact or refuses: the converted model computes the original's forward (parametrized weights
included), its input-gradient goes through V (BP's exactly for ``bp``, another for every other mode), and a layer
whose parent reads its weight without calling it is refused by name."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import asym
from asym.feedback import sign
from asym.nn import AsymConv2d, AsymLinear

pytestmark = pytest.mark.usefixtures("float64")
MODES = ["bp", "usf", "nusf", "brsf", "frsf", "rndf", "brsf-p50"]


def forward_and_input_grad(model, x, seed=0):
    """(output, dL/dx) for L = <output, g> with a fixed random g."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out * g).sum().backward()
    return out.detach(), x.grad


def assert_exact_or_asymmetric(original, x, mode, skip=()):
    """The converted copy's forward equals the original's; its input-gradient equals BP's for bp and differs for
    every other mode (V ≠ W)."""
    converted = asym.convert(original, mode, seed=3, skip=skip)
    out, grad = forward_and_input_grad(original, x)
    out2, grad2 = forward_and_input_grad(converted, x)
    torch.testing.assert_close(out2, out, rtol=1e-10, atol=1e-10)
    if mode == "bp":
        torch.testing.assert_close(grad2, grad, rtol=1e-9, atol=1e-10)
    else:
        assert not torch.allclose(grad2, grad, rtol=1e-3, atol=1e-6), mode
    return converted


def asym_layers(model):
    return [m for m in model.modules() if isinstance(m, (AsymLinear, AsymConv2d))]


class WeightNormed(nn.Module):
    """A small net with every kind of parametrized weight: weight norm (new and legacy), spectral norm, a custom
    parametrization, a plain layer."""

    def __init__(self):
        super().__init__()
        self.conv = parametrizations.weight_norm(nn.Conv2d(2, 4, 3, padding=1))
        self.conv2 = parametrizations.spectral_norm(nn.Conv2d(4, 4, 3))
        self.fc_wn = parametrizations.weight_norm(nn.Linear(4 * 4 * 4, 10))
        self.fc_old = nn.utils.weight_norm(nn.Linear(10, 8))
        self.fc_sn = parametrizations.spectral_norm(nn.Linear(8, 6))
        self.fc_sym = nn.Linear(6, 5)
        parametrize.register_parametrization(self.fc_sym, "weight", Symmetric())
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv(x)))).flatten(1)
        for layer in (self.fc_wn, self.fc_old, self.fc_sn, self.fc_sym):
            x = torch.tanh(layer(x))
        return self.out(x[:, :5])


class Symmetric(nn.Module):
    def forward(self, w):
        k = min(w.shape)
        return torch.cat([w[:, :k].triu() + w[:, :k].triu(1).T, w[:, k:]], 1) if w.shape[0] == k else w


@pytest.mark.parametrize("mode", MODES)
def test_parametrized_weights_keep_their_forward_and_the_backward_uses_v(mode):
    """Fails on main: the parametrized layers got a fresh initialisation (outputs differ by up to 1.7)."""
    torch.manual_seed(0)
    model = WeightNormed()
    x = torch.randn(5, 2, 6, 6)
    converted = assert_exact_or_asymmetric(model, x, mode)
    assert len(asym_layers(converted)) == 7
    for name in ("conv", "conv2", "fc_wn", "fc_old", "fc_sn", "fc_sym"):  # the parametrization moved over
        assert parametrize.is_parametrized(converted.get_submodule(name)), name
    assert set(converted.state_dict()) >= {"fc_old.parametrizations.weight.original0",
                                           "conv2.parametrizations.weight.0._u"}


def test_spectral_norm_in_training_mode_stays_exact_step_after_step():
    """spectral_norm runs one power iteration per forward in training mode: the converted layer computes its weight
    once per forward too, so u, v and the outputs stay equal forward after forward."""
    torch.manual_seed(1)
    layer = parametrizations.spectral_norm(nn.Linear(7, 5))
    twin = asym.convert(layer, "usf")
    for _ in range(4):
        x = torch.randn(3, 7)
        torch.testing.assert_close(twin(x), layer(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(twin.parametrizations.weight[0]._u, layer.parametrizations.weight[0]._u)


@pytest.mark.parametrize("make", [lambda: parametrizations.weight_norm(nn.Linear(6, 4)),
                                  lambda: nn.utils.weight_norm(nn.Linear(6, 4)),
                                  lambda: parametrizations.spectral_norm(nn.Linear(6, 4))],
                         ids=["weight_norm", "legacy_weight_norm", "spectral_norm"])
def test_the_math_v_is_sign_of_the_effective_weight_and_weight_grads_are_bps(make):
    """One-hot output gradients recover V row by row: it is sign(W) of the weight the forward used (the
    parametrization's output); the parameters behind it (g, v, original) get exactly BP's gradients."""
    torch.manual_seed(2)
    layer = make().eval()
    twin = asym.convert(layer, "usf").eval()
    w = layer.weight.detach()
    x = torch.randn(4, 6, requires_grad=True)
    twin(x).backward(torch.eye(4))
    torch.testing.assert_close(x.grad, sign(w))
    layer(x.detach()).backward(torch.eye(4))
    for (name, p), (_, q) in zip(sorted(layer.named_parameters()), sorted(twin.named_parameters())):
        if "weight_g" in name or "weight_v" in name:  # legacy: its g, v are original0, original1 on the twin
            continue
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_legacy_spectral_norm_is_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.utils.spectral_norm(nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"convert: '1' \(Linear\) uses the legacy torch.nn.utils.spectral_norm"):
        asym.convert(model, "usf")


def test_a_layer_with_hooks_or_its_own_forward_is_refused_by_name():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)
    with pytest.raises(ValueError, match=r"'body.0' \(Scaled\) overrides Linear.forward"):
        asym.convert(_holder(nn.Sequential(Scaled(3, 3))), "usf")
    hooked = nn.Linear(3, 3)
    hooked.register_forward_hook(lambda m, a, o: o * 2)
    with pytest.raises(ValueError, match=r"'fc' \(Linear\) has forward hooks"):
        asym.convert(_holder(hooked, "fc"), "usf")


def _holder(child, name="body"):
    m = nn.Module()
    m.add_module(name, child)
    return m


def test_multihead_attention_is_refused_by_path():
    """nn.MultiheadAttention hands out_proj.weight to F.multi_head_attention_forward without calling out_proj: on
    main it printed as converted and trained as plain BP. Refused, naming the path and the way out (skip)."""
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    with pytest.raises(ValueError, match=r"convert: 'self_attn.out_proj' \(NonDynamicallyQuantizableLinear\) is read "
                                         r"directly by its parent 'self_attn'.*skip=\(MultiheadAttention,\)"):
        asym.convert(layer, "usf")


@pytest.mark.parametrize("mode", MODES)
def test_a_transformer_encoder_layer_converts_around_its_attention(mode):
    """With the attention skipped: the feed-forward layers become asymmetric, the attention stays BP as asked, the
    forward is the original's and the input-gradient is asymmetric for every mode but bp."""
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    converted = assert_exact_or_asymmetric(layer, torch.randn(3, 5, 8), mode, skip=(nn.MultiheadAttention,))
    assert {n for n, m in converted.named_modules() if isinstance(m, AsymLinear)} == {"linear1", "linear2"}
    assert type(converted.self_attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear


def test_a_parent_that_reads_a_childs_weight_is_caught_at_the_first_forward():
    """The general case: a parent that calls F.linear(x, self.fc.weight) instead of self.fc(x). Its converted fc
    would never run its own backward; the first forward with autograd on names it."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Linear(4, 6), nn.Linear(6, 4)

        def forward(self, x):
            return F.linear(torch.tanh(self.embed(x)), self.head.weight, self.head.bias)  # head bypassed
    converted = asym.convert(Tied(), "usf")
    with torch.no_grad():
        converted(torch.randn(2, 4))  # nothing is recorded without autograd: nothing to say
    for _ in range(2):  # refused every time, not once
        with pytest.raises(RuntimeError, match=r"convert: 'head' \(AsymLinear\) is read by its parent without being "
                                                r"called"):
            converted(torch.randn(2, 4))


def test_models_that_call_their_layers_pass_the_check_once_and_then_cost_nothing():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    converted = asym.convert(model, "usf")
    for _ in range(3):
        converted(torch.randn(2, 4)).sum().backward()
    check = next(iter(converted._forward_hooks.values())).__self__
    assert check.done


@pytest.mark.parametrize("mode", MODES)
def test_resnet18_converts_exactly(mode):
    """torchvision's ResNet-18: every conv and the fc become asymmetric (21 layers), eval-mode forward equal, the
    input-gradient BP's for bp and asymmetric for the others."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(6)
    model = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    converted = assert_exact_or_asymmetric(model, torch.randn(2, 3, 32, 32), mode)
    assert len(asym_layers(converted)) == 21 and not converted.training


def test_requires_grad_and_mode_are_kept():
    model = nn.Sequential(nn.Linear(3, 3), parametrizations.weight_norm(nn.Linear(3, 2))).eval()
    model[0].weight.requires_grad_(False)
    model[1].parametrizations.weight.original0.requires_grad_(False)
    converted = asym.convert(model, "usf")
    assert not converted[0].weight.requires_grad and converted[0].bias.requires_grad
    assert not converted[1].parametrizations.weight.original0.requires_grad
    assert converted[1].parametrizations.weight.original1.requires_grad
    assert not converted.training and not converted[1].training
