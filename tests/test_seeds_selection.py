"""Issue 15, the training side: seeds as a sweep axis (``seeds=K``) and honest selection (``train.select_on=val``).

The seed must change everything random about a run — initial weights, feedback draws, data order — and reproduce
it exactly; the holdout must be stratified, disjoint, fixed by the data seed; with ``select_on=val`` the epoch is
chosen on the holdout and the test split chooses nothing.
"""
import json
import os
import subprocess
from dataclasses import replace

import pytest
import torch

from asym import data, tracking
from asym.engine import Engine
from asym.train import (HOLDOUT_ERROR, SELECTED_EPOCH, SELECTED_ERROR, SELECTED_HOLDOUT_ERROR, Protocol, RunSpec,
                        selected_of, train_run)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", cache=os.environ.get("ASYM_CACHE"))


def random_feedback(net) -> dict:
    """The feedback draws a net holds: frSF/brSF masks M∘S_p and RndF's V."""
    return {k: v for k, v in net.state_dict().items() if k.endswith((".mask", ".v"))}


def first_batch_draw(net) -> list[torch.Tensor]:
    """brSF's next per-batch draw of M (train mode redraws it from the layer's own generator)."""
    net.train()
    out = []
    for m in net.modules():
        fb = getattr(m, "feedback", None)
        if fb is not None and getattr(fb, "batchwise", False):
            fb(m.weight.detach())
            out.append(fb.mask.clone())
    return out


@pytest.mark.parametrize("model", ["SGD", "RndF", "frSF+BN+BM", "brSF-p25+BN+BM"])
@pytest.mark.parametrize("a,b", [(0, 1), (1, 2), (0, 7)])
def test_the_seed_changes_weights_feedback_and_data_order_and_reproduces_exactly(digits, model, a, b):
    proto = Protocol(epochs=1)

    def engine(seed):
        return Engine([RunSpec(model, "digits", 1.0, seed=seed)], proto, digits, torch.device("cpu"))
    first, again, other = engine(a), engine(a), engine(b)
    weights = [k for k, v in first.net.state_dict().items() if k.endswith("weight") and v.dim() > 1]
    assert weights
    for k in weights:  # initial weights: equal for one seed, different for another
        assert torch.equal(first.net.state_dict()[k], again.net.state_dict()[k]), k
        assert not torch.equal(first.net.state_dict()[k], other.net.state_dict()[k]), k
    fb = random_feedback(first.net)
    assert bool(fb) == (model != "SGD")
    for k, v in fb.items():  # feedback drawn at build time (frSF, brSF, RndF)
        assert torch.equal(v, random_feedback(again.net)[k]) and not torch.equal(v, random_feedback(other.net)[k]), k
    draws = [first_batch_draw(e.net) for e in (first, again, other)]
    assert bool(draws[0]) == model.startswith("brSF")  # brSF redraws per batch: its next draw too
    for x, y, z in zip(*draws):
        assert torch.equal(x, y) and not torch.equal(x, z)
    orders = [torch.randperm(len(digits.y_train), generator=e.data_rng) for e in (first, again, other)]
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])  # the data order


def unbalanced_labels(seed: int = 0) -> torch.Tensor:
    """Labels of 5 classes of 7, 19, 40, 101 and 3 images, shuffled."""
    y = torch.cat([torch.full((n,), c) for c, n in enumerate([7, 19, 40, 101, 3])])
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("labels", ["digits", "unbalanced"])
def test_holdout_is_stratified_disjoint_and_fixed_by_the_data_seed(digits, fraction, labels):
    y = digits.y_train if labels == "digits" else unbalanced_labels()
    train_idx, held = data.holdout_split(y, fraction, seed=0)
    assert set(train_idx.tolist()).isdisjoint(held.tolist())
    assert sorted(train_idx.tolist() + held.tolist()) == list(range(len(y)))
    for c in torch.unique(y).tolist():  # each class's share within one image of fraction × its size
        n_c, k_c = int((y == c).sum()), int((y[held] == c).sum())
        assert abs(k_c - fraction * n_c) <= 1 and k_c < n_c, (c, n_c, k_c)
    again = data.holdout_split(y, fraction, seed=0)
    assert torch.equal(again[1], held) and torch.equal(again[0], train_idx)
    assert not torch.equal(data.holdout_split(y, fraction, seed=1)[1], held)


