"""Issue 13: the GPU path. Every test here is marked ``cuda`` and skips with its reason without a CUDA device;
``python benchmarks/device_check.py`` runs them (and the benchmarks) on a GPU machine in one command."""
import json
import os
import signal
import subprocess
import time

import pytest
import torch

from asym import data
from asym.train import Protocol, RunSpec, train, train_run

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA device (torch.cuda.is_available() is False); "
                                        "run python benchmarks/device_check.py on a GPU machine")]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", cache=os.environ.get("ASYM_CACHE"))


def asym_train(tmp_path, out, epochs):
    return ["asym-train", "model=brSF+BN+BM", "dataset=digits", "lr_mult=10", "train=demo", f"train.epochs={epochs}",
            "train.device=cuda", f"tracking.uri=sqlite:///{tmp_path}/{out}.db", f"output_root={tmp_path}/{out}"]


def test_sigkill_and_resume_on_cuda_is_identical(tmp_path):
    """asym-train on CUDA, SIGKILLed mid-run and rerun: per-epoch metrics equal an uninterrupted CUDA run's
    (the feedback generators and the data order resume on the device)."""
    epochs = 20  # a digits epoch takes well under a second on a GPU: enough left to kill mid-run
    subprocess.run(asym_train(tmp_path, "ref", epochs), cwd=tmp_path, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(asym_train(tmp_path, "killed", epochs), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if "epoch 2:" in proc.stdout.readline().decode():  # printed after epoch 2's checkpoint
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "killed").rglob("result.json")), "the run finished before it was killed"
    subprocess.run(asym_train(tmp_path, "killed", epochs), cwd=tmp_path, check=True, capture_output=True, timeout=600)
    a, = [json.loads(p.read_text()) for p in (tmp_path / "ref").rglob("result.json")]
    b, = [json.loads(p.read_text()) for p in (tmp_path / "killed").rglob("result.json")]
    assert b["timings"]["resumed_from_epoch"] >= 1 and len(a["epochs"]) == epochs + 1
    assert a["epochs"] == b["epochs"]


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_autocast_on_cuda_equals_the_torch_layer(kind, amp):
    """bp mode under CUDA autocast computes what nn.Linear / nn.Conv2d compute there; the asymmetric modes send
    dL/dy·V (computed by hand in the low dtype)."""
    from test_asym_precision import LOW, PAIRS
    ref, ours, x = PAIRS[kind]("bp")
    ref, ours, x = ref.to(CUDA), ours.to(CUDA), x.to(CUDA)
    gy = torch.randn_like(ref(x)).to(LOW[amp])
    want = grads_under_cuda_autocast(ref, x, LOW[amp], gy)
    got = grads_under_cuda_autocast(ours, x, LOW[amp], gy)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.float(), w.float(), rtol=2e-2, atol=2e-2)
    _, usf, _ = PAIRS[kind]("usf")
    usf = usf.to(CUDA)
    _, gx, _, _ = grads_under_cuda_autocast(usf, x, LOW[amp], gy)
    v = usf.feedback_matrix().to(LOW[amp])
    by_hand = gy @ v if kind == "linear" else torch.nn.grad.conv2d_input(x.shape, v, gy, stride=2, padding=1)
    torch.testing.assert_close(gx, by_hand.float(), rtol=2e-2, atol=2e-2)


def grads_under_cuda_autocast(layer, x, dtype, gy):
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=dtype):
        y = layer(x)
    y.backward(gy)
    return y, x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_amp_run_on_cuda(digits, tmp_path, amp):
    """One epoch of digits on CUDA in autocast (fp16 with its GradScaler) finishes and learns."""
    res = train_run(RunSpec("BN", "digits", 10), digits, tmp_path, Protocol(epochs=1, lr_steps=[], amp=amp), CUDA)
    assert res["status"] == "finished" and res["epochs"][-1]["val_error"] < 30


def test_compiled_equals_eager_on_cuda(digits, tmp_path):
    """train.compile=true on CUDA gives the eager run's per-epoch numbers within float tolerance."""
    run, proto = RunSpec("RndF+BN", "digits", 10), Protocol(epochs=1, lr_steps=[])
    eager, = train([run], digits, [tmp_path / "eager"], proto, CUDA)
    compiled, = train([run], digits, [tmp_path / "compiled"], proto, CUDA, compile=True)
    for e, c in zip(eager["epochs"], compiled["epochs"]):
        for k in e:
            assert c[k] == pytest.approx(e[k], rel=1e-4, abs=0.2 if k.endswith("error") else 1e-6)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("model", ["SGD", "BN", "RndF+BN", "uSF+BN", "brSF"])
def test_group_equals_single_runs_on_cuda(digits, tmp_path, model):
    """engine=group on CUDA reproduces its members trained alone, for sign-free (setting 0) models, in float64."""
    from test_group import PROTO, as64, assert_same_history
    ds = as64(digits)
    runs = [RunSpec(model, "digits", m) for m in (10, 1)]
    solo = [train_run(r, ds, tmp_path / f"solo{k}", PROTO, CUDA) for k, r in enumerate(runs)]
    group = train(runs, ds, [tmp_path / f"member{k}" for k in range(2)], PROTO, CUDA,
                  checkpoint=tmp_path / "group" / "checkpoint.pt")
    for a, b in zip(solo, group):
        assert_same_history(a, b)
