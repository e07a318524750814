"""``asym-status``: where a sweep stands — finished / diverged / running / queued / failed, per paper table.

Reads the sweep's plan (``runs.json``), MLflow (through ``asym.tracking``) and, for SLURM sweeps, the
scheduler (``squeue``/``sacct``), so a run killed outside Python still shows as failed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from asym import tracking
from asym.analysis.tables import load_runs, protocols
from asym.labels import parse_model
from asym.protocol import SELECTIONS
from asym.record import DONE, RunStatus

from . import plan
from .progress import text_bar

STATES = tuple(RunStatus)  # the report's columns
ACTIVE = (RunStatus.RUNNING, RunStatus.QUEUED)
SLURM_QUEUED = ("PENDING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESIZING")
SLURM_RUNNING = ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")


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


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """job id (``ARRAY_TASK``) → SLURM state; live ``squeue`` over accounting's ``sacct``."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out: dict[str, str] = {}
    if not arrays:
        return out
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(arrays)],
                          capture_output=True, text=True, timeout=60)
    for line in acct.stdout.splitlines():
        job, _, state = line.partition("|")
        out[job] = state.split()[0] if state else ""
    queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)],
                           capture_output=True, text=True, timeout=60)
    for line in queue.stdout.splitlines():
        job, _, state = line.partition(" ")
        out[job] = state.strip()
    return out


def classify(mlflow: str | None, scheduler: str | None, in_turn: bool = False) -> RunStatus:
    """A run's state from its MLflow status tag and its SLURM job's state. ``in_turn``: the job is an array task
    that trains several runs one after another (``runs_per_task``), so its state is not each run's: a run it
    has not reached yet is queued, one that failed stays failed while the task goes on."""
    if mlflow in DONE:
        return RunStatus(mlflow)
    if in_turn and scheduler in SLURM_RUNNING and mlflow in (None, RunStatus.FAILED):
        return RunStatus.QUEUED if mlflow is None else RunStatus.FAILED
    if scheduler in SLURM_QUEUED:
        return RunStatus.QUEUED
    if scheduler in SLURM_RUNNING:
        return RunStatus.RUNNING
    if mlflow == RunStatus.INTERRUPTED:  # stopped by SIGINT/SIGTERM (scancel, a time limit): rerun to resume
        return RunStatus.INTERRUPTED
    if scheduler == "COMPLETED":  # the job ended well but MLflow lacks the result: asym-sync uploads it
        return RunStatus.FAILED if mlflow == RunStatus.FAILED else RunStatus.UNSYNCED
    if scheduler:  # FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...
        return RunStatus.FAILED
    return RunStatus(mlflow) if mlflow in (RunStatus.RUNNING, RunStatus.FAILED) else RunStatus.QUEUED


def sweep_status(sweep_dir: Path, uri: str | None = None, experiment: str | None = None) -> list[dict]:
    """Every run of the sweep with its state (and the scheduler's word on it, when there is one)."""
    doc = plan.read(sweep_dir)
    ml = mlflow_states(uri or doc["tracking_uri"], experiment or doc["experiment"])
    jobs = doc.get("jobs", {})
    sched = slurm_states(list(jobs.values())) if doc.get("scheduler") == "slurm" else {}
    nums_of = Counter(jobs.values())  # sweep jobs per scheduler job: > 1 with runs_per_task
    out = []
    for e in doc["runs"]:
        job = jobs.get(str(e["num"]))
        state = classify(ml.get(e["config_hash"]), sched.get(job) if job else None, nums_of[job] > 1)
        out.append({**e, "state": state, "job_id": job, "scheduler_state": sched.get(job) if job else None})
    return out


def report(sweep_dir: Path, runs: list[dict], protocols: list[tuple[str, str, int]] = ()) -> str:
    total = Counter(r["state"] for r in runs)
    done = sum(total[s] for s in DONE)
    lines = [f"sweep {sweep_dir}: {len(runs)} runs",
             f"{text_bar(done / max(1, len(runs)))} {done / max(1, len(runs)):4.0%}  {done}/{len(runs)} done", ""]
    header = f"{'table':<8}{'runs':>6}" + "".join(f"{s:>12}" for s in STATES)
    lines.append(header)
    tables = sorted({t for r in runs for t in r["tables"]}) + ["all"]
    for t in tables:
        mine = runs if t == "all" else [r for r in runs if t in r["tables"]]
        c = Counter(r["state"] for r in mine)
        lines.append(f"{t:<8}{len(mine):>6}" + "".join(f"{c[s]:>12}" for s in STATES))
    lines += ["", *selection_lines(runs), *seed_lines(runs)]
    failed = [r for r in runs if r["state"] == RunStatus.FAILED]
    if failed:
        lines += ["", "failed:"] + [f"  {r['name']}" + (f" (SLURM {r['job_id']}: {r['scheduler_state']})"
                                                          if r.get("scheduler_state") else "") for r in failed]
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
            runs = sweep_status(sweep_dir, a.tracking_uri, a.experiment)
            doc = plan.read(sweep_dir)
            print(report(sweep_dir, runs, protocol_counts(a.tracking_uri or doc["tracking_uri"],
                                                          a.experiment or doc["experiment"])), flush=True)
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