def test_holdout_data_is_disjoint_from_test_and_training_images():
    """On images that are all distinct: ``hold_out`` moves rows out of the training split, none from the test split."""
    n_train, n_test = 300, 100
    x = torch.arange((n_train + n_test) * 4, dtype=torch.float32).reshape(-1, 4)  # every row unique
    y = torch.arange(n_train + n_test) % 3
    ds = data.TensorData("toy", "timit", 3, x[:n_train], y[:n_train], x[n_train:], y[n_train:], seed=5)
    held = ds.hold_out(0.2)
    rows = {name: {tuple(r.tolist()) for r in t} for name, t in
            (("train", held.x_train), ("holdout", held.x_holdout), ("test", held.x_test))}
    assert rows["holdout"].isdisjoint(rows["train"]) and rows["holdout"].isdisjoint(rows["test"])
    assert rows["train"] | rows["holdout"] == {tuple(r.tolist()) for r in x[:n_train]}
    assert held.holdout["size"] == 60 and held.holdout["data_seed"] == 5
    assert held.holdout["digest"] == ds.hold_out(0.2).holdout["digest"] != replace(ds, seed=6).hold_out(0.2).holdout["digest"]


@pytest.mark.parametrize("fraction", [0.999, 0.99])
def test_a_fraction_that_leaves_a_class_nothing_to_train_on_is_refused(fraction):
    with pytest.raises(ValueError, match="nothing to train on"):
        data.holdout_split(unbalanced_labels(), fraction, seed=0)


@pytest.mark.parametrize("history,want", [
    # epoch 0 counts; the earliest epoch on a tie; the test error plays no part
    ([{"epoch": 0, "val_error": 90, HOLDOUT_ERROR: 10}, {"epoch": 1, "val_error": 5, HOLDOUT_ERROR: 20}], (0, 10, 90)),
    ([{"epoch": 0, "val_error": 90, HOLDOUT_ERROR: 80}, {"epoch": 1, "val_error": 30, HOLDOUT_ERROR: 25},
      {"epoch": 2, "val_error": 20, HOLDOUT_ERROR: 25}], (1, 25, 30)),
    # a diverged epoch (no errors) is not chosen
    ([{"epoch": 0, "val_error": 90, HOLDOUT_ERROR: 88}, {"epoch": 1, "val_error": None}], (0, 88, 90)),
])
def test_selected_is_the_holdout_minimum_and_the_test_error_there(history, want):
    got = selected_of(history, "val")
    assert (got[SELECTED_EPOCH], got[SELECTED_HOLDOUT_ERROR], got[SELECTED_ERROR]) == want
    test = selected_of(history, "test")  # the paper's choice: least test error
    best = min((h["val_error"], h["epoch"]) for h in history if h["val_error"] is not None)
    assert (test[SELECTED_EPOCH], test[SELECTED_HOLDOUT_ERROR], test[SELECTED_ERROR]) == (best[1], None, best[0])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["SGD", "uSF+BM"])
