"""SLURM through submitit: fitted to the cluster before queueing, submitted as job arrays, not waited for by default.

The Hydra plugin (``hydra_plugins.asym_hydra.launchers.AsymSlurmLauncher``) delegates here. Before the sweep
directory is written, ``prepare`` reads the controller's limits (``asym.launcher.cluster``) and refuses, in one
line, a request that cannot fit; a sweep with more array tasks than ``MaxArraySize`` goes as several job arrays
(``Submission.arrays``), or, with ``auto_runs_per_task``, with ``runs_per_task`` raised until one array holds it.
When ``sbatch`` refuses anyway, the jobs it did not take are recorded as not submitted (``submit_arrays``).
``describe`` is the SLURM part of the sweeper's dry run (``hydra.sweeper.dry_run``). Preemption:
SLURM sends USR2, submitit calls the launcher's ``checkpoint()`` and requeues the same job, which resumes
from its run's ``checkpoint.pt``; ``scontrol requeue`` restarts it from scratch and resumes the same way.
With ``runs_per_task=K`` each array task trains K jobs one after another (``RunsInTurn``).
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from asym import tracking

from . import plan
from .cluster import (Cluster, ClusterError, Request, array_size, auto_runs_per_task, gres_gpus, problems,
                      read_cluster)

log = logging.getLogger("asym.launcher")


class LaunchError(RuntimeError):
    """Nothing was queued; the message is one line saying why."""


def check_runs_per_task(k: Any) -> int:
    """``hydra.launcher.runs_per_task``: a whole number ≥ 1. Raises ValueError (one line)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"hydra.launcher.runs_per_task must be a whole number >= 1 (runs trained one after "
                         f"another in each array task), got {k!r}")
    return k


def in_tasks(args: list, k: int) -> list[list]:
    """Consecutive jobs, ``k`` to an array task (the last task may hold fewer)."""
    return [args[i:i + k] for i in range(0, len(args), k)]


class RunsInTurn:
    """What one array task runs with ``runs_per_task`` > 1: its jobs (runs, or run groups under
    ``engine=group``) one after another in one process, each as ``launcher(*job)`` would run it alone —
    own run directory, MLflow run, skip-done and resume. The dataset is loaded once while consecutive
    runs share it (``asym.cli.load_data``).

    Preemption (USR2): ``checkpoint`` resubmits the whole task; the requeued task skips the runs it
    finished (skip-done) and resumes the one it was in from its checkpoint. A job that fails does not stop
    the ones after it; the task then raises the first failure, so the scheduler shows it as FAILED.
    """

    def __init__(self, launcher):
        self.launcher = launcher

    def __call__(self, jobs: list[tuple]) -> list[JobReturn]:
        returns, failure = [], None
        for job in jobs:
            try:
                returns.append(self.launcher(*job))
            except Exception as e:  # an interruption (SystemExit, KeyboardInterrupt) still ends the task
                log.error("job #%s failed: %s", job[2], str(e).splitlines()[0] if str(e) else type(e).__name__)
                failure = failure or e
        if failure is not None:
            raise failure
        return returns

    def checkpoint(self, jobs: list[tuple]) -> Any:
        """submitit calls this on USR2: requeue the same task with the same jobs."""
        import submitit
        return submitit.helpers.DelayedSubmission(self, jobs)


def executor(launcher, cluster: str = "slurm"):
    """The submitit executor for a hydra-submitit-launcher style parameter dict (same mapping as the stock one)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(launcher.params)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
    ex = submitit.AutoExecutor(cluster=cluster, **init)
    common = set(OmegaConf.structured(BaseQueueConf).keys())
    ex.update_parameters(**{k if k in common else f"{cluster}_{k}": v for k, v in params.items() if v is not None})
    return ex


def job_arguments(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[tuple]:
    """The arguments of ``BaseSubmititLauncher.__call__`` for each job."""
    out = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        out.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    return out


def sbatch_script(ex, n_jobs: int) -> str:
    """The sbatch script submitit would submit for an array of ``n_jobs`` (for ``dry_run``).

    Private submitit names: submitit writes the script only while submitting and has no public way to
    show it; pinned by test_private_apis_we_rely_on_still_exist.
    """
    from submitit.slurm.slurm import _make_sbatch_string
    slurm = ex._executor
    params = {**slurm.parameters, "map_count": n_jobs}
    return _make_sbatch_string(command=slurm._submitit_command_str, folder=slurm.folder, **params)


def pending(overrides: Sequence[str], note: str) -> JobReturn:
    """What the sweeper gets for a job that was queued (or only shown) and is not waited for."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.UNKNOWN)
    ret._return_value = note
    return ret


