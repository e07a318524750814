"""``asym-status``: where a sweep stands — each run in one ``asym.record.RunStatus`` — per paper table.

Reads the sweep's plan (``runs.json``), MLflow (through ``asym.tracking``), each run's own record
(``result.json``) and, for SLURM sweeps, the scheduler: ``squeue`` for what is pending, running or just ended,
``sacct`` where accounting exists, and otherwise submitit's own job files (``*_result.pkl``, the job's logs).
So a run killed outside Python shows as failed, and a job that left the queue without a result as ``lost``
(never ``queued``) — on clusters without accounting too. ``--watch`` ends when nothing is queued or running.
"""
from __future__ import annotations

import argparse
import json
import pickletools
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from asym import tracking
from asym.analysis.tables import load_runs, protocols
from asym.labels import parse_model
from asym.protocol import SELECTIONS
from asym.record import DONE, RESULT_FILE, RunStatus

from . import plan
from .cluster import SLURM_QUEUED, SLURM_RUNNING, TIMEOUT_S
from .progress import text_bar

STATES = tuple(RunStatus)  # the report's columns
SLURM_ONLY = (RunStatus.LOST, RunStatus.NOT_SUBMITTED)   # columns shown for SLURM sweeps only
ACTIVE = (RunStatus.RUNNING, RunStatus.QUEUED)
SCHEDULER_LOST = "LOST"   # not SLURM's word: the job left the queue and left no result and no error behind


def find_sweep(target: Path) -> Path:
    """A sweep directory, or the newest sweep under an output root (``runs/logs/multirun-*``)."""
    if (target / plan.PLAN_FILE).exists():
        return target
    found = sorted(target.glob(f"logs/*/{plan.PLAN_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no sweep at {target} (expected {target}/{plan.PLAN_FILE} or "
                                f"{target}/logs/multirun-*/{plan.PLAN_FILE})")
    return found[-1].parent


def mlflow_states(uri: str, experiment: str) -> dict[str, str]:
    """config hash → the status tag of the run that stands for it (``tracking.stands_for``)."""
    df = tracking.runs_table(uri, experiment)
    if df is None:
        return {}
    return {h: s for h, s in zip(df["config_hash"], df["status"]) if isinstance(h, str)}


def protocol_counts(uri: str, experiment: str) -> list[tuple[str, str, int]]:
    """(protocol hash, label, run count) of every protocol in the experiment, most runs first."""
    try:
        return protocols(load_runs(uri, experiment))
    except LookupError:
        return []


@dataclass(frozen=True)
class JobState:
    """What the scheduler side knows of one job: SLURM's state (or ``SCHEDULER_LOST``), a note (the last line of its
    error), and where it was learnt (squeue, sacct, submitit)."""

    state: str
    note: str = ""
    source: str = ""


def _arrays(job_ids: list[str]) -> list[str]:
    return sorted({j.split("_")[0] for j in job_ids})


def squeue_states(job_ids: list[str]) -> dict[str, JobState] | None:
    """Live and recently ended jobs (``squeue -t all``: ended ones stay for MinJobAge). None if squeue failed."""
    if shutil.which("squeue") is None:
        return None
    res = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(_arrays(job_ids))],
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    if res.returncode != 0 and "Invalid job id" not in res.stderr:  # every job gone from the queue: rc 1
        return None
    return {job: JobState(state.strip(), source="squeue") for job, _, state in
            (line.partition("|") for line in res.stdout.splitlines()) if state}


def sacct_states(job_ids: list[str]) -> tuple[dict[str, JobState], str]:
    """Accounting's states, and why there are none (no sacct, accounting disabled) as a short note."""
    if shutil.which("sacct") is None:
        return {}, "no sacct"
    res = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(_arrays(job_ids))],
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    if res.returncode != 0:
        why = (res.stderr or res.stdout).strip().splitlines()
        return {}, f"sacct: {why[0] if why else f'exit {res.returncode}'}"
    return {job: JobState(state.split()[0], source="sacct") for job, _, state in
            (line.partition("|") for line in res.stdout.splitlines()) if state.strip()}, ""


def result_strings(path: Path, n: int = 2) -> list[str]:
    """The first ``n`` strings of a submitit result pickle — ``("success", …)`` or ``("error", traceback)`` —
    read with ``pickletools`` so nothing in it is imported or run."""
    out = []
    for op, arg, _ in pickletools.genops(path.read_bytes()):
        if isinstance(arg, str) and "UNICODE" in op.name:
            out.append(arg)
            if len(out) == n:
                break
    return out


