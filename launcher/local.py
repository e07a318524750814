"""A local pool: N runs at a time on one machine, each in its own process, each on its own GPU or CPU core.

The stock ``submitit_local`` launcher starts every job at once, all on GPU 0. Here a slot is either one GPU
(``CUDA_VISIBLE_DEVICES`` set to it) or, without GPUs, one CPU core (one single-thread process). A
worker that dies (killed, out of memory) frees its slot; its run is marked failed in MLflow, not lost,
and relaunching the sweep resumes it from its checkpoint.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Sequence

from hydra.core.utils import JobReturn, JobStatus

from asym import tracking

from . import plan
from .progress import RunsProgress
from .slurm import collect, executor, job_arguments

log = logging.getLogger("asym.launcher")
POLL_S = 0.2


def slots(workers: int | None, gpus: Sequence[int] | None) -> list[int | None]:
    """One entry per concurrent worker: a GPU index, or None for a single-thread CPU worker."""
    if gpus is None:
        import torch  # only to count the GPUs: the sweep process needs torch for nothing else (seconds to import)
        gpus = list(range(torch.cuda.device_count()))
    gpus = list(gpus)
    n = workers or len(gpus) or os.cpu_count() or 1
    return [gpus[i % len(gpus)] for i in range(n)] if gpus else [None] * n


def mark_failed(sweep_dir: Path, job_num: int) -> None:
    """The worker died without finishing its run: say so in MLflow (a rerun resumes it)."""
    try:
        doc = plan.read(sweep_dir)
        for e in doc["runs"]:
            if e["num"] == job_num:  # a run group's job holds several runs
                tracking.mark_failed(doc["tracking_uri"], doc["experiment"], e["config_hash"])
    except Exception as e:  # best effort: the sweep's exit code already says the run failed
        log.warning("could not mark job #%d failed in MLflow: %s", job_num, e)


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    free = deque(slots(launcher.workers, launcher.gpus))
    cpu_threads = launcher.config.train.threads or 1
    log.info("local pool: %d workers (%s)", len(free),
             "GPUs " + ",".join(str(s) for s in free) if free[0] is not None else f"CPU, {cpu_threads} thread each")
    todo = deque(job_arguments(job_overrides, initial_job_idx))
    running, results = [], {}
    progress = RunsProgress(len(todo), "local pool", unit="jobs")
    while todo or running:
        while todo and free:
            slot, args = free.popleft(), todo.popleft()
            ex = executor(launcher, cluster="local")
            ex.update_parameters(gpus_per_node=0 if slot is None else 1)
            # private: AutoExecutor refuses local_visible_gpus (LocalExecutor does not list it as valid), and
            # the hydra-submitit config maps onto AutoExecutor; pinned by test_private_apis_we_rely_on_still_exist
            ex._executor.update_parameters(visible_gpus=() if slot is None else (slot,))
            overrides = list(args[0])
            if slot is None and not any(o.startswith("train.threads=") for o in overrides):
                overrides.append(f"train.threads={cpu_threads}")  # one core each: no oversubscription
            running.append((slot, args, ex.submit(launcher, overrides, *args[1:])))
        time.sleep(POLL_S)
        for item in [r for r in running if r[2].done()]:
            running.remove(item)
            slot, args, job = item
            ret = collect(job, args[0])
            if ret.status == JobStatus.FAILED:  # a run that raised is FAILED already; a killed one is not
                mark_failed(sweep_dir, args[2])
            results[args[2]] = ret
            free.append(slot)
            progress.update(1, f"#{args[2]} {'failed' if ret.status == JobStatus.FAILED else 'done'}")
    progress.close()
    return [results[i] for i in sorted(results)]
