"""Batch Manhattan against hand-computed steps; labels; Table 1 networks; BN procedure; freezing."""
import pytest
import torch

from asym.models import ModelSpec, PaperBatchNorm, batchnorm_layers, build_network, input_shape, parse_model
from asym.optim import BatchManhattan

LR, M, D = 0.1, 0.9, 0.5
GRADS = [[0.3, -2.0, 0.0], [-0.5, 4.0, 1.0], [0.2, 0.1, -3.0]]


def hand_steps(setting):
    """Three steps of protocol decision 5 (docs/protocol.md) written out element by element in plain Python floats."""
    w, buf, out = [1.0, -1.0, 0.25], [0.0, 0.0, 0.0], []
    sgn = lambda v: (v > 0) - (v < 0)
    for g in GRADS:
        for i in range(3):
            d = -g[i] if setting == 0 else -sgn(g[i])
            buf[i] = d + M * buf[i] - D * w[i]
            if setting == 2:
                buf[i] = sgn(buf[i])
            w[i] = w[i] + LR * (sgn(buf[i]) if setting == 3 else buf[i])
        out.append(list(w))
    return out


@pytest.mark.parametrize("setting", [0, 1, 2, 3])
def test_batch_manhattan_matches_hand_computed_steps(setting):
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.25], dtype=torch.float64))
    opt = BatchManhattan([p], lr=LR, momentum=M, weight_decay=D, setting=setting)
    for g, want in zip(GRADS, hand_steps(setting)):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert p.tolist() == pytest.approx(want, abs=1e-12)


def test_hand_steps_differ_between_settings():
    results = [hand_steps(s)[-1] for s in range(4)]
    assert len({tuple(round(x, 9) for x in r) for r in results}) == 4


def test_setting0_equals_torch_sgd_without_dampening_after_first_step():
    # torch.SGD: buf = m·buf + (g + d·w), w -= lr·buf — the same recursion as setting 0 with τ = −buf
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    oa = BatchManhattan([a], lr=0.01, setting=0)
    ob = torch.optim.SGD([b], lr=0.01, momentum=0.9, weight_decay=5e-4)
    for _ in range(4):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        oa.step(); ob.step()
    torch.testing.assert_close(a, b)


def test_batch_manhattan_state_dict_round_trip():
    p = torch.nn.Parameter(torch.ones(3))
    opt = BatchManhattan([p], lr=0.1, setting=3)
    p.grad = torch.tensor([1.0, -1.0, 2.0]); opt.step()
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = BatchManhattan([q], lr=0.1, setting=3)
    opt2.load_state_dict(opt.state_dict())
    for o, t in ((opt, p), (opt2, q)):
        t.grad = torch.tensor([-1.0, 0.5, 2.0]); o.step()
    assert torch.equal(p, q)


def test_batch_manhattan_rejects_an_unknown_setting():
    with pytest.raises(ValueError, match="setting"):
        BatchManhattan([torch.nn.Parameter(torch.ones(1))], lr=0.1, setting=4)


def paper_labels():
    import csv
    from pathlib import Path
    labels = set()
    for f in (Path(__file__).parents[1] / "asym" / "reference").glob("table*.csv"):
        labels |= {h.split("/")[0] for h in next(csv.reader(open(f)))[1:]}
    return sorted(labels)


@pytest.mark.parametrize("label", paper_labels())
def test_every_table_label_parses(label):
    spec = parse_model(label)
    assert parse_model(spec.label) == spec
    assert hash(spec) == hash(parse_model(label))


@pytest.mark.parametrize("label,want", [
    ("SGD", ModelSpec()),
    ("BN", ModelSpec(batchnorm=True, bn_affine=True)),
    ("BN+BM", ModelSpec(batchnorm=True, bn_affine=True, setting=1)),
    ("uSF+BN+BM3", ModelSpec("usf", 0.0, True, False, 3)),
    ("brSF-p50+BN+BM", ModelSpec("brsf", 0.5, True, False, 1)),
    ("frSF-p100+BN+BM", ModelSpec("frsf", 1.0, True, False, 1)),
    ("RndF+BN", ModelSpec("rndf", 0.0, True, False, 0)),
    ("BM2", ModelSpec(setting=2)),
    ("NuSF", ModelSpec("nusf")),
])
def test_label_meanings(label, want):
    assert parse_model(label) == want


