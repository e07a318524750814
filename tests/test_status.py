"""``asym-status``'s classification and the one rule for which MLflow run stands for a config hash: pure functions."""
import pytest

from asym import tracking
from asym.launcher.status import classify


@pytest.mark.parametrize("mlflow,scheduler,state", [
    ("finished", None, "finished"), ("diverged", "FAILED", "diverged"),    # MLflow's done wins over the scheduler
    ("finished", "RUNNING", "finished"),
    (None, "PENDING", "queued"), ("running", "REQUEUED", "queued"), (None, "SUSPENDED", "queued"),
    (None, "RUNNING", "running"), ("failed", "COMPLETING", "running"),
    (None, "COMPLETED", "unsynced"), ("running", "COMPLETED", "unsynced"), ("failed", "COMPLETED", "failed"),
    ("running", "CANCELLED", "failed"), (None, "TIMEOUT", "failed"), (None, "NODE_FAIL", "failed"),
    (None, "OUT_OF_MEMORY", "failed"),
    ("running", None, "running"), ("failed", None, "failed"), (None, None, "queued"),
    ("interrupted", None, "interrupted"), ("interrupted", "CANCELLED", "interrupted"),   # SIGINT/SIGTERM: honest
    ("interrupted", "TIMEOUT", "interrupted"), ("interrupted", "REQUEUED", "queued"),   # requeued: resumes
])
def test_classify_combines_mlflow_and_the_scheduler(mlflow, scheduler, state):
    assert classify(mlflow, scheduler) == state


@pytest.mark.parametrize("mlflow,scheduler,state", [
    (None, "RUNNING", "queued"), ("running", "RUNNING", "running"), ("failed", "RUNNING", "failed"),
    ("finished", "RUNNING", "finished"), ("failed", "COMPLETING", "failed"), (None, "PENDING", "queued"),
    ("running", "REQUEUED", "queued"), ("failed", "REQUEUED", "queued"), (None, "COMPLETED", "unsynced"),
    ("interrupted", "RUNNING", "running"), (None, "CANCELLED", "failed"),
])
def test_classify_a_run_in_a_task_of_several(mlflow, scheduler, state):
    """``runs_per_task`` > 1: a running task trains one of its runs at a time."""
    assert classify(mlflow, scheduler, in_turn=True) == state


@pytest.mark.parametrize("statuses,index", [
    ([], None), (["failed"], 0), (["failed", "finished"], 1), (["running", "diverged", "finished"], 2),
    (["failed", "running"], 1), (["diverged", "finished"], 1), (["finished", "finished"], 0),  # newest first
    ([None, "failed"], 1), ([None, None], 0), (["failed", "interrupted"], 1), (["interrupted", "running"], 1),
])
def test_one_run_stands_for_a_config_hash(statuses, index):
    assert tracking.stands_for(statuses) == index


def test_runs_table_keeps_the_run_that_stands_for_each_hash(tmp_path):
    """Two MLflow runs with one hash (a failed try, then a finished one): tables and status see the finished one."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = {"model": "SGD", "dataset": "digits", "lr_mult": 1.0, "freeze": "none", "procedure": "standard", "seed": 0}
    other = {**run, "lr_mult": 10.0}
    for r, status in ((run, "failed"), (run, "finished"), (other, "running")):
        t = tracking.RunTracker(uri, "e", r, {"epochs": 1}, {})
        t.start()
        tracking.client(uri).set_tag(t.run_id, tracking.STATUS_TAG, status)
    df = tracking.runs_table(uri, "e")
    assert len(df) == 2 and sorted(df["status"]) == ["finished", "running"]
    assert set(df.columns) >= {*tracking.RUN_TAGS, "status", "config_hash", "run_id", *tracking.SUMMARY_METRICS}


def test_classify_answers_in_run_statuses():
    from asym.record import RunStatus
    states = {classify(m, s, t) for m in (None, *RunStatus) for s in (None, "PENDING", "RUNNING", "COMPLETED", "FAILED")
              for t in (False, True)}
    assert all(type(s) is RunStatus for s in states) and states == set(RunStatus)


def test_run_statuses_keep_the_text_stored_tags_and_result_files_hold(tmp_path):
    """The enum is its text: stored MLflow tags and result.json files (plain strings) still read, and what is
    written is the same plain string as before."""
    import json

    from asym.record import DONE, RunStatus
    stored = ["finished", "diverged", "running", "queued", "interrupted", "failed", "unsynced"]
    assert [s.value for s in RunStatus] == stored
    for text in stored:
        s = RunStatus(text)
        assert s == text and hash(s) == hash(text) and str(s) == f"{s}" == "%s" % s == text
        assert json.dumps({"status": s}) == json.dumps({"status": text}) and {text: 1}[s] == 1
    assert {"finished", "diverged"} == set(DONE) and "diverged" in DONE
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = {"model": "SGD", "dataset": "digits", "lr_mult": 1.0, "freeze": "none", "procedure": "standard", "seed": 0}
    t = tracking.RunTracker(uri, "e", run, {"epochs": 1}, {})
    t.start()
    assert t.finish({"epochs": [], "status": RunStatus.DIVERGED, "best_val_error": 5.0}, tmp_path)
    tag = tracking.client(uri).get_run(t.run_id).data.tags[tracking.STATUS_TAG]
    assert type(tag) is str and tag == "diverged"
    assert list(tracking.runs_table(uri, "e")["status"]) == ["diverged"]


STATUS_MODULES = ["asym/tracking.py", "asym/train.py", "launcher/status.py", "analysis/tables.py"]


@pytest.mark.parametrize("path", STATUS_MODULES)
def test_status_code_names_run_statuses_by_the_enum(path):
    """No string literal spells a run status in the modules that write, classify or count them (a docstring
    may; a table column named ``diverged`` is a column, not a status)."""
    import ast
    from pathlib import Path

    from asym.record import RunStatus
    tree = ast.parse((Path(__file__).resolve().parents[1] / path).read_text())
    skip = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and n.body and isinstance(n.body[0], ast.Expr)}
    skip |= {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if k is not None}
    found = [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in skip
             and n.value in {s.value for s in RunStatus}]
    assert not found, f"{path}: status literals at {found}; use asym.record.RunStatus"
