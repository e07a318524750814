"""The study of Liao, Leibo & Poggio (AAAI 2016) as data: its tables, their columns and rows, the runs that fill them.

One owner for the design (torch-free, so sweeps, status, tables and benchmarks read it in a fraction of a second):

- ``TABLES``: Tables 2–5 (Table 4 as its two experiments C1 and C2), each with its columns as printed, its rows,
  the file of the paper's numbers (``asym/reference``) and the sweep file of its grid (``sweeps/``);
- ``LR_MULTIPLIERS``, ``TWO_PROCEDURE_MODELS`` and ``CLAMPED_MODELS``: which runs fill a cell (protocol decisions
  6, 8 and 9 in docs/protocol.md); ``FLIP_P``: Exp. B's sign-flip probabilities;
- ``TRAIN_SIZE``: each dataset's training-set size, from the data registry's own split rule (protocol decision 12).

The sweep files keep readable lists and the reference CSVs the paper's headers; tests/test_study.py checks both
against this module, so neither can drift.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

from . import data
from .data import sources
from .labels import FREEZE_CHOICES, parse_model
from .protocol import PROCEDURES, RunSpec

LR_MULTIPLIERS = (100, 10, 1, 0.1, 0.01)      # every model runs at each (Section 5; protocol decision 6)
TWO_PROCEDURE_MODELS = ("uSF+BM",)            # the only model run with both procedures (protocol decision 8)
CLAMPED_MODELS = ("SGD", "RndF", "RndF+BN+BM", "uSF+BN+BM")  # Exp. C2: each run with freeze=bottom|top (decision 9)
CLAMPS = FREEZE_CHOICES[1:]                   # bottom, top
FLIP_P = (0, 25, 50, 75, 100)                 # Exp. B: sign-flip probability p in % ("Same Sign" is p = 0)
PAPER_DATASETS = tuple(data.PAPER_DATASETS)   # every table's rows, in the paper's order (the registry's order)


def flip_column(family: str, p: int) -> str:
    """Table 3's column of ``family`` (``brSF``: M and S_p redrawn every batch, ``frSF``: fixed) at flip
    probability ``p`` %, e.g. ``brSF-p25+BN+BM``; p = 0 is the family's own column (``brSF+BN+BM``)."""
    return f"{family}+BN+BM" if p == 0 else f"{family}-p{p}+BN+BM"


@dataclass(frozen=True)
class Table:
    """One of the paper's tables: its columns as printed (Exp. C2's are ``MODEL/SIDE``, the clamped side), its rows
    (dataset names of ``asym.data``), the paper's numbers (``asym/reference/<reference>``), its grid
    (``sweeps/<sweep>.yaml``)."""

    key: str                    # asym-tables --table: 2, 3, 4c1, 4c2, 5
    title: str
    columns: tuple[str, ...]
    reference: str
    sweep: str
    datasets: tuple[str, ...] = PAPER_DATASETS

    def paper(self):
        """The paper's numbers as a pandas DataFrame (rows: the paper's row labels; columns: ``columns``).
        pandas is imported here, not with the study: sweeps and ``asym-status`` read the design without it."""
        return _reference(self.reference).copy()

    def runs(self) -> list[RunSpec]:
        """Every run this table's cells take their best from: each column's model (canonical label) and clamp, on
        each dataset, at each lr multiplier, with each of its procedures (seed 0)."""
        return [RunSpec(model, dataset, float(mult), freeze, procedure)
                for model, freeze in dict.fromkeys(column_run(c) for c in self.columns)
                for dataset in self.datasets for mult in LR_MULTIPLIERS
                for procedure in procedures_for(model, freeze)]


@functools.lru_cache(maxsize=None)
def _reference(name: str):
    import pandas as pd
    with resources.as_file(resources.files("asym") / "reference" / name) as path:
        return pd.read_csv(path, index_col="dataset")


TABLES: dict[str, Table] = {t.key: t for t in [
    Table("2", "Table 2 — Exp. A: sign-concordant feedback",
          ("SGD", "BM", "BN", "BN+BM", "uSF", "NuSF", "uSF+BM", "uSF+BN", "uSF+BN+BM", "brSF+BN+BM", "frSF+BN+BM"),
          "table2_experiment_a.csv", "table2"),
    Table("3", "Table 3 — Exp. B: sign flips with probability p (brSF-p: batchwise, frSF-p: fixed)",
          ("SGD", *(flip_column(family, p) for family in ("brSF", "frSF") for p in reversed(FLIP_P))),
          "table3_experiment_b.csv", "table3"),
    Table("4c1", "Table 4 — Exp. C1: fixed random feedback",
          ("SGD", "RndF", "NuSF", "BN", "RndF+BN", "RndF+BM", "RndF+BN+BM", "uSF+BN+BM"),
          "table4_experiment_c1.csv", "table4_c1"),
    Table("4c2", "Table 4 — Exp. C2: clamped layers (bottom: last layer frozen; top: all but the last)",
          tuple(f"{model}/{side}" for model in CLAMPED_MODELS for side in CLAMPS),
          "table4_experiment_c2.csv", "table4_c2"),
    # The paper prints Table 5 on its first six datasets only (MNIST … Cal101); the study runs it on all 15.
    Table("5", "Table 5 — Batch Manhattan settings",
          ("SGD", "BM1", "BM2", "BM3", "uSF+BN", "uSF+BN+BM1", "uSF+BN+BM2", "uSF+BN+BM3"),
          "table5_batch_manhattan.csv", "table5"),
]}


