"""The Hydra schema: structured configs, so a typo in a key fails at startup; value checks in ``validate``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from .train import Protocol, RunSpec


@dataclass
class DataConf:
    root: str = "data"              # where datasets live (see asym.data for each layout)
    download: bool = False          # let torchvision fetch the datasets it knows (needs internet)
    cache: Optional[str] = None     # preprocessed tensors; default ~/.cache/asym or $ASYM_CACHE


@dataclass
class TrainConf(Protocol):
    device: str = "auto"            # auto: cuda if available, else cpu
    threads: int = 0                # torch CPU threads; 0 leaves torch's default

    def protocol(self) -> Protocol:
        return Protocol(**{k: v for k, v in asdict(self).items() if k in Protocol.__dataclass_fields__})


@dataclass
class TrackingConf:
    uri: Optional[str] = None       # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment: str = "weight-symmetry"


@dataclass
class Config:
    model: str = "SGD"              # a paper label, e.g. uSF+BN+BM (asym.parse_model)
    dataset: str = "digits"
    lr_mult: float = 1.0
    freeze: str = "none"            # none | bottom | top (Exp. C2)
    procedure: str = "standard"     # standard | large_batch (uSF+BM's second procedure)
    seed: int = 0
    output_root: str = "runs"       # run directories (checkpoint.pt, result.json) live here
    tables: list[str] = field(default_factory=list)   # printed at the end of a multirun
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