def collect(job, overrides: Sequence[str]) -> JobReturn:
    """The job's JobReturn, or a FAILED one when the job raised or died without a result."""
    try:
        return job.results()[0]
    except Exception as e:  # submitit.core.utils.FailedJobError / UncompletedJobError
        return failed(overrides, e)


def failed(overrides: Sequence[str], e: Exception) -> JobReturn:
    """A FAILED JobReturn carrying the last line of the job's error."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret._return_value = RuntimeError(str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
    return ret


@dataclass(frozen=True)
class Submission:
    """How a sweep's jobs go to SLURM: ``runs_per_task`` jobs per array task, the tasks cut into job arrays of
    at most ``array_size`` tasks (``cluster.array_size``: task ids stay within 0 … MaxArraySize-1)."""

    jobs: int
    runs_per_task: int
    array_size: int
    cluster: Cluster
    problems: tuple[str, ...] = ()
    asked_runs_per_task: int | None = None    # what the user set, when auto_runs_per_task raised it

    @property
    def tasks(self) -> int:
        return math.ceil(self.jobs / self.runs_per_task)

    def arrays(self, tasks: int | None = None) -> list[range]:
        """The array tasks of each job array, as ranges of the sweep's task numbers."""
        n = self.tasks if tasks is None else tasks
        return [range(lo, min(lo + self.array_size, n)) for lo in range(0, n, self.array_size)]


def request_of(params: dict, tasks: int) -> Request:
    """What the launcher's settings ask of SLURM (GPUs: ``gpus_per_node``, else a ``gres`` of gpu)."""
    gpus = params.get("gpus_per_node") or gres_gpus(str(params.get("gres") or ""))
    return Request(tasks, params.get("partition"), params.get("timeout_min"), params.get("cpus_per_task"),
                   params.get("mem_gb"), gpus or None)


def plan_submission(launcher, n_jobs: int, cluster: Cluster) -> Submission:
    """Fit ``n_jobs`` to ``cluster``: arrays of at most its array size; with ``auto_runs_per_task`` the least
    ``runs_per_task`` whose tasks fit one array and the submit limits. ValueError (one line) for a bad K."""
    k = check_runs_per_task(launcher.runs_per_task)
    asked = None
    if getattr(launcher, "auto_runs_per_task", False):
        raised = auto_runs_per_task(n_jobs, k, cluster)
        asked, k = (k if raised != k else None), raised
    tasks = math.ceil(n_jobs / k)
    found = problems(request_of(launcher.params, tasks), cluster)
    return Submission(n_jobs, k, array_size(cluster), cluster, tuple(found), asked)


def prepare(launcher, n_jobs: int) -> Submission:
    """Before anything is written or queued: ask the controller and fit the sweep to it. LaunchError (one line
    naming each limit and the setting that fixes it) if it cannot fit."""
    try:
        check_runs_per_task(launcher.runs_per_task)
        sub = plan_submission(launcher, n_jobs, read_cluster(launcher.params.get("qos")))
    except (ValueError, ClusterError) as e:
        raise LaunchError(str(e)) from None
    if sub.problems:
        raise LaunchError("; ".join(sub.problems))
    if sub.asked_runs_per_task is not None:
        log.info("hydra.launcher.runs_per_task raised from %d to %d (auto_runs_per_task): %d jobs in %d array tasks; "
                 "timeout_min=%s is per task", sub.asked_runs_per_task, sub.runs_per_task, n_jobs, sub.tasks,
                 launcher.params.get("timeout_min"))
    return sub


