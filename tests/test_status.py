"""``asym-status``'s classification and the one rule for which MLflow run stands for a config hash: pure functions;
and what submitit's job files and a plan's records say when the scheduler no longer knows a job."""
import json

import pytest

from asym import tracking
from asym.launcher.status import SCHEDULER_LOST as LOST
from asym.launcher.status import JobState, classify, report, result_strings, submitit_state, sweep_view


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
    states = {classify(m, s, t, loc) for m in (None, *RunStatus) for loc in (None, *RunStatus)
              for s in (None, "PENDING", "RUNNING", "COMPLETED", "FAILED", LOST) for t in (False, True)}
    # every state but "not submitted", which the plan says (a run SLURM never got), not its job
    assert all(type(s) is RunStatus for s in states) and states == set(RunStatus) - {RunStatus.NOT_SUBMITTED}


def test_run_statuses_keep_the_text_stored_tags_and_result_files_hold(tmp_path):
    """The enum is its text: stored MLflow tags and result.json files (plain strings) still read, and what is
    written is the same plain string as before."""
    import json

    from asym.record import DONE, RunStatus
    stored = ["finished", "diverged", "running", "queued", "interrupted", "failed", "unsynced", "lost",
              "not submitted"]
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


# ------------------------------------------------------- without accounting: lost, not queued (issue 22 item 3)

@pytest.mark.parametrize("mlflow,scheduler,local,state", [
    (None, LOST, None, "lost"), ("running", LOST, None, "lost"), ("failed", LOST, None, "failed"),
    (None, LOST, "failed", "failed"), ("finished", LOST, None, "finished"), (None, LOST, "finished", "unsynced"),
    (None, None, "finished", "unsynced"), ("running", None, "diverged", "unsynced"), (None, LOST, "interrupted",
                                                                                     "interrupted"),
    (None, "COMPLETED", "failed", "failed"), (None, "PENDING", None, "queued"),
])
def test_a_job_gone_without_a_result_is_lost_never_queued(mlflow, scheduler, local, state):
    assert classify(mlflow, scheduler, local=local) == state


def job_files(tmp_path, job_id: str, result=None, err: str = "", out: str = "") -> str:
    """A submitit job folder as submitit writes it (its own cloudpickle_dump); returns the folder pattern."""
    from submitit.core.utils import cloudpickle_dump
    d = tmp_path / ".submitit" / job_id
    d.mkdir(parents=True)
    if result is not None:
        cloudpickle_dump(result, d / f"{job_id}_0_result.pkl")
    (d / f"{job_id}_0_log.err").write_text(err)
    (d / f"{job_id}_0_log.out").write_text(out)
    return str(tmp_path / ".submitit" / "%j")


def test_submitit_files_say_what_became_of_a_job(tmp_path):
    from hydra.core.utils import JobReturn
    tb = "Traceback (most recent call last):\n  File …\nRuntimeError: run SGD ×10 · Digits failed: no cuda:99\n"
    folder = job_files(tmp_path, "7_0", ("success", [JobReturn(overrides=["model=SGD"])]))
    job_files(tmp_path, "7_1", ("error", tb))
    job_files(tmp_path, "7_2", err="epoch 1: ...\nslurmstepd: error: *** JOB 9 ON vm CANCELLED AT 2026-12-01T00:00:00 "
                                   "DUE TO TIME LIMIT ***\n")
    job_files(tmp_path, "7_3", out="[00:00:01] INFO asym: epoch 3: val error 5.1%\n")
    assert submitit_state(folder, "7_0") == JobState("COMPLETED", "", "submitit")
    assert submitit_state(folder, "7_1") == JobState("FAILED", "RuntimeError: run SGD ×10 · Digits failed: no cuda:99",
                                                     "submitit")
    s = submitit_state(folder, "7_2")
    assert s.state == "FAILED" and "DUE TO TIME LIMIT" in s.note
    assert submitit_state(folder, "7_3") == JobState(LOST, "[00:00:01] INFO asym: epoch 3: val error 5.1%", "submitit")
    assert submitit_state(folder, "7_4") == JobState(LOST, "", "submitit"), "never started: no folder at all"


def test_a_result_pickle_is_read_without_running_it(tmp_path):
    """A pickle whose object would run code when loaded: only its strings are read."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('ran')",))
    path = tmp_path / "r.pkl"
    path.write_bytes(pickle.dumps(("success", Boom())))
    assert result_strings(path, 1) == ["success"]


def write_plan(tmp_path, **doc):
    runs = [{"num": i, "config_hash": f"{i:x}" * 16, "name": f"run {i}", "tables": ["2"], "model": "SGD",
             "dataset": "digits", "run": {"model": "SGD", "dataset": "digits", "seed": 0}} for i in range(3)]
    (tmp_path / "runs.json").write_text(json.dumps({"tracking_uri": f"sqlite:///{tmp_path}/none.db", "experiment": "e",
                                                    "output_root": str(tmp_path / "runs"), "runs": runs, **doc}))


def test_runs_sbatch_refused_are_not_submitted_never_queued(tmp_path):
    reason = "sbatch: error: Batch job submission failed: Invalid job array specification"
    write_plan(tmp_path, jobs={}, scheduler="slurm", not_submitted={"reason": reason, "jobs": [0, 1, 2]})
    runs, _ = sweep_view(tmp_path)
    assert [r["state"] for r in runs] == ["not submitted"] * 3
    text = report(tmp_path, runs, not_submitted=reason)
    assert f"3 runs were not submitted ({reason})" in text and "not submitted" in text.splitlines()[3]


def test_a_run_done_by_its_record_is_unsynced_even_where_slurm_never_ran_it(tmp_path):
    """A run finished by an earlier sweep (its result.json) is not 'not submitted' in a refused one."""
    write_plan(tmp_path, jobs={}, scheduler="slurm")
    (tmp_path / "runs" / "digits" / "SGD" / f"lr1-none-standard-{'0' * 8}").mkdir(parents=True)
    (tmp_path / "runs" / "digits" / "SGD" / f"lr1-none-standard-{'0' * 8}" / "result.json").write_text(
        json.dumps({"status": "finished"}))
    runs, _ = sweep_view(tmp_path)
    assert [r["state"] for r in runs] == ["unsynced", "not submitted", "not submitted"]