def test_bm1_is_the_same_model_as_bm():
    assert parse_model("BM1") == parse_model("BM") and parse_model("uSF+BN+BM1").label == "uSF+BN+BM"


@pytest.mark.parametrize("bad", ["usf", "uSF+XX", "BN+uSF", "BM+BN", "uSF-p50", "brSF-p150+BN", "", "SGD+BN", "BM4"])
def test_bad_labels_name_the_grammar(bad):
    with pytest.raises(ValueError, match=r"grammar: .*e\.g\."):
        parse_model(bad)


@pytest.mark.parametrize("arch,classes", [("mnist", 10), ("cifar", 10), ("cifar", 100), ("svhn", 10),
                                          ("timit", 80), ("default119", 102), ("default119", 17)])
def test_table1_output_shapes(arch, classes):
    net = build_network(arch, classes, "uSF+BN+BM")
    assert net(torch.randn(3, *input_shape(arch))).shape == (3, classes)


def test_mnist_net_parameter_count_and_layout():
    net = build_network("mnist", 10, "SGD")
    assert sum(p.numel() for p in net.parameters()) == 431_080
    assert sum(p.numel() for p in build_network("mnist", 10, "uSF+BN+BM").parameters()) == 431_080
    # the symmetric BN model has learnable BN scale/shift: 2·(20 + 50 + 500) more
    assert sum(p.numel() for p in build_network("mnist", 10, "BN").parameters()) == 431_080 + 1140


def test_default119_widths_follow_classes():
    net = build_network("default119", 102, "SGD")
    widths = [m.out_features for m in net if isinstance(m, torch.nn.Linear)]
    assert widths == [306, 204, 102]
    assert [m.out_features for m in build_network("default119", 17) if isinstance(m, torch.nn.Linear)] == [256, 34, 17]


def test_cifar_net_pads_2_and_flattens_4x4x64():
    net = build_network("cifar", 10)
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    assert all(c.padding == (2, 2) for c in convs)
    assert net[-1].in_features == 128 and net[-2 - 1].in_features == 4 * 4 * 64


def test_bn_before_relu_except_output():
    net = build_network("mnist", 10, "uSF+BN")
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["AsymConv2d", "PaperBatchNorm", "ReLU", "MaxPool2d", "AsymConv2d", "PaperBatchNorm", "ReLU",
                     "MaxPool2d", "Flatten", "AsymLinear", "PaperBatchNorm", "ReLU", "AsymLinear"]
    assert all(bn.weight is None for bn in batchnorm_layers(net))


def test_freeze_bottom_and_top():
    bottom = build_network("mnist", 10, "SGD", freeze="bottom")
    assert [p.requires_grad for p in bottom[-1].parameters()] == [False, False]
    assert all(p.requires_grad for p in bottom[:-1].parameters())
    top = build_network("mnist", 10, "BN", freeze="top")
    assert all(p.requires_grad for p in top[-1].parameters())
    assert not any(p.requires_grad for p in top[:-1].parameters())


def test_same_seed_same_network():
    a, b = build_network("mnist", 10, "frSF+BN+BM", seed=3), build_network("mnist", 10, "frSF+BN+BM", seed=3)
    c = build_network("mnist", 10, "frSF+BN+BM", seed=4)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), k
    assert not torch.equal(a[0].weight, c[0].weight)


def test_paper_batchnorm_statistics_procedure():
    bn = PaperBatchNorm(2)
    batches = [torch.randn(50, 2) * s + s for s in (1.0, 2.0, 3.0)]
    bn.eval(); bn.calibrating = True
    for b in batches:
        bn(b)
    bn.calibrating = False
    mean, std = batches[0].mean(0), (batches[0].var(0, unbiased=False) + bn.eps).sqrt()
    for b in batches[1:]:
        mean = 0.95 * mean + 0.05 * b.mean(0)
        std = 0.95 * std + 0.05 * (b.var(0, unbiased=False) + bn.eps).sqrt()
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_std, std)
    x = torch.randn(4, 2)
    torch.testing.assert_close(bn(x), (x - mean) / std)
    bn.train()
    y = bn(batches[2])
    torch.testing.assert_close(y.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
