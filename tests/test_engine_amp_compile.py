"""Issue 13: the engine under train.amp (autocast, fp16's GradScaler) and train.compile (torch.compile)."""
import json
import os
import subprocess

import pytest
import torch

from asym import data
from asym.engine import Engine
from asym.train import Protocol, RunSpec, train

SHORT = dict(epochs=2, lr_steps=[])


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", cache=os.environ.get("ASYM_CACHE"))


@pytest.mark.parametrize("model,amp,n", [("uSF+BN+BM", "bf16", 1), ("BN", "fp16", 1), ("uSF+BN+BM", "bf16", 2)])
def test_amp_trains_digits(digits, tmp_path, model, amp, n):
    """Two epochs of digits in autocast (a run, and a run group of two) learn, and give other numbers than
    float32 does: autocast really runs (amp is part of the protocol because of that)."""
    runs = [RunSpec(model, "digits", m) for m in (10, 1)[:n]]
    outs = [tmp_path / amp / str(k) for k in range(n)]
    low = train(runs, digits, outs, Protocol(**SHORT, amp=amp))
    full = train(runs, digits, [tmp_path / "none" / str(k) for k in range(n)], Protocol(**SHORT))
    for lo, fu in zip(low, full):
        assert lo["status"] == "finished" and lo["protocol"]["amp"] == amp
        assert lo["epochs"][-1]["val_error"] < 30  # chance is 90 %
        assert [e.get("train_loss") for e in lo["epochs"]] != [e.get("train_loss") for e in fu["epochs"]]


def test_fp16_loss_scale_survives_a_checkpoint(digits):
    """The GradScaler's scale is in Engine.state_dict: an engine resumed from it continues with that scale and
    takes the same next step (uSF's sign feedback overflows fp16, so the scale has backed off from 2¹⁶)."""
    run, proto = RunSpec("uSF", "digits", 10), Protocol(amp="fp16")
    x, y = digits.x_train[:100], digits.y_train[:100]
    torch.manual_seed(0)
    a = Engine([run], proto, digits, torch.device("cpu"))
    a.net.train()
    for _ in range(3):
        a.train_step(x, y)
    assert a.scaler.get_scale() < 2.0 ** 16
    state = a.state_dict()
    b = Engine([run], proto, digits, torch.device("cpu"))
    b.load_state_dict(state)
    b.net.train()
    assert b.scaler.get_scale() == a.scaler.get_scale()
    a.train_step(x, y)
    b.train_step(x, y)
    for pa, pb in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(pa, pb)
    assert b.scaler.state_dict() == a.scaler.state_dict()


@pytest.mark.slow
def test_asym_train_with_bf16_end_to_end(tmp_path):
    """``asym-train … train.amp=bf16``: a finished run whose result and MLflow run say amp=bf16, under its own
    protocol hash (never mixed with the paper's float32 runs)."""
    res = subprocess.run(["asym-train", "model=uSF+BN+BM", "dataset=digits", "train=demo", "train.epochs=2",
                          "train.amp=bf16", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                          f"output_root={tmp_path}/runs"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result, = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("result.json")]
    assert result["status"] == "finished" and result["protocol"]["amp"] == "bf16"
    assert len(result["epochs"]) == 3 and result["best_val_error"] < 50
    import mlflow
    from asym.config import train_option
    from asym.tracking import protocol_hash
    from dataclasses import asdict
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    run, = mlflow.search_runs(experiment_names=["weight-symmetry"], output_format="list")
    demo = asdict(train_option("demo"))
    assert run.data.tags["protocol_hash"] == protocol_hash({**demo, "epochs": 2, "amp": "bf16"})
    assert run.data.tags["protocol_hash"] != protocol_hash({**demo, "epochs": 2})
