"""SLURM through submitit: checked before queueing, submitted as job arrays, not waited for by default.

The Hydra plugin (``hydra_plugins.asym_hydra.launchers.AsymSlurmLauncher``) delegates here. Preemption:
SLURM sends USR2, submitit calls the launcher's ``checkpoint()`` and requeues the same job, which resumes
from its run's ``checkpoint.pt``; ``scontrol requeue`` restarts it from scratch and resumes the same way.
With ``runs_per_task=K`` each array task trains K jobs one after another (``RunsInTurn``).
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from . import plan

log = logging.getLogger("asym.launcher")


DRY_RUN = "dry run: nothing submitted"


class LaunchError(RuntimeError):
    """Nothing was queued; the message is one line saying why."""


def check_partition(partition: str | None) -> None:
    """A partition that does not exist fails here, in one line, before anything is queued."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise LaunchError("sbatch/sinfo not found: submit from a SLURM login node, or use hydra/launcher=local")
    names = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    if names.returncode != 0:
        raise LaunchError(f"sinfo failed: {(names.stderr or names.stdout).strip().splitlines()[0]}")
    available = [n.rstrip("*") for n in names.stdout.split()]
    if partition and partition not in available:
        raise LaunchError(f"no SLURM partition '{partition}'; available: {', '.join(available)}")


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


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    if not launcher.dry_run:
        check_partition(launcher.params.get("partition"))
    try:
        k = check_runs_per_task(launcher.runs_per_task)
    except ValueError as e:
        raise LaunchError(str(e)) from None
    ex = executor(launcher)
    args = job_arguments(job_overrides, initial_job_idx)
    tasks = in_tasks(args, k)
    if launcher.dry_run:
        print(sbatch_script(ex, len(tasks)), flush=True)
        return [pending(o, DRY_RUN) for o in job_overrides]
    if k == 1:
        jobs = ex.map_array(launcher, *zip(*args))
    else:
        jobs = ex.map_array(RunsInTurn(launcher), tasks)
    task_of = [j for j, task in zip(jobs, tasks) for _ in task]  # each job's array task, in job order
    plan.record_jobs(sweep_dir, "slurm", {a[2]: j.job_id for a, j in zip(args, task_of)})
    array = jobs[0].job_id.split("_")[0]
    log.info("submitted %d runs as SLURM array %s", len(args), array)
    if k > 1:
        log.info("%d array tasks of up to %d runs each (hydra.launcher.runs_per_task)", len(jobs), k)
    if not launcher.wait:
        return [pending(o, f"queued as {j.job_id}") for o, j in zip(job_overrides, task_of)]
    if k == 1:
        return [collect(j, o) for j, o in zip(jobs, job_overrides)]
    out = []
    for j, task in zip(jobs, tasks):  # a task's returns, or, if it failed, each of its jobs reported failed
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
