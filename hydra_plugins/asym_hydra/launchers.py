"""Hydra launchers: SLURM job arrays that need no open terminal, and a local pool with one run per GPU/core.

Thin plugin classes (Hydra only instantiates plugins from ``hydra_plugins``); the logic is in
``asym.launcher.slurm`` and ``asym.launcher.local``.
"""
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher


@dataclass
class AsymSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.asym_hydra.launchers.AsymSlurmLauncher"
    wait: bool = False       # block until every job ends (the stock behaviour); default: submit and return
    dry_run: bool = False    # print the sbatch script, submit nothing
    runs_per_task: int = 1   # jobs trained one after another in each array task (docs/cluster.md: choosing it)


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

    def __init__(self, wait: bool = False, dry_run: bool = False, runs_per_task: int = 1, **params: Any) -> None:
        super().__init__(**params)
        self.wait, self.dry_run, self.runs_per_task = wait, dry_run, runs_per_task

    def check(self) -> None:
        """Called by the sweeper before it writes anything: the launcher's own settings, as one line."""
        from asym.launcher.slurm import LaunchError, check_runs_per_task
        try:
            check_runs_per_task(self.runs_per_task)
        except ValueError as e:
            raise LaunchError(str(e)) from None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from asym.launcher import slurm
        return slurm.launch(self, job_overrides, initial_job_idx)


class AsymLocalLauncher(_RaisingLauncher):
    _EXECUTOR = "local"

    def __init__(self, workers: Optional[int] = None, gpus: Optional[List[int]] = None, **params: Any) -> None:
        super().__init__(**params)
        self.workers, self.gpus = workers, gpus

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from asym.launcher import local
        return local.launch(self, job_overrides, initial_job_idx)
