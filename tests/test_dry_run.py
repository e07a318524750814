"""``hydra.sweeper.dry_run=true``: the plan and cost of any sweep, on any launcher, with or without data —
nothing queued, written or logged. In-process (conftest's ``asym_train``); the SLURM launcher reads the limits of a
controller captured from CI's real one (tests/data/slurm), so these tests need no cluster."""
import math
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from asym import study, tracking
from asym.data import PAPER_DATASETS
from asym.launcher import cluster as cl
from asym.launcher import cost, slurm
from asym.protocol import Protocol

DATA = Path(__file__).parent / "data" / "slurm"
DRY = ["-m", "hydra.sweeper.dry_run=true"]


def captured_cluster(qos=None) -> cl.Cluster:
    return cl.parse_cluster((DATA / "config-default.txt").read_text(), (DATA / "partition-default.txt").read_text(),
                            (DATA / "sinfo-nodes.txt").read_text())


def array_sizes(out: str) -> list[int]:
    return [int(n) for n in re.findall(r"^  array \d+: (\d+) tasks, --array=0-\d+%\d+$", out, re.M)]


def missing_lines(out: str) -> dict[str, str]:
    return dict(re.findall(r"^  (\w+): (not found at .*)$", out, re.M))


def total_line(out: str) -> list[str]:
    return next(line for line in out.splitlines() if line.startswith("  total")).split()


@pytest.mark.parametrize("launcher", ["basic", "slurm"])
def test_paper_dry_run_plans_2700_runs_lists_missing_datasets_and_writes_nothing(asym_train, tmp_path, monkeypatch,
                                                                                 launcher):
    monkeypatch.setattr(slurm, "read_cluster", captured_cluster)
    extra = ["hydra/launcher=slurm"] if launcher == "slurm" else []
    res = asym_train(*DRY, "+sweep=paper", *extra, f"data.root={tmp_path / 'no-data'}")
    assert res.returncode == 0 and "error:" not in res.stderr, res.stderr[-2000:]
    out = res.stdout
    assert "plan: 2700 runs in 2700 jobs; 15 datasets; tables 2, 3, 4c1, 4c2, 5" in out
    assert f"missing datasets: {len(PAPER_DATASETS)} of {len(PAPER_DATASETS)}" in out
    assert sorted(missing_lines(out)) == sorted(PAPER_DATASETS), "one line per missing dataset"
    assert all(len(line) < 250 for line in out.split("sbatch script")[0].splitlines()), "short lines"
    assert "already done: 0 of 2700 runs" in out
    net, runs, steps, cpu_h, gpu_h = total_line(out)
    assert (runs, gpu_h) == ("2700", "unknown") and float(cpu_h.replace(",", "")) > 0
    # per dataset 180 runs: 175 at batch 100 for 65 epochs, uSF+BM's 5 large-batch runs at 100 for 3 epochs, then 500
    n_train = [study.split_sizes(d)[0] for d in PAPER_DATASETS]
    assert int(steps.replace(",", "")) == sum(175 * 65 * math.ceil(n / 100) + 5 * (3 * math.ceil(n / 100) +
                                                                                  62 * math.ceil(n / 500)) for n in n_train)
    if launcher == "slurm":  # the whole paper in arrays within SLURM's default MaxArraySize=1001
        assert array_sizes(out) == [1001, 1001, 698]
        assert "3 job arrays of at most 1001 tasks (MaxArraySize=1001)" in out
        assert re.findall(r"^#SBATCH --array=(\S+)$", out, re.M) == ["0-1000%256"]
    else:
        assert "in-process: 2700 jobs, one at a time" in out
    assert list(tmp_path.iterdir()) == [], "a dry run wrote something (sweep dir, runs.json, mlflow.db)"


@pytest.mark.parametrize("swept", [["train.epochs=1,3"], ["train.batch_size=50,100", "train.epochs=2"],
                                   ["train.select_on=test,val", "train.epochs=2"]])
def test_a_sweep_over_the_protocol_prices_each_run_under_its_own(asym_train, tmp_path, swept):
    """``train.*`` swept: each run's steps under its own protocol (it used to price every run under the sweep's
    first-composed ``train`` config). Digits: 1,257 training images."""
    res = asym_train(*DRY, "model=SGD", "dataset=digits", "train=demo", *swept,
                     f"tracking.uri=sqlite:///{tmp_path}/m.db")
    assert res.returncode == 0, res.stderr[-2000:]
    key, values = swept[0].split("=")
    fixed = dict(o.split("=") for o in swept[1:])
    demo = asdict(Protocol(epochs=4, lr_steps=[3], large_batch_after=2))  # conf/train/demo.yaml
    expected = 0
    for v in values.split(","):
        proto = {**demo, **{k.split(".")[1]: int(x) for k, x in fixed.items()}}
        field = key.split(".")[1]
        proto[field] = v if field == "select_on" else int(v)
        run = {"model": "SGD", "procedure": "standard"}
        expected += cost.run_work(run, proto, study.split_sizes("digits")).train_steps
    assert int(total_line(res.stdout)[2].replace(",", "")) == expected, res.stdout


