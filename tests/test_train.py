"""The paper's protocol: schedule, BN statistics, freezing, divergence, exact resume after SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from asym import data
from asym.models import batchnorm_layers
from asym.engine import Engine
from asym.train import Protocol, RunSpec, calibrate_batchnorm, train, train_run

SHORT = Protocol(epochs=3, lr_steps=[2])


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", cache=os.environ.get("ASYM_CACHE"))


def test_options_beyond_the_paper_keep_the_paper_protocols_hash():
    """Runs logged before ``train.amp``/``select_on``/``val_fraction`` existed keep their hash (skip-done, tables);
    any other value of them is another protocol. The pinned hashes are those of asym at 3e1bc54."""
    from dataclasses import asdict, replace

    from asym.config import train_option
    from asym.tracking import config_hash, protocol_hash
    paper, demo = train_option("paper"), train_option("demo")
    assert protocol_hash(asdict(paper)) == "3d4120e66a8be798" and protocol_hash(asdict(demo)) == "3d9870347396a632"
    run = dict(model="uSF+BN+BM", dataset="digits", lr_mult=10, freeze="none", procedure="standard", seed=0)
    assert config_hash(run, asdict(paper)) == "2a686555cb807556"
    assert protocol_hash(asdict(replace(paper, val_fraction=0.3))) == "3d4120e66a8be798"  # unused with select_on=test
    others = [replace(paper, amp="bf16"), replace(paper, amp="fp16"), replace(paper, select_on="val"),
              replace(paper, select_on="val", val_fraction=0.2)]
    assert len({protocol_hash(asdict(p)) for p in [paper, *others]}) == 5


def test_lr_schedule_and_large_batch_switch():
    p = Protocol()
    assert [p.lr(e, 10) for e in (1, 50, 51, 60, 61, 65)] == pytest.approx([5e-3, 5e-3, 5e-4, 5e-4, 5e-5, 5e-5])
    assert [p.batch_size_at(e, "standard") for e in (1, 4, 65)] == [100, 100, 100]
    assert [p.batch_size_at(e, "large_batch") for e in (1, 3, 4, 65)] == [100, 100, 500, 500]


def test_large_batch_procedure_in_history(digits, tmp_path):
    res = train_run(RunSpec("uSF+BM", "digits", 1, procedure="large_batch"), digits, tmp_path,
                    Protocol(epochs=4, lr_steps=[], large_batch_after=2))
    assert [h.get("batch_size") for h in res["epochs"][1:]] == [100, 100, 500, 500]


def test_bn_calibration_uses_training_batches(digits):
    state = Engine([RunSpec("uSF+BN", "digits", 1)], SHORT, digits, torch.device("cpu"))
    calibrate_batchnorm(state.net, digits.x_train, state.data_rng, SHORT)
    bns = batchnorm_layers(state.net)
    available = -(-len(digits.y_train) // SHORT.batch_size)  # digits has 13 batches, fewer than 20
    assert bns and all(int(bn.calibrated_batches) == min(SHORT.bn_batches, available) for bn in bns)
    assert not state.net.training and not any(bn.calibrating for bn in bns)


def test_digits_sgd_learns_within_a_few_epochs(digits, tmp_path):
    res = train_run(RunSpec("SGD", "digits", 100), digits, tmp_path, SHORT)
    assert res["status"] == "finished"
    assert res["epochs"][0]["val_error"] > 70  # untrained ≈ chance
    assert res["best_val_error"] < 30 and res["best_epoch"] >= 2
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["best_val_error"] == res["best_val_error"] and len(saved["epochs"]) == 4
    assert {"epoch", "val_error", "train_error", "train_loss", "lr"} <= set(saved["epochs"][1])
    assert [h["lr"] for h in saved["epochs"][1:]] == pytest.approx([5e-2, 5e-2, 5e-3])


@pytest.mark.parametrize("freeze", ["bottom", "top"])
def test_freezing_really_freezes(digits, tmp_path, freeze):
    run = RunSpec("uSF+BN+BM", "digits", 10, freeze=freeze)
    init = Engine([run], SHORT, digits, torch.device("cpu")).net.state_dict()
    train_run(run, digits, tmp_path, Protocol(epochs=1, lr_steps=[]))
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["net"]
    last = str(max(int(k.split(".")[0]) for k in init if k.endswith(".weight")))
    for k, v in init.items():
        if not (k.endswith(".weight") or k.endswith(".bias")):
            continue
        frozen = k.startswith(last + ".") if freeze == "bottom" else not k.startswith(last + ".")
        assert torch.equal(v, trained[k]) == frozen, k


def test_divergence_keeps_best_so_far(digits, tmp_path):
    res = train_run(RunSpec("SGD", "digits", 1e36), digits, tmp_path, Protocol(epochs=5, lr_steps=[]))
    assert res["status"] == "diverged"
    assert res["epochs"][-1]["val_error"] is None and len(res["epochs"]) < 6
    assert res["best_epoch"] == 0 and res["best_val_error"] == res["epochs"][0]["val_error"]


def test_failed_run_writes_result(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(Engine, "evaluate", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        train_run(RunSpec("SGD", "digits", 1), digits, tmp_path, SHORT)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["status"] == "failed" and "boom" in saved["error"]


@pytest.mark.parametrize("mults", [[10], [10, 1], [100, 10, 1]])
def test_a_failing_job_keeps_every_members_finished_epochs(digits, tmp_path, monkeypatch, mults):
    """One failure path for N = 1 and N > 1: an exception in epoch 3 leaves each member's result.json
    "failed" with epochs 0–2 and its best-so-far (a failed group used to lose every member's history)."""
    real, calls = Engine.evaluate, []

    def failing(self, x, y):
        calls.append(1)
        if len(calls) == 4:  # epoch 0, 1, 2 evaluate; epoch 3 fails
            raise RuntimeError("boom")
        return real(self, x, y)
    monkeypatch.setattr(Engine, "evaluate", failing)
    runs = [RunSpec("SGD", "digits", m) for m in mults]
    outs = [tmp_path / f"m{k}" for k in range(len(runs))]
    with pytest.raises(RuntimeError, match="boom"):
        train(runs, digits, outs, Protocol(epochs=4, lr_steps=[]), checkpoint=tmp_path / "ckpt.pt")
    for out in outs:
        saved = json.loads((out / "result.json").read_text())
        assert saved["status"] == "failed" and "boom" in saved["error"]
        assert [e["epoch"] for e in saved["epochs"]] == [0, 1, 2]
        assert saved["best_val_error"] == min(e["val_error"] for e in saved["epochs"])


def test_bad_run_spec():
    with pytest.raises(ValueError, match="lr_mult"):
        RunSpec("SGD", "digits", -1).validate()
    with pytest.raises(ValueError, match="grammar"):
        RunSpec("uSF+FOO", "digits", 1).validate()


def run_cli(out, epochs, mults, model="brSF+BN+BM"):
    return [sys.executable, "-m", "asym.train", model, "digits", mults, str(out), "--epochs", str(epochs),
            "--lr-steps", "3", "--threads", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("mults", ["10", "100,10,1,0.1,0.01"])
def test_sigkill_and_resume_is_identical(tmp_path, mults):
    """A real subprocess SIGKILLed mid-run, re-run: per-epoch metrics equal an uninterrupted run's,
    for a run (N = 1) and a run group (N = 5, every member)."""
    epochs = 6
    env = dict(os.environ)
    ref = tmp_path / "ref"
    subprocess.run(run_cli(ref, epochs, mults), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(run_cli(killed, epochs, mults), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a checkpoint past epoch 1, then kill mid-epoch
        line = proc.stdout.readline().decode()
        if "epoch 2:" in line:
            time.sleep(0.3)
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    members = [""] if "," not in mults else [f"lr{float(m):g}" for m in mults.split(",")]
    assert not any((killed / m / "result.json").exists() for m in members), "the run finished before it was killed"
    resumed_from = torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= resumed_from < epochs
    subprocess.run(run_cli(killed, epochs, mults), check=True, env=env, capture_output=True)
    for m in members:
        a = json.loads((ref / m / "result.json").read_text())
        b = json.loads((killed / m / "result.json").read_text())
        assert b["timings"]["resumed_from_epoch"] == resumed_from
        assert len(a["epochs"]) == epochs + 1
        assert a["epochs"] == b["epochs"] and a["best_val_error"] == b["best_val_error"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_run_records_get_the_mode_the_umask_gives(digits, tmp_path, umask):
    """result.json and checkpoint.pt are written atomically (a temporary file, then a rename); they must still
    get 0666 less the umask, as a plain open() gives — mkstemp's 0600 hid them from the team on a shared disk."""
    from asym.files import write_json
    old = os.umask(umask)
    try:
        train_run(RunSpec("SGD", "digits", 10), digits, tmp_path / "run", Protocol(epochs=1, lr_steps=[]))
        write_json(tmp_path / "plain.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("run/result.json", "run/checkpoint.pt", "plain.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