def table_keys(which: str | list[str]) -> list[str]:
    """``2``, ``3``, ``4`` (= C1 and C2), ``4c1``, ``4c2``, ``5`` or ``all`` → table keys, in order. ValueError
    naming the choices for anything else."""
    out = []
    for w in ([which] if isinstance(which, str) else which):
        w = str(w).lower()
        keys = list(TABLES) if w == "all" else ["4c1", "4c2"] if w == "4" else [w]
        for k in keys:
            if k not in TABLES:
                raise ValueError(f"no table {w!r}; choose from 2, 3, 4, 4c1, 4c2, 5, all")
            if k not in out:
                out.append(k)
    return out


def column_run(column: str) -> tuple[str, str]:
    """A printed column label → (canonical model label, clamp): ``BM1`` → (``BM``, none), ``SGD/top`` → (SGD, top)."""
    model, _, freeze = column.partition("/")
    return parse_model(model).label, freeze or "none"


def tables_of(model: str, freeze: str = "none") -> list[str]:
    """The tables a run feeds, e.g. ``SGD`` (no clamp) → 2, 3, 4c1, 5; ``SGD`` clamped ``top`` → 4c2."""
    key = (parse_model(model).label, freeze)
    return [k for k, spec in TABLES.items() if key in {column_run(c) for c in spec.columns}]


def procedures_for(model: str, freeze: str = "none") -> tuple[str, ...]:
    """The procedures the paper runs for ``model``; a cell takes the best of them (protocol decision 8)."""
    two = parse_model(model).label in TWO_PROCEDURE_MODELS and freeze == "none"
    return PROCEDURES if two else ("standard",)


def paper_runs() -> list[RunSpec]:
    """The whole study: every table's runs, each once (a run shared by tables, e.g. SGD or BM = BM1, is one run)."""
    return list(dict.fromkeys(r for t in TABLES.values() for r in t.runs()))


def train_size(name: str) -> int | None:
    """Training examples the protocol gives dataset ``name`` (images; TIMIT80: frames), from the data registry's
    split rule: classes × training images per class for the per-class protocols (``asym.data.CLASS_PROTOCOLS``),
    the split files' train + val for Flowers17/102 (``asym.data.sources.FLOWERS_TRAIN``, what the readers train on),
    the standard split's size otherwise (``asym.data.STANDARD_TRAIN``). None where the protocol fixes none (iCub:
    its own folders). With ``train.select_on=val`` a further ``train.val_fraction`` is held out of it."""
    if name in data.CLASS_PROTOCOLS:
        classes, per_class, _ = data.CLASS_PROTOCOLS[name]
        return classes * per_class
    if name in sources.FLOWERS_TRAIN:
        return data.DATASETS[name].num_classes * sum(sources.FLOWERS_TRAIN[name].values())
    return data.STANDARD_TRAIN.get(name)


TRAIN_SIZE = {n: train_size(n) for n in data.DATASETS if train_size(n) is not None}  # dataset name → examples
# iCub's protocol fixes no sizes (its own folders) and the paper states none: (train, test) assumed where a count is
# needed (cost estimates, benchmarks), and said so wherever it is used
ASSUMED_SIZES = {"icub": (6000, 2000)}


def split_sizes(name: str) -> tuple[int, int] | None:
    """(training, test) examples of dataset ``name`` under its protocol: ``train_size`` and the registry's test
    sizes (per-class protocols: classes × test per class, an upper bound, decision 12), else ``ASSUMED_SIZES``;
    None for a user's ``folder:``/``npz:`` data, whose size is unknown until it is read."""
    if name in ASSUMED_SIZES:
        return ASSUMED_SIZES[name]
    if name in data.CLASS_PROTOCOLS:
        classes, _, per_class = data.CLASS_PROTOCOLS[name]
        return train_size(name), classes * per_class
    n_test = data.STANDARD_TEST.get(name)
    return None if n_test is None else (train_size(name), n_test)
