"""Hydra sweeper for the paper's grids: Hydra's cartesian product, minus runs that do not exist.

Two rules on top of ``BasicSweeper``:
- ``only_for_models``: a value of a key that exists only for some models, e.g. ``procedure=large_batch``
  only for ``uSF+BM`` and ``freeze=bottom`` only for Exp. C2's models; other combinations are dropped.
- identical runs are launched once: labels are compared canonically (``BM1`` is ``BM``), so the
  ``paper`` sweep trains a run shared by several tables once.
Jobs run one at a time with a progress bar under the in-process launcher, or all at once (one SLURM
array) under others. Failed jobs do not stop the sweep; they are counted and the sweep exits non-zero.
At the end the sweep prints the tables named by the ``tables`` config key.
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import OmegaConf

log = logging.getLogger("asym.sweep")


@dataclass
class AsymSweeperConf:
    _target_: str = "hydra_plugins.asym_sweeper.AsymSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    only_for_models: Dict[str, List[str]] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="asym", node=AsymSweeperConf, provider="asym")


def _canonical(label: str) -> str:
    try:
        from asym.models import parse_model
        return parse_model(label).label
    except ValueError:
        return label  # asym-train reports the bad label itself, as one line


def select_jobs(jobs: List[List[str]], only_for_models: Dict[str, List[str]]) -> List[List[str]]:
    """Drop combinations that do not exist and duplicates; keep the order."""
    allowed = {k: {_canonical(m) for m in v} for k, v in only_for_models.items()}
    seen, out = set(), []
    for job in jobs:
        kv = dict(o.split("=", 1) for o in job)
        model = _canonical(kv.get("model", ""))
        if any(f"{k}={v}" in allowed and model not in allowed[f"{k}={v}"] for k, v in kv.items()):
            continue
        identity = tuple(sorted({**kv, "model": model}.items()))
        if identity not in seen:
            seen.add(identity)
            out.append(job)
    return out


def preflight(config, jobs: List[List[str]]) -> None:
    """Every run valid and every dataset on disk, before anything is launched or queued: else one line, exit 2."""
    from asym import data
    from asym.config import RUN_KEYS, run_spec
    base = {k: config[k] for k in RUN_KEYS}
    checked = set()
    try:
        for job in jobs:
            kv = dict(o.split("=", 1) for o in job)
            run = OmegaConf.create({**base, **{k: kv[k] for k in RUN_KEYS if k in kv}})
            run_spec(run)
            where = (run.dataset, kv.get("data.root", config.data.root), kv.get("data.download", config.data.download))
            if where not in checked:
                checked.add(where)
                data.check_available(where[0], where[1], str(where[2]).lower() == "true")
    except (ValueError, data.DatasetMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


class AsymSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int], params: Optional[Dict[str, str]] = None,
                 only_for_models: Optional[Dict[str, List[str]]] = None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.only_for_models = dict(only_for_models or {})

    def sweep(self, arguments: List[str]) -> Any:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + list(arguments))
        jobs = select_jobs(BasicSweeper.split_arguments(overrides, None)[0], self.only_for_models)
        preflight(self.config, jobs)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        in_process = type(self.launcher).__name__ == "BasicLauncher"
        size = self.max_batch_size or (1 if in_process else len(jobs))
        log.info("sweep: %d runs (%s)", len(jobs), "one at a time" if in_process else type(self.launcher).__name__)
        self.validate_batch_is_legal(jobs)
        bar = _bar(len(jobs)) if in_process else None
        returns, failed = [], []
        for start in range(0, len(jobs), size):
            results = self.launcher.launch(jobs[start:start + size], initial_job_idx=start)
            returns.append(results)
            for job, r in zip(jobs[start:start + size], results):
                if r.status == JobStatus.FAILED:
                    failed.append((" ".join(job), r._return_value))
            if bar is not None:
                bar.update(len(results))
        if bar is not None:
            bar.close()
        self._print_tables()
        if failed:
            for job, err in failed:
                log.error("failed: %s: %s", job, str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise HydraException(f"{len(failed)} of {len(jobs)} runs failed (see above)")
        return returns

    def _print_tables(self) -> None:
        tables = list(self.config.get("tables") or [])
        if not tables:
            return
        try:
            from asym.analysis.cli import print_sweep_tables
        except ImportError:
            return
        print_sweep_tables(self.config, tables)


def _bar(total: int):
    """A tqdm bar in an interactive terminal; plain 'k/N runs done' log lines otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(total=total, desc="sweep", unit="run")

    class Lines:
        done = 0

        def update(self, n):
            self.done += n
            log.info("sweep progress: %d/%d runs done", self.done, total)

        def close(self):
            pass
    return Lines()
