"""Hydra configs and sweeps: grid sizes, the paper's union, the real ``asym-train -m`` with MLflow, skip-done, bad input."""
import csv
import io
import subprocess

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

import asym.cli  # registers the schema, the sweep group and the sweeper  # noqa: F401
from asym import tracking
from asym.data import PAPER_DATASETS
from asym.models import parse_model
from asym.protocol import CLAMPED_MODELS, LR_MULTIPLIERS, TWO_PROCEDURE_MODELS, procedures_for
from asym.launcher.plan import job_values, select_jobs
from conftest import assert_one_error_line, tiny_npz

TABLES = {"table2": 11 * 75 + 75, "table3": 11 * 75, "table4_c1": 8 * 75, "table4_c2": 4 * 2 * 75, "table5": 8 * 75}


def sweep_jobs(name: str, *overrides: str) -> list[dict]:
    GlobalHydra.instance().clear()
    with initialize_config_module("asym.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"+sweep={name}", *overrides], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    jobs = select_jobs(BasicSweeper.split_arguments(parsed, None)[0], dict(sweeper.only_for_models))
    return [job_values(job) for job in jobs]


def identity(job: dict) -> tuple:
    return (parse_model(job["model"]).label, job["dataset"], float(job["lr_mult"]),
            job.get("freeze", "none"), job.get("procedure", "standard"))


@pytest.mark.parametrize("name,size", TABLES.items())
def test_each_table_sweep_has_the_papers_run_count_without_duplicates(name, size):
    jobs = sweep_jobs(name)
    assert len(jobs) == size
    assert len({identity(j) for j in jobs}) == size


def test_paper_is_the_union_without_duplicates():
    paper = [identity(j) for j in sweep_jobs("paper")]
    union = set().union(*({identity(j) for j in sweep_jobs(t)} for t in TABLES))
    assert len(paper) == len(set(paper)), "the paper sweep launches a run twice"
    assert set(paper) == union
    assert len(paper) == 2700  # 27 models × 75 + uSF+BM's second procedure × 75 + C2's 8 columns × 75
    # SGD appears in every table but is trained once per (dataset, lr)
    assert sum(1 for p in paper if p[0] == "SGD" and p[3] == "none") == 75


def test_only_uSF_BM_has_two_procedures_and_only_C2_models_are_clamped():
    jobs = [identity(j) for j in sweep_jobs("paper")]
    assert {j[0] for j in jobs if j[4] == "large_batch"} == {"uSF+BM"}
    assert {j[0] for j in jobs if j[3] != "none"} == {"SGD", "RndF", "RndF+BN+BM", "uSF+BN+BM"}


@pytest.mark.parametrize("name", [*TABLES, "paper"])
def test_sweep_files_list_exactly_the_papers_facts_from_asym(name):
    """The sweeps keep readable lists; they must equal the one source of truth in asym.protocol / asym.data."""
    jobs = [identity(j) for j in sweep_jobs(name)]
    assert {j[1] for j in jobs} == set(PAPER_DATASETS)
    assert {j[2] for j in jobs} == {float(m) for m in LR_MULTIPLIERS}
    for model, _, _, freeze, procedure in jobs:
        assert procedure in procedures_for(model, freeze)
        assert freeze == "none" or model in CLAMPED_MODELS
    if name in ("paper", "table2"):
        assert {j[0] for j in jobs if j[4] == "large_batch"} == {parse_model(m).label for m in TWO_PROCEDURE_MODELS}
    if name in ("paper", "table4_c2"):
        assert {j[0] for j in jobs if j[3] != "none"} == {parse_model(m).label for m in CLAMPED_MODELS}


def test_private_apis_we_rely_on_still_exist():
    """Where no public API does the job we use a private one (each says why in a comment): fail loudly here
    when a Hydra or submitit release moves them, not in a user's sweep."""
    import inspect

    import submitit
    from hydra._internal.utils import get_args_parser
    from submitit.slurm.slurm import _make_sbatch_string

    assert hasattr(BasicSweeper, "split_arguments") and "overrides" in get_args_parser().parse_args(["a=1"])
    # asym.overrides.session sets Hydra up as hydra.main does; plan applies a job's run keys with Hydra's code
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, \
        detect_calling_file_or_module_from_task_function
    assert {"task_name", "config_search_path"} <= set(inspect.signature(Hydra.create_main_hydra2).parameters)
    assert list(inspect.signature(create_automatic_config_search_path).parameters) == \
        ["calling_file", "calling_module", "config_path"]
    assert detect_calling_file_or_module_from_task_function(test_private_apis_we_rely_on_still_exist)[1] == __name__
    assert list(inspect.signature(ConfigLoaderImpl._apply_overrides_to_config).parameters) == ["overrides", "cfg"]
    assert {"command", "folder", "map_count"} <= set(inspect.signature(_make_sbatch_string).parameters)
    local = submitit.AutoExecutor(folder="/tmp/asym-pin", cluster="local")._executor
    local.update_parameters(visible_gpus=(0,))
    assert local.parameters["visible_gpus"] == (0,)
    assert hasattr(submitit.SlurmExecutor, "_submitit_command_str")


def test_demo_sweep_is_table2_on_digits_at_three_multipliers():
    jobs = sweep_jobs("demo")
    assert len(jobs) == 11 * 3 + 3
    assert {j["dataset"] for j in jobs} == {"digits"}


def asym_train_process(cwd, *args, timeout=600):
    return subprocess.run(["asym-train", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_sweep_end_to_end_then_skips_everything(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["-m", "+sweep=demo", "train.epochs=2", "model=SGD,uSF+BM", "lr_mult=10", f"tracking.uri={uri}",
            f"output_root={tmp_path}/runs"]
    first = asym_train_process(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    df = tracking.runs_frame(uri)
    assert len(df) == 3  # SGD, uSF+BM, uSF+BM large_batch
    assert set(df["tags.status"]) == {"finished"} and set(df["status"]) == {"FINISHED"}
    assert set(df["tags.model"]) == {"SGD", "uSF+BM"}
    assert sorted(df["tags.procedure"]) == ["large_batch", "standard", "standard"]
    assert set(df["tags.mlflow.runName"]) == {"Digits · SGD · lr×10", "Digits · uSF+BM · lr×10",
                                              "Digits · uSF+BM · lr×10 · large_batch"}
    assert df["tags.config_hash"].nunique() == 3 and df["tags.git_commit"].notna().all()
    c = tracking.client(uri)
    for run_id in df["run_id"]:
        for metric in tracking.EPOCH_METRICS:
            steps = [m.step for m in c.get_metric_history(run_id, metric)]
            want = {"val_error": [0, 1, 2], "lr": [0, 1, 2], "holdout_error": []}.get(metric, [1, 2])  # select_on=test
            assert steps == want, (metric, steps)
        artifacts = {a.path for a in c.list_artifacts(run_id)}
        assert {"result.json", "config.yaml"} <= artifacts
    assert (df["metrics.best_val_error"] < 90).all()

    checkpoints = sorted((tmp_path / "runs").rglob("checkpoint.pt"))
    assert len(checkpoints) == 3
    mtimes = [p.stat().st_mtime_ns for p in checkpoints]
    again = asym_train_process(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skip ") + again.stdout.count("skip ") == 3
    assert len(tracking.runs_frame(uri)) == 3, "a rerun created MLflow runs"
    assert [p.stat().st_mtime_ns for p in checkpoints] == mtimes, "a rerun retrained a finished run"


@pytest.mark.slow
def test_failing_run_fails_the_sweep_and_ends_FAILED_in_mlflow(tmp_path):
    # a run that raises (here: a device this machine does not have) must not be swallowed by Hydra
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    res = asym_train_process(tmp_path, "-m", "model=SGD", "dataset=digits", "lr_mult=1,10", "train.epochs=1",
                     "train.device=cuda:99", f"tracking.uri={uri}", f"output_root={tmp_path}/runs")
    assert res.returncode != 0
    assert "2 of 2 runs failed" in res.stderr
    df = tracking.runs_frame(uri)
    assert len(df) == 2 and set(df["status"]) == {"FAILED"} and set(df["tags.status"]) == {"failed"}


@pytest.mark.parametrize("override,message", [
    ("model=uSF+XX", "unknown model label 'uSF+XX'"),
    ("modle=SGD", "unknown config key 'modle' (did you mean 'model'?)"),
    ("train.epohcs=3", "unknown config key 'train.epohcs'"),
    ("lr_mult=-1", "lr_mult must be a positive number"),
    ("lr_mult=ten", "bad value for lr_mult"),
    ("dataset=imagenet", "unknown dataset 'imagenet'"),
    ("+sweep=table9", "no sweep config 'table9'"),
    ("freeze=middle", "freeze must be one of"),
])
@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_bad_input_is_one_line_and_nonzero(asym_train, tmp_path, override, message, mode):
    args = (["-m"] if mode == "multirun" else []) + [override, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                                                    f"output_root={tmp_path}/runs"]
    assert_one_error_line(asym_train(*args), message, tmp_path)   # no mlflow.db, no runs/ (nor runs/logs/<time>)


@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_missing_dataset_stops_a_sweep_before_any_run(asym_train, tmp_path, mode):
    datasets = "dataset=digits,mnist,timit80" if mode == "multirun" else "dataset=mnist"
    res = asym_train(*(["-m"] if mode == "multirun" else []), "model=SGD", datasets, f"data.root={tmp_path}/nodata",
                     f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"output_root={tmp_path}/runs")
    assert_one_error_line(res, "dataset 'mnist' not found", tmp_path)
    if mode == "multirun":
        assert "dataset 'timit80' not found" in res.stderr and "asym-data status" in res.stderr  # all at once
    else:
        assert "asym-data download mnist" in res.stderr


@pytest.mark.slow
def test_sweep_plan_is_hydras_parse_and_matches_mlflow(tmp_path):
    """Hydra's grammar, not string splits: a quoted value with a space, '=', ',' and '+'; an escaped comma;
    ``++key=`` sweeps; ``choice(…)``. Every job's hash in runs.json is the config_hash of the MLflow run it made,
    and every planned run is distinct; the sweep ends with its tables."""
    import json
    odd = tiny_npz(tmp_path / "data" / "my data=1,+x.npz")
    comma = tiny_npz(tmp_path / "data" / "a,b.npz", seed=1)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    escaped = str(comma).replace(",", "\\,")
    res = asym_train_process(tmp_path, "-m", "model=SGD", f"dataset='npz:{odd}',npz:{escaped}", "++lr_mult=1,10",
                     "++seed=choice(0,1)", "train=demo", "train.epochs=1", f"tracking.uri={uri}",
                     f"output_root={tmp_path}/runs", "hydra.sweep.dir=sweep")
    assert res.returncode == 0, res.stderr[-3000:]
    planned = json.loads((tmp_path / "sweep" / "runs.json").read_text())["runs"]
    assert len(planned) == 8 and len({e["config_hash"] for e in planned}) == 8 and len({e["name"] for e in planned}) == 8
    assert {e["run"]["dataset"] for e in planned} == {f"npz:{odd}", f"npz:{comma}"}
    assert {(e["run"]["lr_mult"], e["run"]["seed"]) for e in planned} == {(1.0, 0), (1.0, 1), (10.0, 0), (10.0, 1)}
    df = tracking.runs_frame(uri)
    assert len(df) == 8 and set(df["tags.status"]) == {"finished"}
    by_hash = {h: (d, m, s) for h, d, m, s in zip(df["tags.config_hash"], df["tags.dataset"], df["tags.lr_mult"],
                                                   df["tags.seed"])}
    for e in planned:
        assert e["config_hash"] in by_hash, f"the plan's hash of {e['name']} is no MLflow run's"
        assert by_hash[e["config_hash"]] == (e["run"]["dataset"], str(e["run"]["lr_mult"]), str(e["run"]["seed"]))
    assert set(df["tags.mlflow.runName"]) == {e["name"] for e in planned}
    assert {n.split(" · ")[0] for n in df["tags.mlflow.runName"]} == {"my data=1,+x", "a,b"}
    # an ad-hoc sweep (no sweep file's ``tables``) ends with the tables its runs feed, its two seeds as mean ± std (n)
    assert "Table 2" in res.stdout and " ± " in res.stdout and " (2)" in res.stdout, res.stdout[-3000:]


@pytest.mark.parametrize("args,message", [
    (["+seed=0,1"], "'+seed' adds a key the config already has"),
    (["++lr_mult=-1,1"], "lr_mult must be a positive number"),
])
def test_add_prefixes_are_checked_like_plain_overrides(asym_train, tmp_path, args, message):
    res = asym_train("-m", *args, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"output_root={tmp_path}/runs")
    assert_one_error_line(res, message, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=local", "hydra.launcher.workers=2"]], ids=["basic", "local"])
def test_relative_paths_mean_the_launch_directory_with_chdir(tmp_path, launcher):
    """hydra.job.chdir=true: data (a relative npz: path), output_root, the sqlite URI and MLflow's artifacts all
    resolve against the launch directory; a relaunch creates no run; asym-tables there finds every run."""
    import os
    tiny_npz(tmp_path / "data" / "mine.npz")
    args = ["-m", "model=SGD,BN", "dataset=npz:data/mine.npz", "lr_mult=10", "train=demo", "train.epochs=1",
            "tracking.uri=sqlite:///mlflow.db", "output_root=runs", "hydra.job.chdir=true", *launcher]
    first = asym_train_process(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    df = tracking.runs_frame(uri)
    assert df is not None and len(df) == 2 and set(df["tags.status"]) == {"finished"}
    assert all(u.removeprefix("file://").startswith(f"{tmp_path}/mlruns/") for u in df["artifact_uri"]), list(df["artifact_uri"])
    strays = [p for p in (tmp_path / "runs" / "logs").rglob("*") if p.name in ("mlflow.db", "mlruns", "runs")]
    assert not strays, strays
    checkpoints = sorted((tmp_path / "runs").rglob("checkpoint.pt"))
    assert len(checkpoints) == 2 and all(p.parent.parent.parent.parent == tmp_path / "runs" for p in checkpoints)
    mtimes = [p.stat().st_mtime_ns for p in checkpoints]
    again = asym_train_process(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(tracking.runs_frame(uri)) == 2, "the relaunch created runs"
    assert [p.stat().st_mtime_ns for p in checkpoints] == mtimes, "the relaunch retrained a finished run"
    tables = subprocess.run(["asym-tables", "--table", "2", "--format", "csv"], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    assert tables.returncode == 0, tables.stderr
    rows = [r for r in csv.DictReader(io.StringIO(tables.stdout)) if r["table"] == "2" and r["dataset"] == "mine"]
    assert {r["model"] for r in rows if r["error"]} == {"SGD", "BN"}, tables.stdout


@pytest.mark.parametrize("args,message", [
    (["train.batch_size=0"], "train.batch_size must be a positive integer, got 0"),
    (["train=demo", "train.epochs=0"], "train.epochs must be a positive integer, got 0"),
    (["train.lr_steps=[60,50]"], "train.lr_steps must be strictly increasing positive epochs"),
    (["train.lr_steps=[0]"], "train.lr_steps must be strictly increasing positive epochs"),
    (["train.bn_alpha=0"], "train.bn_alpha must be in (0, 1]"),
    (["train.bn_alpha=1.5"], "train.bn_alpha must be in (0, 1]"),
    (["train.bn_batches=0"], "train.bn_batches must be a positive integer"),
    (["train.large_batch_size=-5"], "train.large_batch_size must be a positive integer"),
    (["train.base_lr=0"], "train.base_lr must be a positive number"),
    (["train.momentum=1"], "train.momentum must be in [0, 1)"),
    (["train.threads=-1"], "train.threads must be an integer ≥ 0"),
    (["train.device=gpu"], "train.device must be auto, cpu, cuda, cuda:N or mps"),
    (["train.epochs=${nope}"], "Interpolation key 'nope' not found"),
    (["train.amp=fp8"], "train.amp must be one of none, bf16, fp16"),
    (["engine=group", "train.amp=fp16"], "train.amp=fp16 needs engine=single"),
    (["train.compile=maybe"], "bad value for train.compile"),
    (["train.select_on=train"], "train.select_on must be one of test, val"),
    (["train.select_on=val", "train.val_fraction=1"], "train.val_fraction must be in (0, 0.5)"),
])
@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_bad_protocol_values_fail_before_anything_runs(asym_train, tmp_path, args, message, mode):
    """One error line, exit 2, no MLflow run, no run directory (batch_size=0 used to leave a FAILED run and a
    trace; epochs=0 'finished' a run that trained nothing)."""
    sweep = ["-m", "model=SGD,BN"] if mode == "multirun" else []
    res = asym_train(*sweep, "dataset=digits", *args, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                     f"output_root={tmp_path}/runs")
    assert_one_error_line(res, message, tmp_path)