def last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def submitit_state(folder: str, job_id: str) -> JobState:
    """What submitit's own files say of a job that left the queue: ``COMPLETED`` (a success result), ``FAILED``
    with the error's last line (an error result, or SLURM's ``error:`` line at the end of its log, e.g. a time
    limit or a cancel), else ``SCHEDULER_LOST`` (nothing, or a log that stops without an error)."""
    d = Path(folder.replace("%j", job_id))
    result = d / f"{job_id}_0_result.pkl"
    if result.exists():
        try:
            kind, *rest = result_strings(result)
        except Exception:  # a result being written or cut short
            kind, rest = "", []
        if kind == "success":
            return JobState("COMPLETED", source="submitit")
        if kind == "error":
            tb = [line.strip() for line in (rest[0] if rest else "").splitlines() if line.strip()]
            return JobState("FAILED", tb[-1] if tb else "", "submitit")
    err, out = last_line(d / f"{job_id}_0_log.err"), last_line(d / f"{job_id}_0_log.out")
    if "error" in err.lower():
        return JobState("FAILED", err, "log")
    return JobState(SCHEDULER_LOST, err or out, "submitit")


def slurm_states(job_ids: list[str], submitit_folder: str | None) -> tuple[dict[str, JobState], str]:
    """job id (``ARRAY_TASK``) → its state: ``squeue`` first (live), then ``sacct`` for jobs no longer queued
    (where accounting exists), then submitit's job files; a job none of them accounts for is ``SCHEDULER_LOST``.
    Also a line saying where the states came from. If squeue itself fails, only sacct's states are known."""
    if not job_ids:
        return {}, ""
    queue = squeue_states(job_ids)
    acct, why = sacct_states(job_ids)
    if queue is None:
        return acct, f"squeue failed: states from MLflow and run records{'' if not acct else ' and sacct'}"
    out: dict[str, JobState] = {}
    for job in job_ids:
        if job in queue:
            out[job] = queue[job]
        elif job in acct and acct[job].state not in (*SLURM_QUEUED, *SLURM_RUNNING):
            out[job] = acct[job]
        elif submitit_folder:
            out[job] = submitit_state(submitit_folder, job)
        else:
            out[job] = JobState(SCHEDULER_LOST)
        ended = out[job].state not in (*SLURM_QUEUED, *SLURM_RUNNING, "COMPLETED")
        if ended and not out[job].note and submitit_folder:  # e.g. sacct's FAILED: the error's last line
            out[job] = JobState(out[job].state, submitit_state(submitit_folder, job).note, out[job].source)
    return out, "scheduler: squeue, " + (f"submitit's job files ({why})" if why else "sacct, submitit's job files")


def local_states(output_root: str | None, hashes: set[str]) -> dict[str, str]:
    """config hash → the status in its run's own record (``result.json``), for the given hashes: a run
    directory's name ends with the first 8 characters of its run's hash (``asym.cli.run_dir``)."""
    if not output_root or not hashes or not Path(output_root).is_dir():
        return {}
    by_prefix = {h[:8]: h for h in hashes}
    out = {}
    for path in Path(output_root).rglob(RESULT_FILE):
        h = by_prefix.get(path.parent.name[-8:])
        if h is not None:
            try:
                out[h] = json.loads(path.read_text()).get("status")
            except (OSError, ValueError):
                continue
    return out


def classify(mlflow: str | None, scheduler: str | None, in_turn: bool = False, local: str | None = None) -> RunStatus:
    """A run's state from its MLflow status tag, its SLURM job's state (or ``SCHEDULER_LOST``) and its own record's
    status (``result.json``). ``in_turn``: the job is an array task that trains several runs one after another
    (``runs_per_task``), so its state is not each run's: a run it has not reached yet is queued, one that
    failed stays failed while the task goes on."""
    if mlflow in DONE:
        return RunStatus(mlflow)
    if local in DONE:  # the run's record says done; MLflow lacks it: asym-sync uploads it
        return RunStatus.UNSYNCED
    if in_turn and scheduler in SLURM_RUNNING and mlflow in (None, RunStatus.FAILED):
        return RunStatus.QUEUED if mlflow is None else RunStatus.FAILED
    if scheduler in SLURM_QUEUED:
        return RunStatus.QUEUED
    if scheduler in SLURM_RUNNING:
        return RunStatus.RUNNING
    own = mlflow or local
    if RunStatus.INTERRUPTED in (mlflow, local):  # stopped by SIGINT/SIGTERM (scancel, a time limit): rerun to resume
        return RunStatus.INTERRUPTED
    if scheduler == "COMPLETED":  # the job ended well but MLflow lacks the result: asym-sync uploads it
        return RunStatus.FAILED if own == RunStatus.FAILED else RunStatus.UNSYNCED
    if scheduler == SCHEDULER_LOST:  # left the queue without a result or an error: rerun the sweep to resume it
        return RunStatus.FAILED if own == RunStatus.FAILED else RunStatus.LOST
    if scheduler:  # FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...
        return RunStatus.FAILED
    return RunStatus(own) if own in (RunStatus.RUNNING, RunStatus.FAILED) else RunStatus.QUEUED


