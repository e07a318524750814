"""Hydra launchers: SLURM job arrays that need no open terminal, and a local pool with one run per GPU/core.

Thin plugin classes (Hydra only instantiates plugins from ``hydra_plugins``); the logic is in
``asym.launcher.slurm`` and ``asym.launcher.local``.
"""
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher


@dataclass
class AsymSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.asym_hydra.launchers.AsymSlurmLauncher"
    wait: bool = False       # block until every job ends (the stock behaviour); default: submit and return
    dry_run: bool = False    # alias of hydra.sweeper.dry_run: print the plan, its cost and the sbatch script
    runs_per_task: int = 1   # jobs trained one after another in each array task (docs/cluster.md: choosing it)
    auto_runs_per_task: bool = False  # raise runs_per_task until the tasks fit one array and the submit limits


@dataclass
class AsymLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.asym_hydra.launchers.AsymLocalLauncher"
    workers: Optional[int] = None       # default: one per GPU, else one per CPU core
    gpus: Optional[List[int]] = None    # default: every visible GPU


ConfigStore.instance().store(group="hydra/launcher", name="asym_slurm", node=AsymSlurmConf, provider="asym")
ConfigStore.instance().store(group="hydra/launcher", name="asym_local", node=AsymLocalConf, provider="asym")


class _RaisingLauncher(BaseSubmititLauncher):
    def __call__(self, *args: Any) -> JobReturn:
        """Runs inside the job: a run that raised must exit non-zero, not 'complete' with a FAILED return."""
        from asym.launcher.slurm import raise_if_failed
        return raise_if_failed(super().__call__(*args))


class AsymSlurmLauncher(_RaisingLauncher):
    _EXECUTOR = "slurm"

    def __init__(self, wait: bool = False, dry_run: bool = False, runs_per_task: int = 1,
                 auto_runs_per_task: bool = False, **params: Any) -> None:
        super().__init__(**params)
        self.wait, self.dry_run, self.runs_per_task = wait, dry_run, runs_per_task
        self.auto_runs_per_task = auto_runs_per_task
        self.submission = None  # how the sweep fits the cluster (asym.launcher.slurm.prepare)

    def check(self, n_jobs: Optional[int] = None) -> None:
        """Called by the sweeper before it writes anything: the launcher's own settings and, given the sweep's
        job count, the cluster's limits (read from the controller) — LaunchError, one line."""
        from asym.launcher.slurm import LaunchError, check_runs_per_task, prepare
        try:
            check_runs_per_task(self.runs_per_task)
        except ValueError as e:
            raise LaunchError(str(e)) from None
        if n_jobs is not None:
            self.submission = prepare(self, n_jobs)

    def describe(self, n_jobs: int) -> Tuple[List[str], str]:
        """The dry run's lines (arrays, tasks, the cluster's limits) and the sbatch script."""
        from asym.launcher.slurm import describe
        return describe(self, n_jobs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from asym.launcher import slurm
        return slurm.launch(self, job_overrides, initial_job_idx, self.submission)


class AsymLocalLauncher(_RaisingLauncher):
    _EXECUTOR = "local"

    def __init__(self, workers: Optional[int] = None, gpus: Optional[List[int]] = None, **params: Any) -> None:
        super().__init__(**params)
        self.workers, self.gpus = workers, gpus

    def describe(self, n_jobs: int) -> Tuple[List[str], str]:
        """The dry run's line: how many workers the pool would run, on what."""
        from asym.launcher.local import slots
        free = slots(self.workers, self.gpus)
        how = ("GPUs " + ",".join(str(s) for s in free) if free[0] is not None
               else f"CPU, {self.config.train.threads or 1} thread each")
        return [f"local pool: {n_jobs} jobs, {len(free)} at a time ({how})"], ""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from asym.launcher import local
        return local.launch(self, job_overrides, initial_job_idx)
