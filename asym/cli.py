"""``asym-train``: the Hydra entry point. One run per job; ``-m`` sweeps (``asym-sync``: ``asym.launcher.sync``).

The command line is checked first, by Hydra (``asym.overrides``): a bad override is one ``error:`` line before
Hydra creates a directory and before torch, the training loop or MLflow is imported — they are imported inside
the functions that run a job (``run_one`` and its helpers), when a run really starts.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import hydra
from hydra.core.config_store import ConfigStore
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from . import config as schema
from . import data, overrides, tracking
from .files import write_json
from .labels import parse_model
from .launcher import plan
from .overrides import OverrideError
from .protocol import RunSpec
from .record import (BEST_EPOCH, BEST_ERROR, DONE, RESULT_FILE, SELECTED_EPOCH, SELECTED_ERROR, SELECTED_HOLDOUT_ERROR,
                     RunStatus)

if TYPE_CHECKING:
    import torch

log = logging.getLogger("asym")


def register_sweeps() -> None:
    """sweeps/*.yaml become the ``sweep`` config group (``+sweep=table2``), in editable and wheel installs alike."""
    cs = ConfigStore.instance()
    for f in resources.files("asym.sweeps").iterdir():
        if f.name.endswith(".yaml"):
            cs.store(group="sweep", name=f.name[:-5], node=OmegaConf.create(f.read_text()), package="_global_")


def register_plugins() -> None:
    """Hydra finds plugins by scanning hydra_plugins, which misses editable installs: register ours directly."""
    from hydra.core.plugins import Plugins
    plugins = Plugins.instance()  # first: its scan re-executes hydra's plugin modules (new BasicSweeper class)
    from hydra_plugins.asym_hydra import AsymLocalLauncher, AsymSlurmLauncher, AsymSweeper
    for plugin in (AsymSweeper, AsymSlurmLauncher, AsymLocalLauncher):
        plugins.register(plugin)


schema.register()
register_sweeps()
register_plugins()


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2, nothing trained or logged."""


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def run_dir(cfg: DictConfig, run, protocol: dict) -> Path:
    """Deterministic per run (not timestamped), so a relaunch finds its checkpoint."""
    h = tracking.config_hash(asdict(run), protocol)
    label = parse_model(run.model).label.replace("+", "_")
    return Path(to_absolute_path(cfg.output_root)) / run.dataset.replace(":", "_").replace("/", "_") / label / \
        f"lr{run.lr_mult:g}-{run.freeze}-{run.procedure}-{h[:8]}"


def device_of(cfg: DictConfig) -> "torch.device":
    import torch
    if cfg.train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.train.device)


def flat_params(cfg: DictConfig) -> dict:
    out = {}
    def walk(prefix, node):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            elif k not in ("tables",):
                out[f"{prefix}{k}"] = v
    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out


@dataclass
class Member:
    """One run of a job (a job is one run, or a run group under ``engine=group``) and its tracking."""

    run: RunSpec
    out_dir: Path
    tracker: tracking.RunTracker
    existing: object
    name: str


def job_runs(cfg: DictConfig) -> list[RunSpec]:
    """The job's runs: ``lr_mults`` (a run group) or the single ``lr_mult``; ValueError with one line if bad."""
    run = schema.run_spec(cfg)
    return [replace(run, lr_mult=float(m)).validate() for m in cfg.lr_mults] if cfg.lr_mults else [run]


def check_job(cfg: DictConfig) -> None:
    """Everything a job needs, before it starts: every value (``check_config``), write access to the tracking
    server, the dataset on disk. UsageError with one line otherwise. A single run is checked before Hydra
    creates its directory (``train``); every job again where it runs (a SLURM task, a pool worker)."""
    try:
        schema.check_config(cfg)
        run = job_runs(cfg)[0]
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        tracking.require_write_access(cfg.tracking.uri, cfg.tracking.experiment)
        data.check_available(run.dataset, to_absolute_path(cfg.data.root), cfg.data.download, seed=run.seed,
                             cache=cfg.data.cache)
    except (ValueError, data.DatasetMissing, tracking.AccessError) as e:
        raise UsageError(str(e)) from None


def job_members(cfg: DictConfig, protocol: dict) -> list[Member]:
    """The job's runs (checked by ``check_job``) and their tracking."""
    runs = job_runs(cfg)
    uri = tracking.resolve_uri(cfg.tracking.uri)
    tracking.limit_http_retries()
    members = []
    for r in runs:
        tracker = tracking.RunTracker(uri, cfg.tracking.experiment, asdict(r), protocol, flat_params(cfg))
        members.append(Member(r, run_dir(cfg, r, protocol), tracker, tracker.existing(), tracking.run_name(asdict(r))))
    return members


def is_done(m: Member) -> bool:
    status = tracking.status_of(m.existing)
    if status in DONE:
        log.info("skip %s: already %s (MLflow run %s)", m.name, status, m.existing.info.run_id)
    return status in DONE


def start_tracking(cfg: DictConfig, m: Member, history: list[dict] | None) -> None:
    """Reopen the member's MLflow run when its checkpoint resumes it (``history``: the epochs the checkpoint holds,
    logged where MLflow lacks them). A run that starts from epoch 0 gets a new MLflow run — linked to the one it
    replaces, if any (its run directory was deleted, ``output_root`` changed, or ``train.restart=true``) — so no
    epoch is ever logged twice."""
    from .train import git_commit
    m.out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, m.out_dir / "config.yaml")
    if history is not None:
        m.tracker.start(m.existing, git_commit())
        if history:
            m.tracker.catch_up(history)
    else:
        m.tracker.start(None, git_commit(), replaces=m.existing)


def finish_tracking(m: Member, result: dict) -> None:
    result["mlflow_run_id"] = m.tracker.run_id
    result["mlflow_synced"] = m.tracker.finish(result, m.out_dir)
    write_json(m.out_dir / RESULT_FILE, result)
    if not result["mlflow_synced"]:
        log.warning("%s finished but is not in MLflow yet; its record is %s (run asym-sync)", m.name,
                    m.out_dir / RESULT_FILE)
    if result["status"] not in (RunStatus.FAILED, RunStatus.INTERRUPTED):
        log.info("%s: %s, best val error %.2f%% at epoch %s; %s", m.name, result["status"], result[BEST_ERROR],
                 result[BEST_EPOCH], selection_note(result))


def selection_note(result: dict) -> str:
    """How the run's number was chosen (``train.select_on``), for its end-of-run line."""
    if result.get("select_on", "test") == "test":
        return "select_on=test (the paper's: epoch chosen on the test split)"
    if result.get(SELECTED_EPOCH) is None:
        return "select_on=val: no epoch to select"
    return (f"select_on=val: epoch {result[SELECTED_EPOCH]} chosen on the holdout "
            f"({result[SELECTED_HOLDOUT_ERROR]:.2f}% there), test error {result[SELECTED_ERROR]:.2f}%")


def checkpoint_path(members: list[Member]) -> Path:
    """A run's checkpoint lives in its run directory; a group's in a folder named by its members."""
    if len(members) == 1:
        return members[0].out_dir / "checkpoint.pt"
    group = tracking.group_hash([m.tracker.hash for m in members])[:8]
    return members[0].out_dir.parent / f"group-{group}" / "checkpoint.pt"


_loaded: dict[tuple, object] = {}  # the dataset this process loaded last, by what it was loaded from


def load_data(name: str, root: str, seed: int, download: bool, cache: str | None):
    """``asym.data.load``, once per process for consecutive runs on the same dataset: an array task of
    ``hydra.launcher.runs_per_task`` runs (or an in-process sweep) decodes or reads it once, not per run.

    The key is everything the tensors depend on — name, root, seed, cache, and the working directory a
    relative path means — so a run never gets another root's data. Only the last dataset is kept (memory).
    """
    key = (name, str(Path(root).resolve()), seed, str(Path(cache).resolve()) if cache else None, os.getcwd())
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = data.load(name, root, seed=seed, download=download, cache=cache)
        log.info("loaded dataset %s from %s", name, data_source(name, root))
    return _loaded[key]


def data_source(name: str, root: str) -> str:
    """Where a dataset's files really come from, for the log: scikit-learn's bundled digits are not under
    ``data.root``; a ``folder:``/``npz:`` dataset is its own path."""
    meta = data.info(name)
    if meta.reader == "digits":
        return "scikit-learn's bundled copy (sklearn.datasets.load_digits)"
    return str(Path(meta.source).resolve()) if meta.reader.startswith("user_") else str(Path(root).resolve())


def run_one(cfg: DictConfig) -> list[dict]:
    """Validate, skip what is done, train the job's runs (resuming), track. Returns the results of what was trained."""
    import torch

    from . import train as trainer
    check_job(cfg)  # before anything trains (a sweep's jobs were planned, but a worker checks its own)
    protocol = schema.TrainConf(**OmegaConf.to_container(cfg.train, resolve=True)).protocol()
    members = [m for m in job_members(cfg, asdict(protocol)) if not is_done(m)]
    if not members:
        return []
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    lead = members[0].run
    ds = load_data(lead.dataset, to_absolute_path(cfg.data.root), lead.seed, cfg.data.download, cfg.data.cache)
    runs, ckpt = [m.run for m in members], checkpoint_path(members)
    try:  # before any run directory or MLflow run: batch sizes that fit, a checkpoint that can resume this job
        trainer.check_batches(runs, ds, protocol)
        found = None if cfg.train.restart else trainer.Checkpoint.find(ckpt, trainer.job_identity(runs, protocol),
                                                                       warn=False)  # train() warns
    except (ValueError, trainer.CheckpointError) as e:
        raise UsageError(str(e)) from None
    for k, m in enumerate(members):
        start_tracking(cfg, m, found[1]["histories"][k] if found else None)
        m.tracker.log_dataset(ds)
    if len(members) > 1:
        log.info("run group of %d: %s", len(members), ", ".join(m.name for m in members))
    try:
        results = trainer.train([m.run for m in members], ds, [m.out_dir for m in members], protocol, device_of(cfg),
                                checkpoint=ckpt, on_epoch=lambda k, rec: members[k].tracker.log_epoch(rec),
                                config=flat_params(cfg), title=members[0].name if len(members) == 1 else None,
                                compile=cfg.train.compile, restart=cfg.train.restart)
    except trainer.Interrupted:
        for m in members:  # KILLED in MLflow with status=interrupted; the same command resumes it
            if (m.out_dir / RESULT_FILE).exists():
                finish_tracking(m, json.loads((m.out_dir / RESULT_FILE).read_text()))
        raise
    except trainer.CheckpointError as e:  # found unusable between the preflight and the load: nothing trained
        raise UsageError(str(e)) from None
    except Exception as e:
        for m in members:  # each member's failed record, with the epochs it finished
            if (m.out_dir / RESULT_FILE).exists():
                finish_tracking(m, json.loads((m.out_dir / RESULT_FILE).read_text()))
        what = f"run {members[0].name}" if len(members) == 1 else f"run group {members[0].name}…"
        raise RuntimeError(f"{what} failed: {type(e).__name__}: {e}") from e
    for m, result in zip(members, results):
        finish_tracking(m, result)
    return results


@contextlib.contextmanager
def in_launch_dir():
    """One base directory: every relative path — ``data.root``, a ``folder:``/``npz:`` dataset, ``output_root``,
    ``data.cache``, a relative ``sqlite:///`` URI, MLflow's default ``./mlruns`` artifact root — means the
    directory the command was launched from, whatever ``hydra.job.chdir`` says and under every launcher
    (Hydra records it as ``hydra.runtime.cwd``). The job works there and returns to Hydra's job directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd
    here = os.getcwd()
    os.chdir(get_original_cwd() if HydraConfig.initialized() else here)
    try:
        yield
    finally:
        os.chdir(here)


@hydra.main(config_path=overrides.PRIMARY[0], config_name=overrides.PRIMARY[1], version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from .train import Interrupted
    try:
        with in_launch_dir():
            run_one(cfg)
    except UsageError as e:
        fail(str(e))
    except Interrupted as e:  # one line, no trace; a sweep stops here too (SystemExit passes Hydra)
        print(f"asym-train: {e}; the last finished epoch is kept: run the same command to resume",
              file=sys.stderr, flush=True)
        sys.exit(e.exit_code)


def train() -> None:
    """Console script ``asym-train``: the command line checked first, so a bad override costs one line (exit 2)
    and leaves nothing behind — not even Hydra's ``logs/<time>`` directory; then ``hydra.main`` runs it."""
    # Hydra's own command-line parser, so what we check is exactly what hydra.main will see; it has no public
    # import path (pinned by test_private_apis_we_rely_on_still_exist)
    from hydra._internal.utils import get_args_parser
    args = get_args_parser().parse_args()
    try:
        argv = preflight(args)
    except (ValueError, UsageError) as e:  # OverrideError, and every check_config/plan line, are ValueErrors
        fail(str(e))
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    _main()


SHOW = "--cfg, --info and --help"


def preflight(args) -> Optional[list[str]]:
    """``asym-train``'s command line (``args``: Hydra's parse of it) checked as ``hydra.main`` will run it.

    - a run: its config as Hydra composes it, then ``check_job`` (values, tracking access, dataset); a
      ``seeds`` above 1 needs ``-m``;
    - a sweep (``-m``): its primary config as Hydra composes it; the sweeper checks every job (``plan``);
    - ``--cfg``/``--info``/``--help``: the config they show must compose; with ``-m`` they show the sweep's
      first job (``show_first_job``), and the command line that does so is returned for ``hydra.main``.

    Raises OverrideError/UsageError with one line. Returns the arguments to run Hydra with, None to keep them."""
    commands = [f for f, on in (("--run", args.run), ("--multirun", args.multirun), ("--cfg", args.cfg),
                                ("--info", args.info), ("--shell-completion", args.shell_completion)) if on]
    shows = bool(args.cfg or args.info or args.help)
    if len(commands) > 1 and not (args.multirun and len(commands) == 2 and (args.cfg or args.info)):
        raise OverrideError(f"{' and '.join(commands)} together: choose one (-m goes with {SHOW}: they show the "
                            "sweep's first job)")
    if args.resolve and not (args.cfg or args.help):
        raise OverrideError("--resolve goes with --cfg or --help")
    if args.hydra_help or args.shell_completion:
        return None
    with overrides.session(args.config_path, args.config_dir, _main.__wrapped__) as loader:
        if args.multirun and shows:
            return show_first_job(args, loader)
        cfg = overrides.compose(loader, args.overrides, multirun=args.multirun, config_name=args.config_name)
        if shows or args.multirun:
            return None
    if isinstance(cfg.seeds, int) and cfg.seeds > 1:
        raise UsageError(f"seeds={cfg.seeds} repeats the runs of a sweep: add -m (asym-train -m … seeds={cfg.seeds}), "
                         "or choose one run's seed with seed=N")
    check_job(cfg)
    return None


def show_first_job(args, loader) -> list[str]:
    """``-m`` with ``--cfg``/``--info``/``--help``: Hydra shows one config, a sweep has many. The sweep is planned
    as the sweeper plans it (every job checked; datasets and tracking are not), a comment line says how many jobs
    it has and the first job's overrides, and Hydra's own ``--cfg``/``--info``/``--help`` shows that job's config
    (returned: the command line to run Hydra with, without ``-m``)."""
    master = overrides.compose(loader, args.overrides, multirun=True, config_name=args.config_name)
    jobs = plan.sweep_jobs(master, list(master.hydra.overrides.task), loader)
    entries = plan.plan(master, jobs, lambda o: loader.load_sweep_config(master, list(o)), check_data=False)
    first = [*master.hydra.overrides.hydra, *entries[0]["overrides"]]
    overrides.compose(loader, first, config_name=args.config_name)
    print(f"# asym-train -m: {len(entries)} runs; below, the first one's: {' '.join(entries[0]['overrides'])}",
          flush=True)
    flags = [*(["--cfg", args.cfg] if args.cfg else []), *(["--package", args.package] if args.package else []),
             *(["--resolve"] if args.resolve else []), *(["--info", args.info] if args.info else []),
             *(["--help"] if args.help else []),
             *(["--config-path", args.config_path] if args.config_path else []),
             *(["--config-name", args.config_name] if args.config_name else []),
             *(["--config-dir", args.config_dir] if args.config_dir else [])]
    return [*flags, *first]
