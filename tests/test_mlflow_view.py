"""What the MLflow UI shows about a run: its dataset (an MLflow dataset input), a one-line description of its
model (MLflow's note), the tables it feeds and its protocol's hash; MLflow's system metrics when asked."""
import os
import subprocess
import uuid
from dataclasses import asdict
from importlib import resources

import pytest
import yaml

from asym import data, study, tracking
from asym.models import parse_model
from asym.protocol import Protocol


def paper_models() -> set[str]:
    """Every model label the paper's tables print (asym.study), as printed (BM1 as well as BM)."""
    return {c.partition("/")[0] for t in study.TABLES.values() for c in t.columns}


def test_every_model_of_the_paper_is_described_from_its_parse():
    labels = paper_models() | {"uSF+BN+BM3", "RndF", "frSF-p25+BN+BM"}
    assert len(labels) > 20
    described = {label: tracking.describe_model(label) for label in labels}
    assert len({parse_model(l).label for l in labels}) == len(set(described.values())), "two models read the same"
    assert described["uSF+BN+BM"] == ("uSF+BN+BM: feedback V = sign(W); batch normalisation without affine; "
                                      "Batch Manhattan setting 1")
    assert described["BN+BM"].startswith("BN+BM: feedback V = W") and "learnable scale/shift" in described["BN+BM"]
    assert "probability 0.5" in described["brSF-p50+BN+BM"] and "redrawn every mini-batch" in described["brSF-p50+BN+BM"]
    assert "probability 0.25" in described["frSF-p25+BN+BM"] and "drawn once" in described["frSF-p25+BN+BM"]
    assert "N(0, 0.05²)" in described["RndF"] and "no batch normalisation" in described["RndF"]
    assert described["SGD"].endswith("SGD with momentum (update setting 0)")
    assert described["uSF+BN+BM3"].endswith("Batch Manhattan setting 3")
    assert tracking.describe_model("BM1") == described["BM"]  # the label's parse, not its spelling


def test_tables_and_protocol_tags():
    paper, demo = asdict(Protocol()), asdict(Protocol(epochs=4, lr_steps=[2, 3]))
    tags = tracking.view_tags({"model": "brSF-p50+BN+BM", "freeze": "none", "procedure": "standard"}, paper)
    assert tags[tracking.TABLES_TAG] == "3"
    assert tracking.view_tags({"model": "SGD", "freeze": "none"}, paper)[tracking.TABLES_TAG] == "2,3,4c1,5"
    assert tracking.view_tags({"model": "SGD", "freeze": "top"}, paper)[tracking.TABLES_TAG] == "4c2"
    assert tags[tracking.PROTOCOL_TAG] == tracking.protocol_hash(paper) != tracking.protocol_hash(demo)
    clamped = tracking.describe_run({"model": "SGD", "freeze": "bottom", "procedure": "standard"}, paper)
    assert clamped.endswith("clamped: last layer frozen at its random init")
    large = tracking.describe_run({"model": "uSF+BM", "freeze": "none", "procedure": "large_batch"}, paper)
    assert large.endswith("batch 100 for 3 epochs, then 500")