def sweep_status(sweep_dir: Path, uri: str | None = None, experiment: str | None = None) -> list[dict]:
    """Every run of the sweep with its state (and the scheduler's word on it, when there is one)."""
    return sweep_view(sweep_dir, uri, experiment)[0]


def sweep_view(sweep_dir: Path, uri: str | None = None, experiment: str | None = None) -> tuple[list[dict], str]:
    """``sweep_status`` and the line saying where the scheduler's states came from."""
    doc = plan.read(sweep_dir)
    ml = mlflow_states(uri or doc["tracking_uri"], experiment or doc["experiment"])
    jobs = doc.get("jobs", {})
    slurm = doc.get("scheduler") == "slurm"
    sched, source = slurm_states(list(dict.fromkeys(jobs.values())), doc.get("submitit_folder")) if slurm else ({}, "")
    pending = {e["config_hash"] for e in doc["runs"] if ml.get(e["config_hash"]) not in DONE}
    local = local_states(doc.get("output_root"), pending)
    nums_of = Counter(jobs.values())  # sweep jobs per scheduler job: > 1 with runs_per_task
    out = []
    for e in doc["runs"]:
        job = jobs.get(str(e["num"]))
        js = sched.get(job) if job else None
        mine, own = ml.get(e["config_hash"]), local.get(e["config_hash"])
        if slurm and job is None and mine not in DONE and own not in DONE:
            state = RunStatus.NOT_SUBMITTED  # sbatch refused it, or the submission stopped before it
        else:
            state = classify(mine, js.state if js else None, nums_of[job] > 1, own)
        out.append({**e, "state": state, "job_id": job, "scheduler_state": js.state if js else None,
                    "scheduler_note": js.note if js else ""})
    return out, source


def report(sweep_dir: Path, runs: list[dict], protocols: list[tuple[str, str, int]] = (), source: str = "",
           not_submitted: str = "") -> str:
    """The text ``asym-status`` prints. ``source``: where the scheduler's states came from; ``not_submitted``:
    SLURM's reason for the jobs it refused (``runs.json``)."""
    total = Counter(r["state"] for r in runs)
    done = sum(total[s] for s in DONE)
    lines = [f"sweep {sweep_dir}: {len(runs)} runs",
             f"{text_bar(done / max(1, len(runs)))} {done / max(1, len(runs)):4.0%}  {done}/{len(runs)} done", ""]
    states = [s for s in STATES if s not in SLURM_ONLY or source or total[s]]
    width = {s: max(9, len(s) + 2) for s in states}
    lines.append(f"{'table':<8}{'runs':>6}" + "".join(f"{s:>{width[s]}}" for s in states))
    tables = sorted({t for r in runs for t in r["tables"]}) + ["all"]
    for t in tables:
        mine = runs if t == "all" else [r for r in runs if t in r["tables"]]
        c = Counter(r["state"] for r in mine)
        lines.append(f"{t:<8}{len(mine):>6}" + "".join(f"{c[s]:>{width[s]}}" for s in states))
    lines += ["", *selection_lines(runs), *seed_lines(runs)]
    if source:
        lines.append(source)

    def job_note(r: dict) -> str:
        if not r.get("scheduler_state"):
            return ""
        note = f": {r['scheduler_note']}" if r.get("scheduler_note") else ""
        return f" (SLURM {r['job_id']}: {r['scheduler_state']}{note})"
    failed = [r for r in runs if r["state"] == RunStatus.FAILED]
    if failed:
        lines += ["", "failed:"] + [f"  {r['name']}{job_note(r)}" for r in failed]
    lost = [r for r in runs if r["state"] == RunStatus.LOST]
    if lost:
        lines += ["", f"lost ({len(lost)}: their jobs left the queue without a result; relaunch the sweep to resume "
                      "them):"] + [f"  {r['name']}{job_note(r)}" for r in lost[:LISTED]]
        lines += [f"  … {len(lost) - LISTED} more"] if len(lost) > LISTED else []
    if total[RunStatus.NOT_SUBMITTED]:
        lines += ["", f"{total[RunStatus.NOT_SUBMITTED]} runs were not submitted"
                      + (f" ({not_submitted})" if not_submitted else "") + ": fix the cause and relaunch the sweep"]
    if protocols:
        mine = Counter(r.get("protocol_hash") for r in runs)
        lines += ["", "protocols in MLflow (asym-tables --protocol chooses; a table never mixes them):"]
        lines += [f"  {label:<24}{n:>6} runs" + ("   <- this sweep" if mine.get(h) else "") for h, label, n in protocols]
    if total[RunStatus.INTERRUPTED]:
        lines += ["", f"{total[RunStatus.INTERRUPTED]} runs were interrupted (SIGINT/SIGTERM): relaunch the sweep to resume "
                      "them from their last finished epoch"]
    if total[RunStatus.UNSYNCED]:
        lines += ["", f"{total[RunStatus.UNSYNCED]} runs finished but are not in MLflow yet: run asym-sync"]
    return "\n".join(lines)