def describe(launcher, n_jobs: int) -> tuple[list[str], str]:
    """The dry run's SLURM part: lines on the arrays and tasks as they would be submitted, the cluster's limits
    (read from the controller when there is one) and what sbatch would refuse; and the sbatch script of the
    first array (printed last)."""
    try:
        cluster, read = read_cluster(launcher.params.get("qos")), ""
    except ClusterError as e:
        cluster = Cluster()
        read = (f"cluster not read ({e}); assuming SLURM's defaults MaxArraySize={cluster.max_array_size}, "
                f"MaxJobCount={cluster.max_job_count}")
    try:
        sub = plan_submission(launcher, n_jobs, cluster)
    except ValueError as e:
        return [f"  would be refused: {e}"], ""
    arrays = sub.arrays()
    raised = (f", raised from {sub.asked_runs_per_task} by auto_runs_per_task" if sub.asked_runs_per_task else "")
    limit = f"MaxArraySize={cluster.max_array_size}" + (f", max_array_tasks={cluster.max_array_tasks}"
                                                       if cluster.max_array_tasks else "")
    lines = [f"SLURM: {n_jobs} jobs in {sub.tasks} array tasks (runs_per_task={sub.runs_per_task}{raised}), "
             f"{len(arrays)} job array{'s' if len(arrays) != 1 else ''} of at most {sub.array_size} tasks ({limit})"]
    parallel = launcher.params.get("array_parallelism") or sub.array_size
    lines += [f"  array {i + 1}: {len(r)} tasks, --array=0-{len(r) - 1}%{min(len(r), parallel)}"
              for i, r in enumerate(arrays[:ARRAYS_SHOWN])]
    if len(arrays) > ARRAYS_SHOWN:
        lines.append(f"  … {len(arrays) - ARRAYS_SHOWN} more arrays")
    lines.append(f"  {read}" if read else "  " + cluster_line(cluster, launcher.params.get("partition")))
    lines += [f"  would be refused: {p}" for p in sub.problems]
    try:
        script = sbatch_script(executor(launcher), len(arrays[0]) if arrays else 0)
    except RuntimeError as e:  # submitit's SLURM executor wants srun on this machine
        return lines, f"sbatch script: not shown here ({e})"
    return lines, (f"sbatch script of array 1{' (the others differ only in --array)' if len(arrays) > 1 else ''}:\n"
                   + script.rstrip())


ARRAYS_SHOWN = 5


def cluster_line(cluster: Cluster, partition: str | None) -> str:
    """One line: the partition's limits and the controller's, as read."""
    p = cluster.partition(partition)
    where = (f"partition {partition!r} not found" if partition else "no default partition") if p is None else (
        f"partition {p.name}{' (default)' if p.default else ''}: MaxTime "
        f"{'UNLIMITED' if p.max_time_min is None else f'{p.max_time_min} min'}, {p.cpus_per_node} CPUs, "
        f"{p.mem_mb_per_node} MB, {p.gpus_per_node} GPUs per node")
    submit = (f"; {cluster.max_submit_source}" if cluster.max_submit is not None else "")
    return (f"cluster: {where}; MaxJobCount={cluster.max_job_count} ({cluster.jobs_held} jobs held); accounting "
            f"{'on' if cluster.accounting else 'off'}{submit}")


