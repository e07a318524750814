"""The Hydra schema: structured configs, so a typo in a key fails at startup; value checks in ``validate``."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from . import data
from .protocol import FP16_GROUP_ERROR, Protocol, RunSpec
from .tracking import DEFAULT_EXPERIMENT, protocol_hash


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
    experiment: str = DEFAULT_EXPERIMENT
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


RUN_KEYS = ("model", "dataset", "lr_mult", "freeze", "procedure", "seed")   # a run's fields (RunSpec)
ENGINES = ("single", "group")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")   # train.device: what device_of() hands to torch.device


def register() -> None:
    """The schemas, as root configs: ``conf/config.yaml`` starts from ``schema``, each ``conf/train`` and
    ``conf/tracking`` option from ``train_schema`` / ``tracking_schema``. Outside the ``train`` and ``tracking``
    groups, so a schema is no option of its group (``train=glob(*)`` sweeps demo and paper, nothing else)."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(name="train_schema", node=TrainConf)
    cs.store(name="tracking_schema", node=TrackingConf)


def run_spec(cfg: Any) -> RunSpec:
    """The validated run a composed config describes; ValueError with one clear line otherwise."""
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
    check_keys(cfg)
    run_spec(cfg)
    train = TrainConf(**OmegaConf.to_container(cfg.train, resolve=True))
    train.protocol().validate()
    if not (isinstance(train.device, str) and DEVICE.fullmatch(train.device)):
        raise ValueError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {train.device!r}")
    if not (isinstance(train.threads, int) and train.threads >= 0):
        raise ValueError(f"train.threads must be an integer ≥ 0 (0: torch's default), got {train.threads!r}")
    if cfg.engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {cfg.engine!r}")
    if train.amp == "fp16" and cfg.engine == "group":
        raise ValueError(FP16_GROUP_ERROR)
    for m in cfg.lr_mults or []:
        RunSpec(cfg.model, cfg.dataset, float(m)).validate()
    check_seeds(cfg.seeds)
    for key in ("output_root", "data.root", "tracking.experiment"):
        if not str(OmegaConf.select(cfg, key) or "").strip():
            raise ValueError(f"{key} must not be empty")


def check_keys(cfg: Any) -> None:
    """The composed config has exactly the schema's keys (``hydra`` aside): ValueError naming the first key that
    ``~key`` deleted (every run reads every key) or that ``+key``/``++key`` added (no run reads it)."""
    from .overrides import unknown_key
    missing, extra = _key_differences(cfg, OmegaConf.structured(Config), "")
    if missing:
        raise deleted(missing[0])
    if extra:
        key, schema_node = extra[0]
        raise ValueError(unknown_key(key, schema_node, added=True))


def deleted(key: str) -> ValueError:
    """The line for a key of the schema that ``~key`` took out of the composed config."""
    return ValueError(f"~{key} deletes a key every run needs; set it instead ({key}=…) or leave it out")


def _key_differences(cfg: Any, schema: Any, prefix: str) -> tuple[list[str], list[tuple[str, Any]]]:
    from omegaconf import DictConfig
    missing = [prefix + k for k in schema if k not in cfg]
    extra = [(prefix + k, schema) for k in cfg if k not in schema and not (not prefix and k == "hydra")]
    for k in schema:
        node = schema._get_node(k)
        if k in cfg and isinstance(node, DictConfig) and isinstance(cfg._get_node(k), DictConfig):
            m, e = _key_differences(cfg[k], schema[k], f"{prefix}{k}.")
            missing, extra = missing + m, extra + e
    return missing, extra


def train_option(name: str) -> Protocol:
    """The protocol of a ``conf/train`` option (``paper``, ``demo``), its ``defaults`` followed."""
    from importlib import resources
    node = OmegaConf.create((resources.files("asym.conf") / "train" / f"{name}.yaml").read_text())
    merged = OmegaConf.structured(TrainConf)
    for parent in node.pop("defaults", []):
        if not parent.startswith("/train_schema"):
            merged = OmegaConf.merge(merged, OmegaConf.structured(TrainConf(**dataclasses.asdict(train_option(parent)))))
    merged = OmegaConf.merge(merged, node)
    return TrainConf(**OmegaConf.to_container(merged)).protocol()


def named_protocols() -> dict[str, str]:
    """protocol hash → name, for every ``conf/train`` option (how tables and status name a protocol)."""
    from importlib import resources
    names = sorted(f.name[:-5] for f in (resources.files("asym.conf") / "train").iterdir() if f.name.endswith(".yaml"))
    return {protocol_hash(asdict(train_option(n))): n for n in names}


def check_seeds(seeds: Any) -> int:
    """``seeds``, the number of seeds a sweep runs each run with: a positive integer, else ValueError."""
    if not (isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1):
        raise ValueError(f"seeds must be a positive integer (each run of a sweep with seed = 0 … seeds-1), got {seeds!r}")
    return seeds


