"""What a run leaves behind is what ran: interrupts (SIGINT/SIGTERM) and one MLflow point per (metric, epoch).

Real ``asym-train`` subprocesses, real signals, a real SQLite MLflow store.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asym import tracking

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("records")]  # one module fixture
BIN = Path(sys.executable).parent
RUN = ["model=brSF+BN+BM", "dataset=digits", "lr_mult=10", "train=demo", "train.epochs=6"]


def env():
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def asym(cwd, *args, timeout=300):
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env())


def store(tmp_path, name):
    return [f"tracking.uri=sqlite:///{tmp_path}/{name}.db", f"output_root={tmp_path}/{name}"]


def histories(uri, run_id) -> dict[str, list[tuple[int, float]]]:
    c = tracking.client(uri)
    return {k: sorted((m.step, m.value) for m in c.get_metric_history(run_id, k)) for k in tracking.EPOCH_METRICS}


def assert_one_point_per_epoch(uri, run_id, epochs: list[dict]):
    """Every per-epoch metric has exactly one point per epoch the run's record holds, and no other."""
    for k, points in histories(uri, run_id).items():
        steps = [s for s, _ in points]
        want = [e["epoch"] for e in epochs if e.get(k) is not None]
        assert steps == want, f"{k}: MLflow steps {steps}, the run's record has {want}"


def only_run(uri):
    df = tracking.runs_frame(uri)
    assert len(df) == 1, df
    return df.iloc[0]


def test_one_point_per_metric_and_epoch_finished_diverged_synced(tmp_path):
    """Finished and diverged runs (a diverged epoch has train_loss/train_error/lr but no val_error: it used to
    be logged twice), then both uploaded by asym-sync into an empty store."""
    for name, mult in (("finished", "10"), ("diverged", "1e36")):
        res = asym(tmp_path, "asym-train", "model=SGD", "dataset=digits", f"lr_mult={mult}", "train=demo",
                   "train.epochs=3", *store(tmp_path, name))
        assert res.returncode == 0, res.stderr[-3000:]
        uri = f"sqlite:///{tmp_path}/{name}.db"
        run = only_run(uri)
        result = json.loads(next((tmp_path / name).rglob("result.json")).read_text())
        assert run["tags.status"] == result["status"] == name
        assert_one_point_per_epoch(uri, run["run_id"], result["epochs"])
        synced = f"sqlite:///{tmp_path}/synced-{name}.db"
        for _ in range(2):  # twice is harmless
            res = asym(tmp_path, "asym-sync", str(tmp_path / name), "--tracking-uri", synced)
            assert res.returncode == 0, res.stderr[-3000:]
        assert_one_point_per_epoch(synced, only_run(synced)["run_id"], result["epochs"])
    diverged = json.loads(next((tmp_path / "diverged").rglob("result.json")).read_text())["epochs"]
    assert diverged[-1]["val_error"] is None and diverged[-1]["train_loss"] is not None  # the case that doubled


