"""The Hydra schema: structured configs, so a typo in a key fails at startup; value checks in ``validate``."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from .protocol import Protocol, RunSpec


@dataclass
class DataConf:
    root: str = "data"              # where datasets live (see asym.data for each layout)
    download: bool = False          # let torchvision fetch the datasets it knows (needs internet)
    cache: Optional[str] = None     # preprocessed tensors; default ~/.cache/asym or $ASYM_CACHE


@dataclass
class TrainConf(Protocol):
    device: str = "auto"            # auto: cuda if available, else cpu
    threads: int = 0                # torch CPU threads; 0 leaves torch's default
    compile: bool = False           # torch.compile the network: same numbers within float tolerance (not hashed)
    restart: bool = False           # discard the run's checkpoints and start it over, in a new MLflow run (not hashed)

    def protocol(self) -> Protocol:
        return Protocol(**{k: v for k, v in asdict(self).items() if k in Protocol.__dataclass_fields__})


@dataclass
class TrackingConf:
    uri: Optional[str] = None       # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment: str = "weight-symmetry"
    system_metrics: bool = False    # MLflow's CPU/memory/disk/network (+ GPU with nvidia-ml-py) metrics per run


@dataclass
class Config:
    model: str = "SGD"              # a paper label, e.g. uSF+BN+BM (asym.parse_model)
    dataset: str = "digits"
    lr_mult: float = 1.0
    freeze: str = "none"            # none | bottom | top (Exp. C2)
    procedure: str = "standard"     # standard | large_batch (uSF+BM's second procedure)
    seed: int = 0
    seeds: int = 1                  # a sweep (-m) repeats each of its runs with seed = 0 … seeds-1
    output_root: str = "runs"       # run directories (checkpoint.pt, result.json) live here
    tables: list[str] = field(default_factory=list)   # printed at the end of a multirun
    engine: str = "single"          # single: one run per job; group: a model's lr multipliers as one network
    lr_mults: list[float] = field(default_factory=list)  # a run group (set by the sweeper under engine=group)
    data: DataConf = field(default_factory=DataConf)
    train: TrainConf = field(default_factory=TrainConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="train", name="schema", node=TrainConf)
    cs.store(group="tracking", name="schema", node=TrackingConf)


def run_spec(cfg: Any) -> RunSpec:
    """The validated run a composed config describes; ValueError with one clear line otherwise."""
    from . import data
    data.info(cfg.dataset)
    return RunSpec(str(cfg.model), str(cfg.dataset), float(cfg.lr_mult), str(cfg.freeze), str(cfg.procedure),
                   int(cfg.seed)).validate()


def check_config(cfg: Any) -> None:
    """Every value of a composed config checked before anything runs: ValueError with one line naming it.

    The run keys (``run_spec``), every ``train.*`` value (``Protocol.validate``, ``device``, ``threads``),
    ``engine`` and ``lr_mults``, and the paths and names that must not be empty."""
    from omegaconf.errors import OmegaConfBaseException
    try:
        _check_config(cfg)
    except OmegaConfBaseException as e:  # e.g. an interpolation that does not resolve: one line, not a trace
        raise ValueError(str(e).splitlines()[0]) from None


def _check_config(cfg: Any) -> None:
    import torch
    run_spec(cfg)
    train = TrainConf(**OmegaConf.to_container(cfg.train, resolve=True))
    train.protocol().validate()
    try:
        device = train.device if train.device == "auto" else torch.device(train.device)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None:
        raise ValueError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {train.device!r}")
    if not (isinstance(train.threads, int) and train.threads >= 0):
        raise ValueError(f"train.threads must be an integer ≥ 0 (0: torch's default), got {train.threads!r}")
    if cfg.engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {cfg.engine!r}")
    if train.amp == "fp16" and cfg.engine == "group":
        from .engine import FP16_GROUP_ERROR
        raise ValueError(FP16_GROUP_ERROR)
    for m in cfg.lr_mults or []:
        RunSpec(cfg.model, cfg.dataset, float(m)).validate()
    check_seeds(cfg.seeds)
    for key in ("output_root", "data.root", "tracking.experiment"):
        if not str(OmegaConf.select(cfg, key) or "").strip():
            raise ValueError(f"{key} must not be empty")


def train_option(name: str) -> Protocol:
    """The protocol of a ``conf/train`` option (``paper``, ``demo``), its ``defaults`` followed."""
    from importlib import resources
    node = OmegaConf.create((resources.files("asym.conf") / "train" / f"{name}.yaml").read_text())
    merged = OmegaConf.structured(TrainConf)
    for parent in node.pop("defaults", []):
        if parent != "schema":
            merged = OmegaConf.merge(merged, OmegaConf.structured(TrainConf(**dataclasses.asdict(train_option(parent)))))
    merged = OmegaConf.merge(merged, node)
    return TrainConf(**OmegaConf.to_container(merged)).protocol()


def named_protocols() -> dict[str, str]:
    """protocol hash → name, for every ``conf/train`` option (how tables and status name a protocol)."""
    from importlib import resources

    from .tracking import protocol_hash
    names = sorted(f.name[:-5] for f in (resources.files("asym.conf") / "train").iterdir() if f.name.endswith(".yaml"))
    return {protocol_hash(asdict(train_option(n))): n for n in names if n != "schema"}


def check_seeds(seeds: Any) -> int:
    """``seeds``, the number of seeds a sweep runs each run with: a positive integer, else ValueError."""
    if not (isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1):
        raise ValueError(f"seeds must be a positive integer (each run of a sweep with seed = 0 … seeds-1), got {seeds!r}")
    return seeds


RUN_KEYS = ("model", "dataset", "lr_mult", "freeze", "procedure", "seed")
ENGINES = ("single", "group")


def _known_keys(cls=Config, prefix: str = "") -> list[str]:
    out = []
    for name, f in cls.__dataclass_fields__.items():
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            out += _known_keys(sub, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def check_overrides(args: list[str], groups: dict[str, list[str]]) -> None:
    """Command-line overrides checked against the schema before Hydra composes anything.

    Hydra reports a misspelt key or a badly typed value as a multi-line trace; we want one line.
    Raises ValueError naming the bad key or value. ``groups`` maps each config group (``train``,
    ``sweep``…) to its options.
    """
    import difflib

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception as e:
        raise ValueError(str(e).splitlines()[0]) from None
    keys = _known_keys()
    for o in overrides:
        key = o.key_or_group
        if key in groups:
            bad = [v for v in _values(o) if v not in groups[key]]
            if bad:
                raise ValueError(f"no {key} config '{bad[0]}'; choose from {', '.join(groups[key])}")
            continue
        if key == "hydra.launcher.runs_per_task" and not o.is_delete():
            from asym.launcher.slurm import check_runs_per_task  # the launcher owns its rule
            check_runs_per_task(o.value())
        if o.is_delete() or key.split("/")[0].split(".")[0] == "hydra":
            continue
        if o.is_add() and key in keys:  # Hydra's rule: '+' appends a new key; '++' appends or overrides
            raise ValueError(f"'+{key}' adds a key the config already has; write {key}=… or ++{key}=…")
        if key == "seeds" and o.is_sweep_override():
            raise ValueError("seeds is a count, not a sweep axis: seeds=3 runs seeds 0, 1, 2 (or sweep seed=0,1,2)")
        if key not in keys:
            hint = difflib.get_close_matches(key, keys, n=1)
            raise ValueError(f"unknown config key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                             + f"; keys: {', '.join(k for k in keys if '.' not in k)}, data.*, train.*, tracking.*")
        for v in _values(o):
            try:
                cfg = OmegaConf.structured(Config)
                OmegaConf.update(cfg, key, v, merge=True)
            except OmegaConfBaseException as e:
                raise ValueError(f"bad value for {key}: {str(e).splitlines()[0]}") from None
            if key in RUN_KEYS:
                run_spec(cfg)
            if key == "seeds":
                check_seeds(cfg.seeds)
            if key == "engine" and v not in ENGINES:
                raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {v!r}")


def _values(override) -> list:
    """The values an override sets, one per job of a sweep, as Hydra parses them (a quoted string without its
    quotes, ``\\,`` as a comma); interval sweeps are left to Hydra."""
    from hydra.core.override_parser.types import QuotedString
    if not override.is_sweep_override():
        return [override.value()]
    if override.is_interval_sweep():
        return []
    return [v.text if isinstance(v, QuotedString) else v for v in override.sweep_iterator()]
