"""The paper's training protocol and study design (Section 5; protocol decisions 6–9 in docs/protocol.md): one place
for each fact.

``Protocol`` is the schedule, ``RunSpec`` one point of the study; the lists below say which points
exist (the lr multipliers, the two procedures of ``uSF+BM``, the models clamped in Exp. C2). Sweeps,
tables and validation read them from here (a test checks the sweep files against them).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .labels import FREEZE_CHOICES, parse_model

LR_MULTIPLIERS = (100, 10, 1, 0.1, 0.01)       # every model runs at each: protocol decision 6 (docs/protocol.md)
PROCEDURES = ("standard", "large_batch")       # large_batch: batch 100 for 3 epochs, then 500 (protocol decision 8)
TWO_PROCEDURE_MODELS = ("uSF+BM",)             # the only model the paper runs with both procedures
CLAMPED_MODELS = ("SGD", "RndF", "RndF+BN+BM", "uSF+BN+BM")  # Exp. C2 (Table 4): run with freeze=bottom|top
AMP_CHOICES = ("none", "bf16", "fp16")         # train.amp: mixed precision (changes the numbers; none = the paper)
SELECT_ON_CHOICES = ("test", "val")            # train.select_on: test = the paper's choice of lr and epoch
MOMENTUM = 0.9                                 # m of every update setting (Section 3)
WEIGHT_DECAY = 5e-4                            # d: MatConvNet's default; the paper states none
SELECTIONS = {"test": "selected on the test split (the paper)",   # lr and epoch; how tables and status say it
              "val": "selected on a holdout of the training split (train.val_fraction)"}
FP16_GROUP_ERROR = ("train.amp=fp16 needs engine=single: its GradScaler skips the step of every member of a run "
                    "group when one member's gradients overflow; use train.amp=bf16 for run groups")


def procedures_for(model: str, freeze: str = "none") -> tuple[str, ...]:
    """The procedures the paper runs for ``model``; a cell takes the best of them (protocol decision 8 in
    docs/protocol.md)."""
    two = parse_model(model).label in TWO_PROCEDURE_MODELS and freeze == "none"
    return PROCEDURES if two else ("standard",)


@dataclass
class Protocol:
    """The paper's training schedule; tests and demos shrink ``epochs`` and ``lr_steps``."""

    epochs: int = 65
    lr_steps: list[int] = field(default_factory=lambda: [50, 60])  # ×0.1 after each of these epochs
    batch_size: int = 100
    base_lr: float = 5e-4
    momentum: float = MOMENTUM
    weight_decay: float = WEIGHT_DECAY
    bn_batches: int = 20        # training batches forwarded for BN test statistics (protocol decision 4)
    bn_alpha: float = 0.05
    large_batch_size: int = 500
    large_batch_after: int = 3
    # Options beyond the paper. Each changes the numbers, so each is part of the protocol (and its hash);
    # at the paper's value it is left out of the hash, so runs logged before the option existed keep theirs.
    amp: str = "none"           # none | bf16 | fp16 (autocast; fp16 with a GradScaler)
    select_on: str = "test"     # test: lr and epoch chosen on the test split (the paper); val: on a holdout
    val_fraction: float = 0.1   # with select_on=val: the stratified share of the training split held out (< 0.5)

    def identity(self) -> dict:
        """What defines this protocol's numbers, as hashed (``asym.tracking.protocol_hash``): every field,
        less the options beyond the paper at the paper's value (and ``val_fraction`` unless it is used)."""
        return identity(asdict(self))

    def validate(self) -> "Protocol":
        """ValueError naming the first bad value (as ``train.KEY``), before anything runs. ``lr_steps`` must be
        positive and strictly increasing; a step at or past ``epochs`` is allowed and never fires (a shortened
        protocol, e.g. ``train=demo train.epochs=2``, keeps its schedule's steps)."""
        def bad(key: str, rule: str) -> ValueError:
            return ValueError(f"train.{key} must be {rule}, got {getattr(self, key)!r}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for key in ("epochs", "batch_size", "bn_batches", "large_batch_size"):
            if not (is_int(getattr(self, key)) and getattr(self, key) > 0):
                raise bad(key, "a positive integer")
        if not (is_int(self.large_batch_after) and self.large_batch_after >= 0):
            raise bad("large_batch_after", "an integer ≥ 0")
        steps = list(self.lr_steps)
        if not all(is_int(x) and x > 0 for x in steps) or any(a >= b for a, b in zip(steps, steps[1:])):
            raise bad("lr_steps", "strictly increasing positive epochs")
        if not (is_number(self.base_lr) and self.base_lr > 0):
            raise bad("base_lr", "a positive number")
        if not (is_number(self.momentum) and 0 <= self.momentum < 1):
            raise bad("momentum", "in [0, 1)")
        if not (is_number(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "a number ≥ 0")
        if not (is_number(self.bn_alpha) and 0 < self.bn_alpha <= 1):
            raise bad("bn_alpha", "in (0, 1]")
        if self.amp not in AMP_CHOICES:
            raise bad("amp", "one of " + ", ".join(AMP_CHOICES))
        if self.select_on not in SELECT_ON_CHOICES:
            raise bad("select_on", "one of " + ", ".join(SELECT_ON_CHOICES))
        # below one half, every class of n ≥ 1 images keeps round(f·n) < n of them to train on: a rule checked
        # here, from the value alone, instead of by loading every dataset before a sweep starts
        if not (is_number(self.val_fraction) and 0 < self.val_fraction < 0.5):
            raise bad("val_fraction", "in (0, 0.5), so every class keeps training images")
        return self

    def lr(self, epoch: int, mult: float) -> float:
        """Learning rate of 1-based ``epoch``: 5e-4·mult, ×0.1 after each step epoch."""
        return self.base_lr * mult * 0.1 ** sum(epoch > s for s in self.lr_steps)

    def batch_size_at(self, epoch: int, procedure: str) -> int:
        if procedure == "large_batch" and epoch > self.large_batch_after:
            return self.large_batch_size
        return self.batch_size


PAPER_VALUES = {"amp": "none", "select_on": "test"}   # the options beyond the paper, at the paper's value


def identity(protocol: dict) -> dict:
    """``Protocol.identity`` of a protocol given as a dict (a ``result.json``'s, an MLflow run's)."""
    out = {k: v for k, v in protocol.items() if not (k in PAPER_VALUES and v == PAPER_VALUES[k])}
    if out.get("select_on", "test") == "test":
        out.pop("val_fraction", None)
    return out


@dataclass(frozen=True)
class RunSpec:
    """One point of the study: (model, dataset, lr multiplier[, freeze, procedure]) and its seed."""

    model: str
    dataset: str
    lr_mult: float
    freeze: str = "none"
    procedure: str = "standard"
    seed: int = 0

    def validate(self) -> "RunSpec":
        parse_model(self.model)
        if not (isinstance(self.lr_mult, (int, float)) and self.lr_mult > 0 and math.isfinite(self.lr_mult)):
            raise ValueError(f"lr_mult must be a positive number, got {self.lr_mult!r}")
        if self.freeze not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {self.freeze!r}")
        if self.procedure not in PROCEDURES:
            raise ValueError(f"procedure must be one of {', '.join(PROCEDURES)}, got {self.procedure!r}")
        return self

    def group_key(self) -> tuple:
        """Runs with equal keys can train as one group: everything but the lr multiplier."""
        return (parse_model(self.model).label, self.dataset, self.freeze, self.procedure, self.seed)


# ------------------------------------------------------------------ mini-batches (protocol decision 14)
MIN_BATCH = 2  # batch normalisation in training mode needs ≥ 2 values per channel; an FC layer has one per example


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Protocol decision 14 (docs/protocol.md): one pass over ``n`` examples (a permutation's positions) as
    ``(start, stop)`` mini-batches of ``batch_size``, the last one shorter — and a last one of fewer than
    ``MIN_BATCH`` examples (one example) joined to the batch before it, for every model, so no mini-batch is too
    small for batch normalisation and every example is trained on once per epoch. Where ``n mod batch_size ≠ 1``,
    and for ``batch_size`` 1 (every batch is one example; ``check_batch_sizes`` refuses it for BN models), these are
    exactly the slices of ``range(0, n, batch_size)``."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < MIN_BATCH <= batch_size:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


def check_batch_sizes(proto: Protocol, runs: "list[RunSpec]", n_train: int, dataset: str) -> None:
    """ValueError (one line naming the ``train.*`` key) unless every batch size ``runs`` train with fits their
    training split of ``n_train`` examples: larger than the split is refused, and so is a batch of one for a BN
    model (protocol decision 14: batch normalisation needs ``MIN_BATCH`` examples)."""
    keys = ["batch_size"]
    if any(r.procedure == "large_batch" for r in runs) and proto.large_batch_after < proto.epochs:
        keys.append("large_batch_size")
    bn = [r.model for r in runs if parse_model(r.model).batchnorm]
    for key in keys:
        size = getattr(proto, key)
        if size > n_train:
            raise ValueError(f"train.{key}={size} is larger than the training split of {dataset} ({n_train} examples); "
                             f"choose train.{key} ≤ {n_train}")
        if size < MIN_BATCH and bn:
            raise ValueError(f"train.{key}={size} cannot train {bn[0]}: batch normalisation needs ≥ {MIN_BATCH} "
                             "examples per mini-batch (protocol decision 14)")