def test_dry_run_on_the_local_pool_and_the_alias_of_the_slurm_key(asym_train, tmp_path, monkeypatch):
    monkeypatch.setattr(slurm, "read_cluster", captured_cluster)
    sweep = ["model=SGD,BN", "lr_mult=10,1", "dataset=digits,mnist", f"data.root={tmp_path / 'no-data'}"]
    local = asym_train(*DRY, *sweep, "hydra/launcher=local", "hydra.launcher.workers=3")
    assert local.returncode == 0, local.stderr[-2000:]
    assert "local pool: 8 jobs, 3 at a time (CPU, 1 thread each)" in local.stdout
    assert list(missing_lines(local.stdout)) == ["mnist"] and "missing datasets: 1 of 2" in local.stdout
    alias = asym_train("-m", *sweep, "hydra/launcher=slurm", "hydra.launcher.dry_run=true",
                       "hydra.launcher.runs_per_task=3")
    assert alias.returncode == 0, alias.stderr[-2000:]
    assert "SLURM: 8 jobs in 3 array tasks (runs_per_task=3), 1 job array" in alias.stdout
    assert array_sizes(alias.stdout) == [3] and "--array=0-2%3" in alias.stdout
    assert list(tmp_path.iterdir()) == []


def test_data_present_but_not_prepared_is_named_and_nothing_is_decoded_or_cached(asym_train, tmp_path):
    """A real sweep prepares every dataset's tensor cache first; the dry run only says it would (nothing written)."""
    import numpy as np
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savez(data / "feat.npz", x_train=rng.normal(size=(30, 12)), y_train=np.arange(30) % 3,
             x_test=rng.normal(size=(9, 12)), y_test=np.arange(9) % 3)
    work = tmp_path / "work"
    work.mkdir()
    res = asym_train(*DRY, "model=SGD", f"dataset=digits,npz:{data / 'feat.npz'}", cwd=work)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"not prepared yet: npz:{data / 'feat.npz'} — decoded into the tensor cache before the sweep starts" \
        in res.stdout and "datasets: all 2 found" in res.stdout
    assert f"not estimated (size unknown until read): npz:{data / 'feat.npz'}" in res.stdout
    assert list(work.iterdir()) == [] and not (tmp_path / "cache").exists(), "the dry run decoded or cached"