def test_select_on_val_chooses_on_the_holdout_and_never_reads_the_test_split(digits, tmp_path, model):
    proto = Protocol(epochs=2, lr_steps=[1], select_on="val", val_fraction=0.2)
    run = RunSpec(model, "digits", 10.0)
    result = train_run(run, digits, tmp_path / "a", proto)
    epochs = result["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2] and all(e[HOLDOUT_ERROR] is not None for e in epochs)
    held, epoch = min((e[HOLDOUT_ERROR], e["epoch"]) for e in epochs)
    assert (result[SELECTED_EPOCH], result[SELECTED_HOLDOUT_ERROR]) == (epoch, held)
    assert result[SELECTED_ERROR] == epochs[epoch]["val_error"] and result["select_on"] == "val"
    n_held = result["holdout"]["size"]
    assert abs(n_held - 0.2 * len(digits.y_train)) <= 10  # ±½ image per class
    assert json.loads((tmp_path / "a" / "result.json").read_text())["holdout"] == result["holdout"]
    # the test split chooses nothing: scramble its labels and every holdout number, and the choice, stay the same
    scrambled = replace(digits, y_test=digits.y_test[torch.randperm(len(digits.y_test),
                                                                    generator=torch.Generator().manual_seed(3))])
    other = train_run(run, scrambled, tmp_path / "b", proto)
    assert [e[HOLDOUT_ERROR] for e in other["epochs"]] == [e[HOLDOUT_ERROR] for e in epochs]
    assert (other[SELECTED_EPOCH], other[SELECTED_HOLDOUT_ERROR]) == (result[SELECTED_EPOCH], result[SELECTED_HOLDOUT_ERROR])
    assert [e["val_error"] for e in other["epochs"]] != [e["val_error"] for e in epochs]  # the test split did change
    assert other["holdout"] == result["holdout"]


@pytest.mark.slow
def test_a_select_on_val_run_resumes_with_the_same_holdout_and_numbers(digits, tmp_path):
    """The holdout is drawn again on resume (from the data seed), so a resumed run equals an uninterrupted one."""
    run, proto = RunSpec("SGD", "digits", 10.0), Protocol(epochs=2, lr_steps=[5], select_on="val")
    whole = train_run(run, digits, tmp_path / "whole", proto)
    def stop_after_epoch_1(k, rec):  # the checkpoint of this protocol's epoch 1 (another protocol's is refused)
        if rec["epoch"] == 1:
            raise RuntimeError("stopped")
    with pytest.raises(RuntimeError, match="stopped"):
        train_run(run, digits, tmp_path / "cut", proto, on_epoch=stop_after_epoch_1)
    resumed = train_run(run, digits, tmp_path / "cut", proto)
    assert resumed["timings"]["resumed_from_epoch"] == 1
    assert resumed["epochs"] == whole["epochs"] and resumed["holdout"] == whole["holdout"]
    assert {k: resumed[k] for k in (SELECTED_EPOCH, SELECTED_HOLDOUT_ERROR, SELECTED_ERROR)} == \
        {k: whole[k] for k in (SELECTED_EPOCH, SELECTED_HOLDOUT_ERROR, SELECTED_ERROR)}


@pytest.mark.parametrize("seeds", [1, 2, 3])
def test_seeds_repeat_every_run_of_the_demo_sweep_once_per_seed(seeds):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    import asym.cli  # noqa: F401  (registers the sweeps and the sweeper)
    from asym.launcher.plan import expand_seeds, job_values, select_jobs
    GlobalHydra.instance().clear()
    with initialize_config_module("asym.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+sweep=demo", f"seeds={seeds}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    base = select_jobs(BasicSweeper.split_arguments(parsed, None)[0], dict(sweeper.only_for_models))
    jobs = [job_values(j) for j in expand_seeds(base, cfg.seeds)]
    assert len(jobs) == 36 * seeds
    seen = [tuple(sorted((k, str(v)) for k, v in j.items())) for j in jobs]
    assert len(set(seen)) == len(seen)  # no run twice
    assert [j.get("seed", 0) for j in jobs] == [s for s in range(seeds) for _ in range(36)]  # seed-major


def asym(cwd, *args, timeout=600):
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_seeds_sweep_runs_every_run_per_seed_then_skips_them(tmp_path):
    """``seeds=3``: 3× the runs, each its own hash and MLflow run, distinct training, one holdout per data seed
    (shared by the models), holdout_error per epoch and the selected_* numbers in MLflow; a relaunch trains
    nothing; asym-status counts the seeds and names the selection."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["asym-train", "-m", "model=SGD,BN", "dataset=digits", "lr_mult=10", "train=demo", "train.epochs=1",
            "seeds=3", "engine=group", "train.select_on=val", f"tracking.uri={uri}", f"output_root={tmp_path}/runs",
            "hydra.sweep.dir=sweep"]
    first = asym(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "select_on=val: epoch" in first.stderr + first.stdout  # the end-of-run line names the selection
    planned = json.loads((tmp_path / "sweep" / "runs.json").read_text())["runs"]
    assert sorted((e["run"]["model"], e["run"]["seed"]) for e in planned) == \
        sorted((m, s) for m in ("SGD", "BN") for s in (0, 1, 2))
    assert len({e["config_hash"] for e in planned}) == 6 and {e["select_on"] for e in planned} == {"val"}
    df = tracking.runs_frame(uri)
    assert len(df) == 6 and set(df["tags.status"]) == {"finished"} and set(df["tags.select_on"]) == {"val"}
    assert sorted(df["tags.seed"]) == ["0", "0", "1", "1", "2", "2"]
    assert df[["metrics.selected_epoch", "metrics.selected_error", "metrics.selected_holdout_error"]].notna().all().all()
    c = tracking.client(uri)
    for run_id in df["run_id"]:
        assert [m.step for m in c.get_metric_history(run_id, HOLDOUT_ERROR)] == [0, 1]
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").rglob("result.json"))]
    assert len(results) == 6
    by = {(r["run"]["model"], r["run"]["seed"]): r for r in results}
    for s in (0, 1, 2):  # one holdout per data seed, whatever the model
        assert by[("SGD", s)]["holdout"] == by[("BN", s)]["holdout"]
    assert len({by[("SGD", s)]["holdout"]["digest"] for s in (0, 1, 2)}) == 3
    for m in ("SGD", "BN"):  # seeds train differently
        assert len({by[(m, s)]["epochs"][1]["train_loss"] for s in (0, 1, 2)}) == 3
    status = asym(tmp_path, "asym-status", "sweep").stdout
    assert "select_on=val" in status and "cells with all 3 seeds done: 2/2" in status
    assert all(f"seed {s}: 2/2 runs done" in status for s in (0, 1, 2)), status

    mtimes = sorted(p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("checkpoint.pt"))
    again = asym(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stderr + again.stdout).count("skip ") == 6
    assert len(tracking.runs_frame(uri)) == 6
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("checkpoint.pt")) == mtimes


@pytest.mark.parametrize("mode,args,message", [
    ("run", ["seeds=0"], "seeds must be a positive integer"),
    ("multirun", ["seeds=-1"], "seeds must be a positive integer"),
    ("multirun", ["seeds=abc"], "bad value for seeds"),
    ("multirun", ["seeds=1,3"], "seeds is a count, not a sweep axis"),
    ("multirun", ["seeds=3", "seed=1"], "seeds=3 runs seeds 0 … 2 and seed=1 chooses one"),
    ("multirun", ["seeds=2", "seed=0,1"], "seeds=2 runs seeds 0 … 1 and seed=0 chooses one"),
    ("run", ["seeds=3"], "seeds=3 repeats the runs of a sweep: add -m"),
    ("run", ["train.select_on=val", "train.val_fraction=0.5"], "train.val_fraction must be in (0, 0.5)"),
    ("multirun", ["train.select_on=val", "train.val_fraction=0.999"], "train.val_fraction must be in (0, 0.5)"),
])
def test_bad_seeds_and_holdouts_are_one_line_and_write_nothing(asym_train, tmp_path, mode, args, message):
    from conftest import assert_one_error_line
    res = asym_train(*(["-m", "model=SGD,BN"] if mode == "multirun" else []), "dataset=digits", *args,
                     f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"output_root={tmp_path}/runs")
    assert_one_error_line(res, message, tmp_path)
