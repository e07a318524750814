"""Hydra sweeper for the paper's grids: Hydra's cartesian product, minus runs that do not exist.

On top of ``BasicSweeper`` (see ``asym.launcher.plan``):
- ``only_for_models`` drops combinations that do not exist (``procedure=large_batch`` only for ``uSF+BM``,
  ``freeze=bottom|top`` only for Exp. C2's models) and identical runs are launched once (``BM1`` is ``BM``).
- ``seeds=K`` repeats every run with seed 0 … K-1 (``plan.expand_seeds``), each its own run;
- every job is checked on its config as Hydra composes it, and every dataset found on disk, before anything
  is written, launched or queued (one ``error:`` line otherwise); a sweep over sweep files
  (``+sweep=glob(table*)``) is the union of their grids; the plan is written to ``<sweep dir>/runs.json``
  for ``asym-status``.
- the launcher is checked with the sweep's job count before anything is written (SLURM: the cluster's limits).
- ``dry_run=true`` prints the plan and its estimated cost instead (``asym.launcher.dry_run``): nothing is
  queued, written or logged, and missing datasets are listed, not refused.
- in-process, jobs run one at a time under a progress bar; other launchers get one batch.
- failed jobs do not stop the sweep; they are counted and the sweep exits non-zero (hydra #1928).
- at the end, the tables named by the ``tables`` config key are printed.
- the sweep has an MLflow run of its own (``asym.kind = sweep``; not for a refused sweep, nor a dry run): its plan and
  overrides as artifacts, its jobs' new runs as its children, and when it ends its tables and report.
"""
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

# Hydra's default sweeper has no public import path; we extend it for its override splitting and batching
# rather than copy them (pinned by test_private_apis_we_rely_on_still_exist).
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from omegaconf import OmegaConf

from asym.record import RunStatus  # torch-free, a few names: cheap for every Hydra app's plugin scan

log = logging.getLogger("asym.sweep")


@dataclass
class AsymSweeperConf:
    _target_: str = "hydra_plugins.asym_hydra.sweeper.AsymSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    only_for_models: Dict[str, List[str]] = field(default_factory=dict)
    dry_run: bool = False   # print the plan and its cost (every launcher); queue, write and log nothing


ConfigStore.instance().store(group="hydra/sweeper", name="asym", node=AsymSweeperConf, provider="asym")


class AsymSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int], params: Optional[Dict[str, str]] = None,
                 only_for_models: Optional[Dict[str, List[str]]] = None, dry_run: bool = False):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.only_for_models = dict(only_for_models or {})
        self.dry_run = dry_run

    def sweep(self, arguments: List[str]) -> Any:
        from asym.launcher import plan
        from asym.launcher.progress import RunsProgress
        from asym.launcher.slurm import LaunchError

        dry = self._is_dry_run()
        missing = [] if dry else None  # the dry run lists missing datasets instead of refusing
        protocols: Optional[dict] = {} if dry else None  # and prices each run under its own protocol
        jobs, entries = self._planned(arguments, missing, protocols)
        if dry:
            return self._dry_run(entries, jobs, missing, protocols)
        self._check_tracking_access()
        if self.config.get("engine") == "group":
            jobs = plan.group_jobs(jobs, entries, self.config.lr_mult)
        self._check_launcher(len(jobs))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        plan.write(sweep_dir, entries, self.config)
        self._create_experiment()
        sweep_run = self._start_sweep_run(sweep_dir, entries, list(arguments))
        in_process = type(self.launcher).__name__ == "BasicLauncher"
        size = self.max_batch_size or (1 if in_process else len(jobs))
        log.info("sweep: %d runs in %d jobs (%s), plan in %s", len(entries), len(jobs), "one at a time" if in_process
                 else type(self.launcher).__name__, sweep_dir / plan.PLAN_FILE)
        unit = "run groups" if len(jobs) < len(entries) else "runs"
        progress = RunsProgress(len(jobs), unit=unit) if in_process else None
        returns, failed, queued = [], [], 0
        for start in range(0, len(jobs), size):
            try:
                results = self.launcher.launch(jobs[start:start + size], initial_job_idx=start)
            except LaunchError as e:
                self._end_sweep_run(sweep_run, RunStatus.FAILED)
                self._fail(str(e))
            except KeyboardInterrupt:  # Ctrl-C in the sweep process (its runs record themselves as interrupted)
                self._end_sweep_run(sweep_run, RunStatus.INTERRUPTED)
                print("asym-train: sweep interrupted; run the same command to resume it", file=sys.stderr)
                sys.exit(130)
            except BaseException:  # anything else (a launcher's own bug, SystemExit): the sweep's run says so
                self._end_sweep_run(sweep_run, RunStatus.FAILED)
                raise
            returns.append(results)
            for job, r in zip(jobs[start:start + size], results):
                if r.status == JobStatus.FAILED:
                    failed.append((" ".join(job), r._return_value))
                queued += r.status == JobStatus.UNKNOWN  # submitted, not waited for
            if progress is not None:
                progress.update(len(results))
        if progress is not None:
            progress.close()
        if queued:
            log.info("%d jobs queued; watch them with: asym-status %s", queued, sweep_dir)
        else:
            self._print_tables(entries)
        ended = RunStatus.FAILED if failed else RunStatus.QUEUED if queued else RunStatus.FINISHED
        self._end_sweep_run(sweep_run, ended, None if queued else entries)
        if failed:
            for job, err in failed:
                log.error("failed: %s: %s", job, str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise HydraException(f"{len(failed)} of {len(jobs)} {unit} failed (see above)")
        return returns

    def _is_dry_run(self) -> bool:
        """``hydra.sweeper.dry_run``, or its alias ``hydra.launcher.dry_run`` (the SLURM launcher's older key)."""
        return bool(self.dry_run or getattr(self.launcher, "dry_run", False))

    def _check_launcher(self, n_jobs: int) -> None:
        """Before the sweep directory exists: the launcher's settings and, for SLURM, whether ``n_jobs`` fit the
        cluster's limits (asym.launcher.cluster) — one line if not."""
        from asym.launcher.slurm import LaunchError
        check = getattr(self.launcher, "check", None)
        try:
            if check is not None:
                check(n_jobs)
        except LaunchError as e:
            self._fail(str(e))

    def _dry_run(self, entries: List[dict], jobs: List[List[str]], missing: List[tuple], protocols: dict) -> list:
        """Print the plan and its cost; nothing is queued, written or logged (asym.launcher.dry_run)."""
        from asym.launcher import dry_run, plan
        if self.config.get("engine") == "group":
            jobs = plan.group_jobs(jobs, entries, self.config.lr_mult)
        describe = getattr(self.launcher, "describe", None)
        if describe is not None:
            lines, appendix = describe(len(jobs))
        elif type(self.launcher).__name__ == "BasicLauncher":
            lines, appendix = [f"in-process: {len(jobs)} jobs, one at a time in this process"], ""
        else:
            lines, appendix = [f"{type(self.launcher).__name__}: {len(jobs)} jobs"], ""
        print(dry_run.report(self.config, entries, len(jobs), lines, missing, protocols), flush=True)
        if appendix:
            print(appendix, flush=True)
        return []

    # --- validation: the whole sweep checked before anything is written, queued or launched ---------------------

    def _planned(self, arguments: List[str], missing: Optional[list] = None,
                 protocols: Optional[dict] = None) -> Tuple[List[List[str]], List[dict]]:
        """The sweep's jobs (Hydra's parse and split of the sweep file's params and the command line) and their
        plan, every job checked on its composed config and every dataset found; one ``error:`` line and exit 2
        otherwise, before anything exists. Replaces ``validate_batch_is_legal`` (a full composition per job:
        minutes for the paper's 2,700 runs) with ``plan.plan``'s per-job check on Hydra's composition."""
        from omegaconf.errors import OmegaConfBaseException

        from asym.data import DatasetMissing
        from asym.launcher import plan
        from asym.overrides import explain
        try:
            jobs = plan.sweep_jobs(self.config, list(arguments), self.hydra_context.config_loader)
            entries = plan.plan(self.config, jobs, self._job_config, missing=missing, protocols=protocols)
        except (ValueError, DatasetMissing) as e:
            self._fail(str(e))
        except (HydraException, OmegaConfBaseException) as e:
            self._fail(explain(e, list(arguments)))
        return [e["overrides"] for e in entries], entries

    def _check_tracking_access(self) -> None:
        """Before the sweep directory exists and anything is queued: the server takes these credentials for writing."""
        from asym import tracking
        try:
            tracking.require_write_access(self.config.tracking.uri, self.config.tracking.experiment)
        except tracking.AccessError as e:
            self._fail(str(e))

    def _create_experiment(self) -> None:
        """Once, before any worker starts: concurrent creation from many jobs misroutes runs."""
        from asym import tracking
        tracking.limit_http_retries()
        try:
            tracking.ensure_experiment(self.config.tracking.uri, self.config.tracking.experiment)
        except Exception as e:  # the runs still run; their result.json and asym-sync cover tracking
            log.warning("MLflow unreachable (%s); runs will keep local records for asym-sync",
                        str(e).splitlines()[0][:200])

    def _start_sweep_run(self, sweep_dir: Path, entries: List[dict], arguments: List[str]) -> Optional[str]:
        """The sweep's MLflow run, after every check passed and never for a dry run: its plan (runs.json), the
        composed config and the overrides as artifacts. Its id reaches the jobs (in this process, local
        subprocesses or SLURM tasks alike) through the environment, so each new run becomes its child."""
        from asym import tracking
        from asym.launcher import plan
        title = self._sweep_title(self.config.hydra.runtime.choices.get("sweep"), arguments)
        OmegaConf.save(OmegaConf.create({"overrides": arguments, "sweeper_params": self._parse_config()}),
                       sweep_dir / "overrides.yaml")
        note = (f"Sweep {title}: {len(entries)} runs for table(s) {', '.join(self._tables(entries))}, in {sweep_dir}. "
                "Its new runs are its children; its artifacts hold its plan (runs.json), overrides and, once it ends, "
                "its tables (tables/tables.html, .csv, .md) and report.html. Regenerate them: asym-report "
                "--log-to-mlflow RUN_ID (this run's id).")
        try:
            run_id = tracking.start_sweep_run(
                self.config.tracking.uri, self.config.tracking.experiment, f"{title} · {len(entries)} runs",
                {tracking.PROTOCOL_TAG: self._protocol(entries), tracking.NOTE_TAG: note},  # no "tables": that filter is runs
                [sweep_dir / plan.PLAN_FILE, sweep_dir / "overrides.yaml", sweep_dir / "multirun.yaml"])
        except Exception as e:  # the runs still run; they keep their records for asym-sync
            log.warning("MLflow unreachable (%s): the sweep has no MLflow run", str(e).splitlines()[0][:200])
            return None
        os.environ[tracking.SWEEP_RUN_ENV] = run_id
        exp_id = tracking.client(self.config.tracking.uri).get_run(run_id).info.experiment_id
        log.info("MLflow: sweep run %s; its runs and tables at %s", run_id,
                 tracking.experiment_url(self.config.tracking.uri, exp_id))
        return run_id

    def _sweep_title(self, sweep: Optional[str], arguments: List[str]) -> str:
        """What tells this sweep from others, for its run's name: its sweep file, else its swept overrides (as Hydra
        parses them), else all its overrides."""
        from hydra.core.override_parser.overrides_parser import OverridesParser
        if sweep:
            return f"+sweep={sweep}"
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(arguments)
        return " ".join(o.input_line for o in parsed if o.is_sweep_override()) or " ".join(arguments) or "sweep"

    def _end_sweep_run(self, run_id: Optional[str], status: RunStatus, entries: Optional[List[dict]] = None) -> None:
        """The sweep's MLflow run ends ``status``; with ``entries`` (a sweep that ran its jobs) it first gets its
        tables, its report and the list of its runs. A tracking failure is a warning: the runs are done."""
        from asym import tracking
        os.environ.pop(tracking.SWEEP_RUN_ENV, None)
        if run_id is None:
            return
        try:
            if entries is not None:
                from asym.analysis.report import publish_sweep
                publish_sweep(self.config, run_id, self._tables(entries), self._protocol(entries), entries)
            tracking.end_sweep_run(self.config.tracking.uri, run_id, status)
        except Exception as e:
            log.warning("could not finish the sweep's MLflow run %s (%s); asym-report --log-to-mlflow %s logs its "
                        "tables later", run_id, str(e).splitlines()[0][:200], run_id)

    def _job_config(self, overrides: List[str]):
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    @staticmethod
    def _fail(message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

    def _tables(self, entries: List[dict]) -> List[str]:
        """The sweep file's tables, else every table the sweep's runs feed (an ad-hoc ``-m model=…`` sweep too)."""
        return list(self.config.get("tables") or sorted({t for e in entries for t in e["tables"]}))

    @staticmethod
    def _protocol(entries: List[dict]) -> Optional[str]:
        """This sweep's protocol: the protocol hash most of its runs have."""
        from collections import Counter
        mine = Counter(e["protocol_hash"] for e in entries).most_common(1)
        return mine[0][0] if mine else None

    def _print_tables(self, entries: List[dict]) -> None:
        tables = self._tables(entries)
        if tables:
            from asym.analysis.render import print_sweep_tables
            print_sweep_tables(self.config, tables, self._protocol(entries))
