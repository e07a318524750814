"""``asym-train``: the Hydra entry point. One run per job; ``-m`` sweeps; ``asym-sync`` uploads local records."""
from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from . import config as schema
from . import tracking
from .train import git_commit, train_run, write_json

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


CONFIG_GROUPS = ("train", "tracking", "sweep")


def group_options(group: str) -> list[str]:
    """Options of a config group: yaml files under conf/ plus ConfigStore entries (sweeps, schemas)."""
    names = {n[:-5] for n in ConfigStore.instance().list(group) if n.endswith(".yaml")} if group in \
        ConfigStore.instance().repo else set()
    folder = resources.files("asym.conf") / group
    if folder.is_dir():
        names |= {f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml")}
    return sorted(names - {"schema"})


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2, nothing trained or logged."""


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def run_dir(cfg: DictConfig, run, protocol: dict) -> Path:
    """Deterministic per run (not timestamped), so a relaunch finds its checkpoint."""
    from .models import parse_model
    h = tracking.config_hash(asdict(run), protocol)
    label = parse_model(run.model).label.replace("+", "_")
    return Path(to_absolute_path(cfg.output_root)) / run.dataset.replace(":", "_").replace("/", "_") / label / \
        f"lr{run.lr_mult:g}-{run.freeze}-{run.procedure}-{h[:8]}"


def device_of(cfg: DictConfig) -> torch.device:
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


def run_one(cfg: DictConfig) -> dict | None:
    """Validate, skip if done, train (resuming), track. Returns the result, or None when skipped."""
    from . import data
    try:
        run = schema.run_spec(cfg)
        data.check_available(run.dataset, to_absolute_path(cfg.data.root), cfg.data.download)
    except (ValueError, data.DatasetMissing) as e:
        raise UsageError(str(e)) from None
    protocol = schema.TrainConf(**OmegaConf.to_container(cfg.train, resolve=True)).protocol()
    proto_dict = asdict(protocol)
    out_dir = run_dir(cfg, run, proto_dict)
    uri = tracking.resolve_uri(cfg.tracking.uri)
    tracking.limit_http_retries()
    tracker = tracking.RunTracker(uri, cfg.tracking.experiment, asdict(run), proto_dict, flat_params(cfg))
    existing = tracker.existing()
    name = tracking.run_name(asdict(run))
    if existing is not None and existing.data.tags.get(tracking.STATUS_TAG) in tracking.DONE:
        log.info("skip %s: already %s (MLflow run %s)", name, existing.data.tags[tracking.STATUS_TAG],
                 existing.info.run_id)
        return None
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ds = data.load(run.dataset, to_absolute_path(cfg.data.root), seed=run.seed, download=cfg.data.download,
                   cache=cfg.data.cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml")
    tracker.start(existing, git_commit())
    if existing is not None and (out_dir / "checkpoint.pt").exists():
        state = torch.load(out_dir / "checkpoint.pt", weights_only=True, map_location="cpu")
        tracker.catch_up(state["history"])
    try:
        result = train_run(run, ds, out_dir, protocol, device_of(cfg), on_epoch=tracker.log_epoch,
                           config=flat_params(cfg), title=name)
    except Exception as e:
        import json
        failed = json.loads((out_dir / "result.json").read_text())
        tracker.finish(failed, out_dir)
        raise RuntimeError(f"run {name} failed: {type(e).__name__}: {e}") from e
    result["mlflow_run_id"] = tracker.run_id
    result["mlflow_synced"] = tracker.finish(result, out_dir)
    write_json(out_dir / "result.json", result)
    if not result["mlflow_synced"]:
        log.warning("%s finished but is not in MLflow yet; its record is %s (run asym-sync)", name,
                    out_dir / "result.json")
    log.info("%s: %s, best val error %.2f%% at epoch %s", name, result["status"], result["best_val_error"],
             result["best_epoch"])
    return result


@hydra.main(config_path="pkg://asym.conf", config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    try:
        run_one(cfg)
    except UsageError as e:
        fail(str(e))


def train() -> None:
    """Console script ``asym-train``: overrides are checked first, so a typo costs one line, not a trace."""
    from hydra._internal.utils import get_args_parser
    args = get_args_parser().parse_args()
    try:
        schema.check_overrides(args.overrides, {g: group_options(g) for g in CONFIG_GROUPS})
    except ValueError as e:
        fail(str(e))
    _main()


def sync() -> None:
    """Console script ``asym-sync OUTPUT_ROOT [--tracking-uri URI] [--experiment NAME]``."""
    import argparse
    ap = argparse.ArgumentParser(description="Upload local run records (result.json) that MLflow lacks.")
    ap.add_argument("output_root", nargs="?", default="runs")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    a = ap.parse_args()
    if not Path(a.output_root).is_dir():
        fail(f"no run directory at {a.output_root}")
    try:
        counts = tracking.sync(a.output_root, a.tracking_uri, a.experiment)
    except RuntimeError as e:
        fail(str(e))
    print(f"asym-sync: {counts['uploaded']} uploaded, {counts['already']} already in MLflow")