@pytest.mark.slow
def test_runs_carry_dataset_description_tables_and_system_metrics(mlflow_server, tmp_path):
    exp, root = f"view-{uuid.uuid4().hex[:8]}", tmp_path / "runs"
    where = [f"tracking.uri={mlflow_server}", f"tracking.experiment={exp}", f"output_root={root}"]
    env = {**os.environ, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}
    single = subprocess.run(["asym-train", "model=uSF+BN+BM", "dataset=digits", "train=demo", "train.epochs=2",
                             "tracking.system_metrics=true", *where], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    group = subprocess.run(["asym-train", "-m", "engine=group", "model=SGD", "lr_mult=10,1", "dataset=digits",
                            "train=demo", "train.epochs=1", *where], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
    assert group.returncode == 0, group.stderr[-3000:]
    c = tracking.client(mlflow_server)
    runs = {r.info.run_name: r for r in c.search_runs([c.get_experiment_by_name(exp).experiment_id])
            if not tracking.is_sweep(r)}
    assert set(runs) == {"uSF+BN+BM ×1 · Digits", "SGD ×10 · Digits", "SGD ×1 · Digits"}
    digest = tracking.dataset_digest(data.load("digits", str(tmp_path / "data"), seed=0))
    for name, run in runs.items():
        inputs = run.inputs.dataset_inputs
        assert len(inputs) == 1, name
        ds = inputs[0].dataset
        assert (ds.name, ds.digest, ds.source_type) == ("digits", digest, "code"), name
        assert "sklearn.datasets.load_digits" in ds.source
        assert run.data.tags[tracking.NOTE_TAG] == tracking.describe_model(run.data.tags["model"])
        assert run.data.tags[tracking.PROTOCOL_TAG] == tracking.protocol_hash(
            {**asdict(Protocol()), "epochs": 2 if "uSF" in name else 1, **demo_protocol_overrides()})
    assert runs["uSF+BN+BM ×1 · Digits"].data.tags[tracking.TABLES_TAG] == "2,4c1,5"
    assert runs["SGD ×1 · Digits"].data.tags[tracking.TABLES_TAG] == "2,3,4c1,5"
    # "Table 3, this protocol" is one filter
    hits = c.search_runs([runs["SGD ×1 · Digits"].info.experiment_id], filter_string=(
        f"tags.tables LIKE '%3%' AND tags.protocol_hash = '{runs['SGD ×1 · Digits'].data.tags['protocol_hash']}'"))
    assert {r.info.run_name for r in hits} == {"SGD ×10 · Digits", "SGD ×1 · Digits"}
    # system metrics: only where asked (tracking.system_metrics=true), off by default
    assert "system/cpu_utilization_percentage" in runs["uSF+BN+BM ×1 · Digits"].data.metrics
    assert not [k for k in runs["SGD ×1 · Digits"].data.metrics if k.startswith("system/")]


def demo_protocol_overrides() -> dict:
    """conf/train/demo.yaml's protocol keys (the demo shrinks the paper's schedule)."""
    demo = yaml.safe_load((resources.files("asym.conf") / "train" / "demo.yaml").read_text())
    return {k: v for k, v in demo.items() if k in Protocol.__dataclass_fields__ and k != "epochs"}


# ------------------------------------------------------------------------------------- the experiment and its runs


def test_the_experiment_says_what_it_is_and_an_old_one_is_updated(tmp_path):
    """A new experiment is created as MLflow's "model training" kind with a description; one made before (no tags)
    gets both; a description a user wrote is kept."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = tracking.client(uri)
    exp_id = tracking.ensure_experiment(uri, "new")
    tags = c.get_experiment(exp_id).tags
    assert tags.get("mlflow.experimentKind") == "custom_model_development"  # MLflow's names: the UI reads these
    note = tags["mlflow.note.content"]
    assert "How Important Is Weight Symmetry in Backpropagation?" in note and "asym-tables" in note and \
        "--log-to-mlflow" in note and "asym.kind = sweep" in note
    old = c.create_experiment("old")  # as an earlier asym made it: no kind, no description
    assert tracking.ensure_experiment(uri, "old") == old
    assert {k: c.get_experiment(old).tags.get(k) for k in ("mlflow.experimentKind", "mlflow.note.content")} == \
        {"mlflow.experimentKind": "custom_model_development", "mlflow.note.content": note}
    c.set_experiment_tag(old, "mlflow.note.content", "my notes")
    tracking.ensure_experiment(uri, "old")
    assert c.get_experiment(old).tags["mlflow.note.content"] == "my notes"
    assert tracking.experiment_url(uri, old) == f"http://127.0.0.1:5000/#/experiments/{old}/runs?workflowType=machine_learning"
    assert tracking.experiment_url("http://host:5055/", "7") == "http://host:5055/#/experiments/7/runs?workflowType=machine_learning"


@pytest.mark.parametrize("run,name", [
    ({"model": "frSF+BN+BM", "dataset": "digits", "lr_mult": 100.0}, "frSF+BN+BM ×100 · Digits"),
    ({"model": "BM1", "dataset": "cifar10", "lr_mult": 0.01}, "BM ×0.01 · CIFAR"),
    ({"model": "uSF+BM", "dataset": "caltech256_101", "lr_mult": 1.0, "procedure": "large_batch"},
     "uSF+BM ×1 · large_batch · Cal256-101"),
    ({"model": "RndF+BN+BM", "dataset": "mnist", "lr_mult": 10.0, "freeze": "bottom", "seed": 2},
     "RndF+BN+BM ×10 · bottom · seed 2 · MNIST"),
])
def test_run_names_lead_with_the_model_and_the_multiplier(run, name):
    run = {"freeze": "none", "procedure": "standard", "seed": 0, **run}
    assert tracking.run_name(run) == name


def test_run_fields_are_params_of_the_run_not_of_the_jobs_config(tmp_path):
    """model (its canonical label), dataset, lr_mult, seed, procedure and freeze are params (columns in the runs
    table and in Compare), each member of a run group with its own lr_mult, whatever the job's config says."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = {"model": "BM1", "lr_mult": 1.0, "lr_mults": "[10.0, 1.0]", "train.epochs": 4}  # a group's job config
    run = {"model": "BM1", "dataset": "digits", "lr_mult": 10.0, "freeze": "none", "procedure": "large_batch",
           "seed": 3}
    t = tracking.RunTracker(uri, "e", run, asdict(Protocol()), config)
    t.start()
    params = tracking.client(uri).get_run(t.run_id).data.params
    assert {k: params[k] for k in ("model", "dataset", "lr_mult", "seed", "procedure", "freeze")} == \
        {"model": "BM", "dataset": "digits", "lr_mult": "10", "seed": "3", "procedure": "large_batch", "freeze": "none"}
    assert params["train.epochs"] == "4"  # the rest of the config stays


def test_sweep_runs_are_parents_not_trained_runs(tmp_path, monkeypatch):
    """A sweep's run (tag asym.kind=sweep) is the parent of the runs its jobs start (they learn its id from the
    environment the sweeper sets), and never a trained run for tables, status or skip-done."""
    from asym.analysis.tables import load_runs
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = tracking.client(uri)
    exp_id = tracking.ensure_experiment(uri, "e")
    sweep = c.create_run(exp_id, run_name="sweep · 2 runs", tags={"asym.kind": "sweep", "status": "finished"})
    monkeypatch.setenv("ASYM_SWEEP_RUN_ID", sweep.info.run_id)
    for mult in (10.0, 1.0):
        run = {"model": "SGD", "dataset": "digits", "lr_mult": mult, "freeze": "none", "procedure": "standard", "seed": 0}
        t = tracking.RunTracker(uri, "e", run, {"epochs": 1}, {})
        t.start()
        assert c.get_run(t.run_id).data.tags["mlflow.parentRunId"] == sweep.info.run_id
        c.set_tag(t.run_id, tracking.STATUS_TAG, "finished")
    monkeypatch.delenv("ASYM_SWEEP_RUN_ID")
    table = tracking.runs_table(uri, "e")
    assert len(table) == 2 and set(table["parent_run_id"]) == {sweep.info.run_id}
    assert len(tracking.find_runs(c, exp_id)) == 2 and len(tracking.runs_frame(uri, "e")) == 2
    assert len(load_runs(uri, "e")) == 2
    assert [r.info.run_id for r in tracking.sweep_runs(uri, "e")] == [sweep.info.run_id]


SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


@pytest.mark.slow
def test_a_dry_run_makes_no_sweep_run(tmp_path):
    """A dry run shows the sbatch script and submits nothing: no sweep run either."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    res = subprocess.run(["asym-train", "-m", "model=SGD,BN", "dataset=digits", "train=demo", *SLURM,
                          "hydra.launcher.dry_run=true", f"tracking.uri={uri}", f"output_root={tmp_path}/runs"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "#SBATCH" in res.stdout, res.stderr[-3000:]
    assert tracking.sweep_runs(uri, tracking.DEFAULT_EXPERIMENT) == []


@pytest.mark.slow
def test_slurm_jobs_make_their_runs_children_of_the_sweep(slurm, tmp_path):
    """The SLURM jobs run in other processes on the cluster: they learn the sweep run's id all the same. A sweep that is
    only submitted ends its run 'queued' (its tables come later, with --log-to-mlflow)."""
    from conftest import wait_until
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    res = subprocess.run(["asym-train", "-m", "model=SGD", "lr_mult=10,1", "dataset=digits", "train=demo",
                          "train.epochs=1", *SLURM, f"tracking.uri={uri}", f"output_root={tmp_path}/runs"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "submitted 2 runs as SLURM array" in res.stdout + res.stderr, res.stderr[-3000:]
    [sweep] = tracking.sweep_runs(uri, tracking.DEFAULT_EXPERIMENT)
    assert sweep.data.tags[tracking.STATUS_TAG] == "queued"

    def done() -> bool:
        table = tracking.runs_table(uri)
        return table is not None and len(table) == 2 and set(table["status"]) == {"finished"}
    wait_until(done, 300, "2 finished runs")
    assert set(tracking.runs_table(uri)["parent_run_id"]) == {sweep.info.run_id}