def test_dry_run_counts_what_the_store_has_done_and_costs_only_the_rest(asym_train, tmp_path):
    """Two of the four runs are finished in the store: the dry run says so, and costs the other two."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = ["model=SGD,BN", "lr_mult=10,1", "dataset=digits", "train=demo", f"tracking.uri={uri}"]
    proto = asdict(Protocol(epochs=4, lr_steps=[3], large_batch_after=2))  # train=demo's protocol
    for model, mult in (("SGD", 10.0), ("BN", 1.0)):
        run = {"model": model, "dataset": "digits", "lr_mult": mult, "freeze": "none", "procedure": "standard", "seed": 0}
        t = tracking.RunTracker(uri, tracking.DEFAULT_EXPERIMENT, run, proto, {})
        t.start()
        tracking.client(uri).set_tag(t.run_id, tracking.STATUS_TAG, "finished")
    before = sorted(p.name for p in tmp_path.iterdir())
    res = asym_train(*DRY, *sweep)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "already done: 2 of 4 runs" in res.stdout
    assert "estimated cost of the 2 runs to do" in res.stdout
    # digits: 1,257 training images, 4 epochs at batch 100 → 13 steps an epoch, 52 a run, two runs
    assert total_line(res.stdout)[1:3] == ["2", "104"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert len(tracking.runs_frame(uri)) == 2, "the dry run logged to MLflow"


def test_dry_run_creates_no_experiment_on_a_tracking_server(asym_train, tmp_path, mlflow_server):
    exp = "dry-run-must-not-create-this"
    res = asym_train(*DRY, "model=SGD", "lr_mult=10,1", "dataset=digits", f"tracking.uri={mlflow_server}",
                     f"tracking.experiment={exp}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "already done: 0 of 2 runs" in res.stdout
    assert tracking.client(mlflow_server).get_experiment_by_name(exp) is None
    assert list(tmp_path.iterdir()) == []


def test_without_slurm_commands_the_dry_run_assumes_slurms_defaults(asym_train, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    res = asym_train(*DRY, "model=SGD", "lr_mult=10,1,0.1", "dataset=digits", "hydra/launcher=slurm")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "cluster not read (sbatch/scontrol/sinfo/squeue not found" in res.stdout
    assert "assuming SLURM's defaults MaxArraySize=1001" in res.stdout and array_sizes(res.stdout) == [3]


# ------------------------------------------------------------------------------------------------ the cost

PAPER = asdict(Protocol())


@pytest.mark.parametrize("run,sizes,steps,units,forward", [
    # MNIST, 65 epochs at batch 100: 600 steps an epoch; 66 evaluations of 10,000 images
    ({"model": "SGD"}, (60000, 10000), 65 * 600, 65 * 600, 66 * 100),
    # BN: 20 calibration batches of 100 after each epoch
    ({"model": "BN"}, (60000, 10000), 65 * 600, 65 * 600, 66 * 100 + 65 * 20),
    # uSF+BM's large-batch procedure: 3 epochs at 100, then 62 at 500 — fewer steps, the same samples
    ({"model": "uSF+BM", "procedure": "large_batch"}, (60000, 10000), 3 * 600 + 62 * 120, 65 * 600, 66 * 100),
    # Caltech-101: 3,060 images → 31 steps an epoch (the last of 60 images counts as a whole step)
    ({"model": "SGD"}, (3060, 1020), 65 * 31, 65 * 31, 66 * 10.2),
])
def test_the_work_of_a_run(run, sizes, steps, units, forward):
    w = cost.run_work({"procedure": "standard", **run}, PAPER, sizes)
    assert w.train_steps == steps and w.step_units == pytest.approx(units) and w.forward_units == pytest.approx(forward)


def test_select_on_val_trains_on_less_and_evaluates_the_holdout_too():
    w = cost.run_work({"model": "SGD"}, {**PAPER, "select_on": "val", "val_fraction": 0.1}, (60000, 10000))
    assert w.train_steps == 65 * 540 and w.forward_units == pytest.approx(66 * (10000 + 6000) / 100)


def test_hours_from_the_cost_table():
    table = ("device,arch,kind,threads,train_step_s,eval_s_per_100,machine\n"
             "cpu,mnist,SGD,1,0.02,0.004,test cpu\ncpu,mnist,uSF+BN+BM,1,0.03,0.005,test cpu\n")
    entries = [{"run": {"model": "SGD", "dataset": "mnist", "procedure": "standard"}},
               {"run": {"model": "uSF+BN+BM", "dataset": "mnist", "procedure": "standard"}},
               {"run": {"model": "SGD", "dataset": "npz:/x.npz", "procedure": "standard"}}]
    est = cost.estimate(entries, PAPER, cost.read_costs(table))
    sgd = (65 * 600 * 0.02 + 66 * 100 * 0.004) / 3600
    bn = (65 * 600 * 0.03 + (66 * 100 + 65 * 20) * 0.005) / 3600
    assert est.runs == {"mnist": 2} and est.steps == {"mnist": 2 * 65 * 600}
    assert est.total_hours("cpu") == pytest.approx(sgd + bn)
    assert est.total_hours("cuda") is None and est.unsized == ["npz:/x.npz"]


@pytest.mark.parametrize("model,kind", [("SGD", "SGD"), ("uSF+BM", "SGD"), ("RndF", "SGD"), ("BN", "uSF+BN+BM"),
                                        ("frSF-p50+BN+BM", "uSF+BN+BM"), ("brSF+BN+BM", "brSF+BN+BM"),
                                        ("brSF-p25+BN+BM", "brSF+BN+BM")])
def test_each_model_costs_as_its_measured_kind(model, kind):
    assert cost.cost_kind(model) == kind


def test_the_committed_cost_table_covers_every_net_and_kind():
    from asym.data import DATASETS
    table = cost.read_costs()
    for arch in {d.arch for d in DATASETS.values()}:
        for kind in cost.KINDS:
            c = table.get("cpu", arch, kind)
            assert c is not None and c.train_step_s > 0 and c.eval_s_per_100 > 0, (arch, kind)
    for name in DATASETS:
        n_train, n_test = study.split_sizes(name)
        assert n_train > 0 and n_test > 0
    assert study.split_sizes("caltech101") == (102 * 30, 102 * 10) and study.split_sizes("folder:/x") is None
    assert math.isclose(study.split_sizes("digits")[0] / 1797, 0.7, abs_tol=0.001)