def sbatch_reason(e: BaseException) -> str:
    """SLURM's own words from a refused ``sbatch`` (its last stderr line), e.g. ``sbatch: error: Batch job
    submission failed: Invalid job array specification``."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def submit_arrays(launcher, sub: Submission, args: list[tuple], sweep_dir: Path) -> list:
    """Submit the jobs as ``sub`` cuts them, one ``map_array`` per job array; record each array's job ids in the
    plan as soon as it is queued. Returns the submitit Job of each array task, in task order.

    When ``sbatch`` refuses an array, the jobs not queued are recorded as not submitted (plan and MLflow) and
    SubmissionRefused says so in one line with SLURM's reason."""
    import submitit

    ex = executor(launcher)
    tasks = in_tasks(args, sub.runs_per_task)
    # a SLURM sweep from here: a run without a job id is not submitted; its jobs' files are in submitit's folder
    plan.record_jobs(sweep_dir, "slurm", {}, submitit_folder=str(Path(launcher.params["submitit_folder"]).absolute()))
    queued: list = []
    arrays = sub.arrays(len(tasks))
    for i, span in enumerate(arrays):
        chunk = tasks[span.start:span.stop]
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr: we say it once
                if sub.runs_per_task == 1:
                    jobs = ex.map_array(launcher, *zip(*[t[0] for t in chunk]))
                else:
                    jobs = ex.map_array(RunsInTurn(launcher), chunk)
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as e:
            reason = sbatch_reason(e)
            left = [a[2] for t in tasks[span.start:] for a in t]
            not_submitted(launcher, sweep_dir, left, reason)
            done = len(args) - len(left)
            raise SubmissionRefused(
                f"sbatch refused job array {i + 1} of {len(arrays)} ({len(chunk)} tasks): {reason}; "
                f"{len(left)} of {len(args)} jobs not submitted"
                + (f" ({done} queued before it)" if done else "") + f", recorded in {sweep_dir / plan.PLAN_FILE}")
        plan.record_jobs(sweep_dir, "slurm", {a[2]: j.job_id for j, task in zip(jobs, chunk) for a in task})
        queued += jobs
        if len(arrays) > 1:
            log.info("array %d of %d: %d tasks as SLURM array %s", i + 1, len(arrays), len(chunk),
                     jobs[0].job_id.split("_")[0])
    return queued


def not_submitted(launcher, sweep_dir: Path, nums: list[int], reason: str) -> None:
    """The plan and the sweep's MLflow run say these jobs were not submitted (``asym-status`` never shows them
    queued)."""
    plan.record_not_submitted(sweep_dir, nums, reason)
    sweep_run = os.environ.get(tracking.SWEEP_RUN_ENV)
    if sweep_run is None:  # the sweep's run could not be made (tracking down): the plan is the record
        return
    try:
        tracking.note_not_submitted(launcher.config.tracking.uri, sweep_run,
                                    f"{len(nums)} jobs not submitted: {reason} ({sweep_dir})")
    except Exception as e:  # the plan has it; MLflow is a second record
        log.warning("could not record the refused submission in MLflow: %s", str(e).splitlines()[0][:200])


class SubmissionRefused(LaunchError):
    """``sbatch`` refused a job array; what was not queued is recorded as not submitted."""


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
           sub: Submission | None = None) -> Sequence[JobReturn]:
    """Submit the sweep's jobs (fitted to the cluster by ``prepare``) and return without waiting, unless ``wait``."""
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sub = sub or prepare(launcher, len(job_overrides))
    args = job_arguments(job_overrides, initial_job_idx)
    tasks = in_tasks(args, sub.runs_per_task)
    task_jobs = submit_arrays(launcher, sub, args, sweep_dir)
    arrays = list(dict.fromkeys(j.job_id.split("_")[0] for j in task_jobs))
    log.info("submitted %d runs as SLURM array%s %s", len(args), "s" if len(arrays) > 1 else "", ", ".join(arrays))
    if sub.runs_per_task > 1:
        log.info("%d array tasks of up to %d runs each (hydra.launcher.runs_per_task)", len(tasks), sub.runs_per_task)
    if not launcher.wait:
        return [pending(a[0], f"queued as {j.job_id}") for j, task in zip(task_jobs, tasks) for a in task]
    out = []
    for j, task in zip(task_jobs, tasks):  # a task's returns, or, if it failed, each of its jobs reported failed
        if sub.runs_per_task == 1:
            out.append(collect(j, task[0][0]))
            continue
        try:
            out += j.results()[0]
        except Exception as e:
            out += [failed(a[0], e) for a in task]
    return out


def raise_if_failed(ret: JobReturn) -> Any:
    """Inside the job: Hydra turns a task's exception into a FAILED JobReturn; re-raise it so the
    scheduler sees a non-zero exit (``sacct`` FAILED) instead of a job that 'completed'."""
    if ret.status == JobStatus.FAILED:
        raise ret._return_value
    return ret