def start_and_signal(tmp_path, sig, args):
    """Start ``asym-train`` and send ``sig`` in the middle of epoch 3 (epochs 0–2 checkpointed)."""
    proc = subprocess.Popen([str(BIN / "asym-train"), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.time() + 180
    for line in proc.stdout:
        if "epoch 2:" in line or time.time() > deadline:
            break
    time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run uninterrupted: its MLflow store, run and result.json."""
    tmp_path = tmp_path_factory.mktemp("reference")
    ref = asym(tmp_path, "asym-train", *RUN, *store(tmp_path, "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    uri = f"sqlite:///{tmp_path}/ref.db"
    run = only_run(uri)
    result = json.loads(next((tmp_path / "ref").rglob("result.json")).read_text())
    assert_one_point_per_epoch(uri, run["run_id"], result["epochs"])  # finished
    return uri, run, result


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_ends_killed_and_the_same_command_resumes_identically(tmp_path, reference, sig, code):
    ref_uri, ref_run, ref_result = reference

    args = ["-m", *RUN, *store(tmp_path, "cut")]
    rc, err = start_and_signal(tmp_path, sig, args)
    assert rc == code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "run the same command to resume" in err.strip().splitlines()[-1]
    uri = f"sqlite:///{tmp_path}/cut.db"
    run = only_run(uri)
    assert run["status"] == "KILLED" and run["tags.status"] == "interrupted"
    ckpt = next((tmp_path / "cut").rglob("checkpoint.pt"))
    kept = torch.load(ckpt, weights_only=True)["epoch"]
    assert 2 <= kept < 6
    result = json.loads((ckpt.parent / "result.json").read_text())
    assert result["status"] == "interrupted" and [e["epoch"] for e in result["epochs"]] == list(range(kept + 1))
    assert_one_point_per_epoch(uri, run["run_id"], result["epochs"])

    status = asym(tmp_path, "asym-status", str(tmp_path / "cut"))
    assert status.returncode == 0, status.stderr
    all_row = next(line for line in status.stdout.splitlines() if line.startswith("all"))
    header = next(line for line in status.stdout.splitlines() if line.startswith("table"))
    counts = dict(zip(header.split()[1:], all_row.split()[1:]))
    assert counts["interrupted"] == "1" and counts["running"] == "0" and counts["failed"] == "0", status.stdout

    again = asym(tmp_path, "asym-train", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = only_run(uri)
    assert resumed["run_id"] == run["run_id"] and resumed["status"] == "FINISHED"
    assert resumed["tags.status"] == "finished"
    final = json.loads((ckpt.parent / "result.json").read_text())
    assert final["timings"]["resumed_from_epoch"] == kept
    assert final["epochs"] == ref_result["epochs"]
    assert histories(uri, run["run_id"]) == histories(ref_uri, ref_run["run_id"])
    assert_one_point_per_epoch(uri, run["run_id"], final["epochs"])  # resumed


def test_an_interrupted_run_group_with_a_diverged_member_resumes_whole_and_identically(tmp_path):
    """engine=group with a member that diverged before SIGTERM: the rerun resumes the whole group from its
    checkpoint (it used to drop the diverged member, miss the group checkpoint and restart the rest from
    epoch 0, logging every epoch twice)."""
    args = ["-m", "model=SGD", "dataset=digits", "lr_mult=1e36,10", "engine=group", "train=demo", "train.epochs=6"]
    ref = asym(tmp_path, "asym-train", *args, *store(tmp_path, "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    rc, err = start_and_signal(tmp_path, signal.SIGTERM, [*args, *store(tmp_path, "cut")])
    assert rc == 143, err[-3000:]
    again = asym(tmp_path, "asym-train", *args, *store(tmp_path, "cut"))
    assert again.returncode == 0, again.stderr[-3000:]

    def members(name):
        uri = f"sqlite:///{tmp_path}/{name}.db"
        df = tracking.runs_frame(uri)
        results = {json.loads(p.read_text())["run"]["lr_mult"]: json.loads(p.read_text())
                   for p in (tmp_path / name).rglob("result.json")}
        return uri, {float(m): (rid, results[float(m)]) for m, rid in zip(df["tags.lr_mult"], df["run_id"])}

    ref_uri, ref_runs = members("ref")
    cut_uri, cut_runs = members("cut")
    assert sorted(ref_runs) == sorted(cut_runs) == [10.0, 1e36]
    assert {r["status"] for _, r in cut_runs.values()} == {"diverged", "finished"}
    for mult, (run_id, result) in cut_runs.items():
        assert result["timings"]["resumed_from_epoch"] is not None, mult
        assert result["epochs"] == ref_runs[mult][1]["epochs"], mult
        assert_one_point_per_epoch(cut_uri, run_id, result["epochs"])
        nan_equal = lambda h: {k: [(step, repr(v)) for step, v in points] for k, points in h.items()}  # nan == nan
        assert nan_equal(histories(cut_uri, run_id)) == nan_equal(histories(ref_uri, ref_runs[mult][0]))