LISTED = 20  # lost runs listed by name


def selection_lines(runs: list[dict]) -> list[str]:
    """How the sweep's runs choose their number (``train.select_on``; plans before it existed: ``test``)."""
    counts = Counter(r.get("select_on", "test") for r in runs)
    return [f"selection: select_on={s} ({SELECTIONS.get(s, s)}), {n} runs" for s, n in sorted(counts.items())]


def cell_of(run: dict) -> tuple:
    """A cell: (model, dataset, freeze); its runs are every lr multiplier, procedure and seed of it."""
    return parse_model(run["model"]).label, run["dataset"], run.get("freeze", "none")


def seed_lines(runs: list[dict]) -> list[str]:
    """Runs done per seed, and how many cells are done at every seed of the sweep (error bars need them all)."""
    def done(r: dict) -> bool:
        return r["state"] in DONE
    seeds = sorted({r["run"].get("seed", 0) for r in runs})
    lines = []
    for s in seeds:
        mine = [r for r in runs if r["run"].get("seed", 0) == s]
        lines.append(f"seed {s}: {sum(map(done, mine))}/{len(mine)} runs done")
    cells: dict[tuple, list[dict]] = {}
    for r in runs:
        cells.setdefault(cell_of(r["run"]), []).append(r)
    whole = sum(all(map(done, rs)) for rs in cells.values())
    lines.append(f"cells with all {len(seeds)} seed{'s' if len(seeds) > 1 else ''} done: {whole}/{len(cells)} "
                 "(model × dataset [× freeze], every lr multiplier and procedure)")
    return lines


def fail(message: str) -> None:
    """Bad input: one ``error:`` line, exit code 2 (as every asym tool)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def read_plan(sweep_dir: Path) -> dict:
    """The sweep's ``runs.json``; FileNotFoundError naming it when it is not a plan (unreadable JSON, no runs)."""
    path = sweep_dir / plan.PLAN_FILE
    try:
        doc = plan.read(sweep_dir)
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise FileNotFoundError(f"{path} is not a sweep plan ({str(e).splitlines()[0][:100]})") from None
    missing = {"runs", "tracking_uri", "experiment"} - set(doc if isinstance(doc, dict) else ())
    if missing:
        raise FileNotFoundError(f"{path} is not a sweep plan (no {', '.join(sorted(missing))})")
    return doc


def main(argv: list[str] | None = None) -> None:
    """Console script ``asym-status [SWEEP_DIR | OUTPUT_ROOT]``. Bad input (no sweep there, not a plan, no or wrong
    credentials, a negative ``--watch``) exits 2 with one line; an unreadable tracking store 1."""
    ap = argparse.ArgumentParser(prog="asym-status", description="Progress of a sweep, per paper table.")
    ap.add_argument("target", nargs="?", default="runs", type=Path,
                    help="a sweep directory, or an output root whose newest sweep is shown (default: runs)")
    ap.add_argument("--tracking-uri", default=None, help="default: the one the sweep used")
    ap.add_argument("--experiment", default=None)
    ap.add_argument("--watch", type=float, default=0, metavar="SECONDS", help="refresh until nothing is queued or running")
    a = ap.parse_args(argv)
    tracking.limit_http_retries()
    if a.watch < 0:
        fail(f"--watch takes seconds ≥ 0, got {a.watch:g}")
    try:
        sweep_dir = find_sweep(a.target)
        read_plan(sweep_dir)
        while True:
            runs, source = sweep_view(sweep_dir, a.tracking_uri, a.experiment)
            doc = plan.read(sweep_dir)
            print(report(sweep_dir, runs, protocol_counts(a.tracking_uri or doc["tracking_uri"],
                                                          a.experiment or doc["experiment"]), source,
                         doc.get("not_submitted", {}).get("reason", "")), flush=True)
            if not a.watch or not any(r["state"] in ACTIVE for r in runs):
                break
            time.sleep(a.watch)
            print()
    except (tracking.AccessError, FileNotFoundError) as e:  # bad input: no credentials, wrong ones, no sweep there
        fail(str(e).splitlines()[0])
    except (OSError, RuntimeError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # e.g. the tracking server is unreachable
        print(f"error: cannot read the sweep's state: {str(e).splitlines()[0][:200]}", file=sys.stderr)
        sys.exit(1)
