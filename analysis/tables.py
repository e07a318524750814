"""The paper's Tables 2–5 rebuilt from MLflow runs, highlighted as the paper does, compared with the paper.

A **cell** is the best validation error of one (model, dataset[, clamp]) over all epochs and all its runs
(the lr multipliers, and for ``uSF+BM`` both procedures). Rows are datasets in the paper's order, then
any other dataset that has runs (e.g. the demo's ``Digits``); columns are the labels as printed.
Reads runs through ``asym.tracking`` (the schema's one owner), never by guessing tag names.

**Seeds.** With several seeds a cell is the mean over seeds of the per-seed cell (each seed's best over
multipliers, procedures and epochs, as the paper does for its one run), with the sample standard deviation
and n. Highlighting applies the paper's ±3-point rule to the means. A coloured verdict is **fragile** (mark
``?``) when some seed's own cell, against that seed's SGD cell, takes another colour, or when a coloured
mean lies within 2 standard errors of SGD's (Welch: sqrt(s²/n + s_SGD²/n_SGD)). One seed gives the
paper's tables exactly: n = 1, no spread, nothing fragile.

**Selection** (``select_on``). ``test``: the paper's choice, the least test error over epochs and
multipliers (``best_val_error``). ``val``: per seed, the run whose ``selected_holdout_error`` (the error on
``train.val_fraction`` of the training split held out, at the epoch it chose) is least; its ``selected_error`` (test error at
that epoch) is the cell. The two never share a table: ``select_on`` is part of the protocol hash.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from asym import tracking
from asym.data import DATASETS, PAPER_DATASETS, info, labels
from asym.labels import parse_model
from asym.protocol import SELECTIONS, procedures_for
from asym.train import BEST_ERROR as BEST
from asym.train import SELECTED_ERROR, SELECTED_HOLDOUT_ERROR

MARGIN = 3.0                                 # highlight at ≥ 3 pp from SGD: protocol decision 10 (docs/protocol.md)
WORSE, BETTER, SAME = "worse", "better", ""  # yellow, blue, plain
COMPARE_ROW = {"Digits": "MNIST"}            # the demo set runs the MNIST net: compared with the paper's MNIST row
NOISE_SE = 2.0                               # a difference within 2 standard errors is not told apart from noise
# per select_on: (the metric that chooses a seed's run, the metric reported for it)
CHOOSE_BY = {"test": (BEST, BEST), "val": (SELECTED_HOLDOUT_ERROR, SELECTED_ERROR)}
# among runs equally good on the choosing metric (a holdout of ~100 images ties often): the smaller multiplier,
# then the standard procedure — a fixed rule, never MLflow's row order and never the test error
TIE_BREAK = ("lr_mult", "procedure")


def ranked(runs: pd.DataFrame, select_on: str) -> pd.DataFrame:
    """``runs`` that have a number, best first: by the metric that chooses (``CHOOSE_BY``), then ``TIE_BREAK``.
    The tables' cells and the learning curves take their runs from here."""
    choose, report = CHOOSE_BY[select_on]
    return runs.dropna(subset=[choose, report]).sort_values([choose, *TIE_BREAK], kind="stable")


@dataclass(frozen=True)
class TableSpec:
    key: str        # "2", "3", "4c1", "4c2", "5"
    title: str
    csv: str        # the paper's numbers, shipped in asym/reference

    def paper(self) -> pd.DataFrame:
        return _read_reference(self.csv).copy()

    @property
    def columns(self) -> list[str]:
        return list(self.paper().columns)


@functools.lru_cache(maxsize=None)
def _read_reference(name: str) -> pd.DataFrame:
    with resources.as_file(resources.files("asym") / "reference" / name) as path:
        return pd.read_csv(path, index_col="dataset")


TABLES = {t.key: t for t in [
    TableSpec("2", "Table 2 — Exp. A: sign-concordant feedback", "table2_experiment_a.csv"),
    TableSpec("3", "Table 3 — Exp. B: sign flips with probability p (brSF-p: batchwise, frSF-p: fixed)",
              "table3_experiment_b.csv"),
    TableSpec("4c1", "Table 4 — Exp. C1: fixed random feedback", "table4_experiment_c1.csv"),
    TableSpec("4c2", "Table 4 — Exp. C2: clamped layers (bottom: last layer frozen; top: all but the last)",
              "table4_experiment_c2.csv"),
    TableSpec("5", "Table 5 — Batch Manhattan settings", "table5_batch_manhattan.csv"),
]}


def table_keys(which: str | list[str]) -> list[str]:
    """``2``, ``3``, ``4`` (= C1 and C2), ``4c1``, ``4c2``, ``5`` or ``all`` → table keys, in order."""
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
    """The tables a run feeds, e.g. ``SGD`` (no clamp) → 2, 3, 4c1, 5."""
    key = (parse_model(model).label, freeze)
    return [k for k, spec in TABLES.items() if key in {column_run(c) for c in spec.columns}]


def baseline_column(column: str) -> str:
    """The SGD column a cell is highlighted against (C2: SGD clamped on the same side)."""
    _, _, freeze = column.partition("/")
    return f"SGD/{freeze}" if freeze else "SGD"


def highlight(value: float, sgd: float) -> str:
    """``worse`` (yellow) at ≥ SGD + 3 pp, ``better`` (blue) at ≤ SGD − 3 pp; exactly 3.00 counts."""
    if value is None or sgd is None or math.isnan(value) or math.isnan(sgd):
        return SAME
    diff = round(value - sgd, 6)  # 25.73 − 22.73 is 3.0000000000000036 or 2.99…96 in floating point
    return WORSE if diff >= MARGIN else BETTER if diff <= -MARGIN else SAME


def dataset_rows(runs: pd.DataFrame) -> list:
    """Each run's table row: the paper's label of a registry dataset; a user dataset's stem, told apart from any
    other dataset of these runs with the same label — another file (``v1/feat``, ``v2/feat``) or the same path
    with other content (``feat (1a2b3c4d)``, by the runs' ``dataset_id`` tag) — by ``asym.data.labels``."""
    ids = runs[tracking.DATASET_ID_TAG] if tracking.DATASET_ID_TAG in runs else [None] * len(runs)
    keys = [(d, i if isinstance(i, str) else None) if isinstance(d, str) else None for d, i in zip(runs["dataset"], ids)]
    known = [k for k in keys if k is not None and _known(k[0])]
    named = labels(known)
    return [named[k] if k in named else (k[0] if k else None) for k in keys]


def _known(name: str) -> bool:
    try:
        info(name)
        return True
    except ValueError:
        return False


ROW_ORDER = [DATASETS[n].title for n in PAPER_DATASETS]


# ---------------------------------------------------------------------------------------------- runs → cells


def load_runs(uri: str | None = None, experiment: str = tracking.DEFAULT_EXPERIMENT) -> pd.DataFrame:
    """One row per MLflow run with the columns the tables need. Raises LookupError when there are none."""
    out = tracking.runs_table(uri, experiment)
    if out is None:
        raise LookupError(f"no runs in experiment {experiment!r} at {tracking.resolve_uri(uri)} "
                          "(run asym-train first, or pass --tracking-uri / --experiment)")
    out["lr_mult"] = pd.to_numeric(out["lr_mult"], errors="coerce")
    out["seed"] = pd.to_numeric(out["seed"], errors="coerce").fillna(0).astype(int)
    out["freeze"] = out["freeze"].fillna("none")
    out["procedure"] = out["procedure"].fillna("standard")
    out["row"] = dataset_rows(out)
    out["protocol_hash"] = out["protocol_hash"].fillna(UNTAGGED)
    return out


UNTAGGED = "untagged"  # runs logged before protocol_hash was a tag: their protocol is unknown, so they stand apart


def protocol_label(h: str, names: dict[str, str] | None = None) -> str:
    """``demo (3d987034)``, ``paper (3d4120e6)`` or just the hash's first 8 characters."""
    from asym.config import named_protocols
    names = named_protocols() if names is None else names
    return f"{names[h]} ({h[:8]})" if h in names else h[:8]


def protocols(runs: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(protocol hash, label, run count) of every protocol in ``runs``, most runs first."""
    from asym.config import named_protocols
    names = named_protocols()
    counts = runs["protocol_hash"].value_counts(sort=False)
    return sorted(((h, protocol_label(h, names), int(n)) for h, n in counts.items()), key=lambda t: (-t[2], t[1]))


def select_protocol(runs: pd.DataFrame, wanted: str | None = None, default: str | None = None
                    ) -> tuple[pd.DataFrame, str]:
    """The runs of one protocol, and a line saying which (and which others the store holds).

    ``wanted``: a ``conf/train`` name (``paper``, ``demo``) or a protocol hash prefix; else ``default`` (a hash:
    the current sweep's) when it has runs; else the protocol with the most runs. LookupError if nothing matches.
    """
    from asym.config import named_protocols
    present = protocols(runs)
    if wanted:
        by_name = {n: h for h, n in named_protocols().items()}
        hits = [t for t in present if t[0] == by_name.get(wanted) or t[0].startswith(wanted.lower())]
        if len(hits) != 1:
            raise LookupError(f"{'no' if not hits else 'more than one'} protocol {wanted!r} in these runs; present: "
                              + ", ".join(f"{label} ({n} runs)" for _, label, n in present))
        chosen = hits[0]
    else:
        chosen = next((t for t in present if t[0] == default), present[0])
    others = [f"{label} ({n} runs)" for h, label, n in present if h != chosen[0]]
    line = f"protocol {chosen[1]}: {chosen[2]} runs" + (
        f"; also in this store: {', '.join(others)} (choose with --protocol)" if others else "")
    return runs[runs["protocol_hash"] == chosen[0]].copy(), line


@dataclass
class Cells:
    """One table's cells: values (the mean over seeds), their spread, and per cell whether its best run
    diverged / some expected run is missing. Every frame is rows × columns."""

    spec: TableSpec
    value: pd.DataFrame       # mean over seeds of the per-seed cell; NaN where no run is done
    diverged: pd.DataFrame    # bool: the chosen run of some seed diverged
    partial: pd.DataFrame     # bool: some expected run (multiplier, procedure, seed) not done yet
    protocol: str = ""        # which protocol's runs these cells combine (select_protocol's line)
    std: pd.DataFrame | None = None   # sample standard deviation over seeds (ddof = 1); NaN with n < 2
    n: pd.DataFrame | None = None     # seeds with a value
    seeds: dict[int, pd.DataFrame] | None = None  # seed → that seed's cells
    select_on: str = "test"   # how each seed's run and epoch were chosen (asym.protocol.SELECTIONS)

    def __post_init__(self):
        if self.n is None:  # one set of numbers (e.g. the paper's): n = 1 where there is a value
            self.n = self.value.notna().astype(int)
        if self.std is None:
            self.std = self.value * np.nan
        if self.seeds is None:
            self.seeds = {0: self.value}

    @classmethod
    def from_seeds(cls, spec: TableSpec, seeds: dict[int, pd.DataFrame], diverged: pd.DataFrame | None = None,
                   partial: pd.DataFrame | None = None, select_on: str = "test") -> "Cells":
        """Cells from per-seed cells (seed → rows × columns, NaN where that seed has none): the mean, the sample
        standard deviation (ddof = 1, NaN with n < 2) and n over the seeds that have a value."""
        first = next(iter(seeds.values()))
        stack = np.stack([v.reindex_like(first).to_numpy(dtype=float) for v in seeds.values()])
        n = pd.DataFrame(np.isfinite(stack).sum(0), index=first.index, columns=first.columns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN cell's mean is NaN, as wanted
            value = pd.DataFrame(np.nanmean(stack, 0), index=first.index, columns=first.columns)
            std = pd.DataFrame(np.where(n >= 2, np.nanstd(stack, 0, ddof=1), np.nan), index=first.index,
                               columns=first.columns)
        false = pd.DataFrame(False, index=first.index, columns=first.columns)
        return cls(spec, value, false.copy() if diverged is None else diverged,
                   false.copy() if partial is None else partial, std=std, n=n, seeds=seeds, select_on=select_on)

    @property
    def title(self) -> str:
        return (self.spec.title + (f" [{self.protocol.split(':')[0]}]" if self.protocol else "")
                + f" — {SELECTIONS[self.select_on]}")

    @property
    def multi_seed(self) -> bool:
        """Some cell has n ≥ 2: the renderers then show mean ± std (n)."""
        return bool((self.n >= 2).to_numpy().any())

    @property
    def se(self) -> pd.DataFrame:
        """Standard error of each mean, std / √n (NaN with n < 2)."""
        return self.std / np.sqrt(self.n.where(self.n > 0))

    @property
    def incomplete(self) -> int:
        return int((self.value.isna() | self.partial).to_numpy().sum())

    @property
    def size(self) -> int:
        return self.value.size

    def classes(self, values: pd.DataFrame | None = None) -> pd.DataFrame:
        """Highlight class of every cell of ``values`` (default: ours) against its SGD column."""
        values = self.value if values is None else values
        out = pd.DataFrame(SAME, index=values.index, columns=values.columns)
        for col in values.columns:
            base = baseline_column(col)
            if base == col or base not in values.columns:
                continue
            for row in values.index:
                out.loc[row, col] = highlight(values.loc[row, col], values.loc[row, base])
        return out

    def fragile(self) -> pd.DataFrame:
        """Per cell: its colour is not robust over seeds (module docstring). Only cells with n ≥ 2 can be.

        Some seed's cell against the same seed's SGD cell (the seeds pair up: the same data split and
        order) gets another colour than the means; or the mean is coloured but within ``NOISE_SE``
        standard errors of SGD's mean (a one-seed side counts no spread)."""
        classes = self.classes()
        per_seed = {s: self.classes(v) for s, v in self.seeds.items()}
        se2 = (self.se ** 2).fillna(0.0)
        out = pd.DataFrame(False, index=self.value.index, columns=self.value.columns)
        for col in self.value.columns:
            base = baseline_column(col)
            if base == col or base not in self.value.columns:
                continue
            for row in self.value.index:
                if self.n.loc[row, col] < 2 or math.isnan(self.value.loc[row, base]):
                    continue
                paired = [s for s, v in self.seeds.items() if not np.isnan(v.loc[row, [col, base]]).any()]
                flips = any(per_seed[s].loc[row, col] != classes.loc[row, col] for s in paired)
                diff = abs(self.value.loc[row, col] - self.value.loc[row, base])
                noise = NOISE_SE * math.sqrt(se2.loc[row, col] + se2.loc[row, base])
                out.loc[row, col] = flips or (classes.loc[row, col] != SAME and diff <= noise)
        return out

    def paper(self) -> pd.DataFrame:
        """The paper's numbers on our rows (a row the paper lacks is NaN; Digits reads MNIST's row)."""
        ref = self.spec.paper()
        rows = [COMPARE_ROW.get(r, r) for r in self.value.index]
        return ref.reindex(index=rows, columns=self.value.columns).set_axis(self.value.index)

    def summary(self) -> str:
        done = self.size - self.incomplete
        return f"{done} of {self.size} cells complete" + (f", {self.incomplete} incomplete" if self.incomplete else "")


def multipliers_by_row(runs: pd.DataFrame) -> dict[str, set[float]]:
    """Per dataset, the lr multipliers the study ran there: a complete cell has a done run at each."""
    return {row: set(group["lr_mult"].dropna()) for row, group in runs.groupby("row")}


def build(spec: TableSpec, runs: pd.DataFrame, rows: list[str] | None = None) -> Cells:
    """Per seed, min over epochs and runs of each (dataset, model, clamp) of ``spec`` (``select_on=val``: the
    run of least ``selected_holdout_error``, reporting its ``selected_error``); then mean, std and n over
    seeds. The runs must share one protocol (``select_protocol``): a cell never mixes a short look with the
    real schedule, nor the two selections."""
    if "protocol_hash" in runs and runs["protocol_hash"].nunique() > 1:
        raise ValueError("a table combines runs of one protocol only: pick one with select_protocol")
    sel = tracking.SELECT_ON_TAG
    select_on = runs[sel].iloc[0] if sel in runs and len(runs) else "test"
    if sel in runs and runs[sel].nunique() > 1:
        raise ValueError("a table never mixes select_on=test and select_on=val runs")
    report = CHOOSE_BY[select_on][1]
    done = runs[runs["status"].isin(tracking.DONE)]
    if "seed" not in done:
        done = done.assign(seed=0)
    present = set(runs["row"].dropna())
    rows = rows or [r for r in ROW_ORDER if r in present] + sorted(present - set(ROW_ORDER))
    cols = spec.columns
    index = pd.Index(rows, name="dataset")
    seed_list = sorted(set(done["seed"])) or [0]
    seeds = {s: pd.DataFrame(np.nan, index=index, columns=cols) for s in seed_list}
    diverged = pd.DataFrame(False, index=index, columns=cols)
    partial = pd.DataFrame(False, index=index, columns=cols)
    mults = multipliers_by_row(runs)
    seeds_of_row = {row: set(g["seed"]) for row, g in done.groupby("row")}  # a seed whose runs all failed is none
    for col in cols:
        model, freeze = column_run(col)
        procedures = set(procedures_for(model, freeze))
        mine = done[(done["model"] == model) & (done["freeze"] == freeze)]
        for row in rows:
            cell = ranked(mine[mine["row"] == row], select_on)
            for seed, runs_of_seed in cell.groupby("seed"):
                best = runs_of_seed.iloc[0]
                seeds[seed].loc[row, col] = best[report]
                diverged.loc[row, col] |= best["status"] == "diverged"
            have = set(zip(cell["lr_mult"], cell["procedure"], cell["seed"]))
            want = {(m, p, s) for m in mults.get(row, ()) for p in procedures for s in seeds_of_row.get(row, ())}
            partial.loc[row, col] = not cell.empty and not want <= have
    return Cells.from_seeds(spec, seeds, diverged, partial, select_on)


def build_all(runs: pd.DataFrame, keys: list[str], protocol: str = "") -> list[Cells]:
    """The tables ``keys`` from ``runs`` — runs of one protocol (``select_protocol``), named by ``protocol``."""
    out = [build(TABLES[k], runs) for k in keys]
    for c in out:
        c.protocol = protocol
    return out


# ---------------------------------------------------------------------------------------- the paper, side by side


@dataclass
class Agreement:
    """How closely one table matches the paper, over the cells both have."""

    cells: int
    within_1: int
    within_3: int
    highlight_match: float      # fraction of highlightable cells whose colour equals the paper's
    rank_corr: pd.Series        # per dataset: Spearman ρ of the models' errors, ours vs the paper's
    multi_seed: int = 0         # cells with n ≥ 2 seeds that the paper also has
    within_2se: int = 0         # … of which the paper's number lies inside our mean ± 2 standard errors

    def line(self) -> str:
        if not self.cells:
            return "no cell to compare with the paper"
        rho = self.rank_corr.dropna()
        return (f"{self.cells} cells vs paper: {self.within_1} within ±1 pp ({self.within_1 / self.cells:.0%}), "
                f"{self.within_3} within ±3 pp ({self.within_3 / self.cells:.0%}); highlight colour matches "
                + (f"{self.highlight_match:.0%}" if not math.isnan(self.highlight_match) else "n/a (no cell to colour)")
                + "; median rank correlation per dataset "
                + (f"ρ = {rho.median():.2f}" if len(rho) else "n/a")
                + (f"; the paper's number inside our mean ± 2 SE in {self.within_2se} of {self.multi_seed} "
                   "multi-seed cells" if self.multi_seed else ""))


def paper_within_2se(cells: Cells) -> pd.DataFrame:
    """Per cell: the paper's number lies inside our mean ± ``NOISE_SE`` standard errors (NaN-free bool frame;
    False where n < 2 or the paper has no number)."""
    dist = (cells.value - cells.paper()).abs()
    return (dist <= NOISE_SE * cells.se).fillna(False).astype(bool) & (cells.n >= 2)


def compare(cells: Cells) -> Agreement:
    ours, paper = cells.value, cells.paper()
    both = ours.notna() & paper.notna()
    diff = (ours - paper).abs()[both]
    n = int(both.to_numpy().sum())
    ours_cls, paper_cls = cells.classes(), cells.classes(paper)
    hl = np.zeros(ours.shape, dtype=bool)  # cells with a colour on both sides: not SGD, SGD known
    for j, col in enumerate(ours.columns):
        base = baseline_column(col)
        if base != col and base in ours:
            hl[:, j] = (both[col] & ours[base].notna() & paper[base].notna()).to_numpy()
    match = float((ours_cls.to_numpy() == paper_cls.to_numpy())[hl].mean()) if hl.any() else float("nan")
    rho = pd.Series({row: ours.loc[row][both.loc[row]].corr(paper.loc[row][both.loc[row]], method="spearman")
                     if both.loc[row].sum() >= 3 else np.nan for row in ours.index}, dtype=float)
    multi = both & (cells.n >= 2)
    return Agreement(n, int((diff <= 1).to_numpy().sum()), int((diff <= 3).to_numpy().sum()), match, rho,
                     int(multi.to_numpy().sum()), int(paper_within_2se(cells)[multi].sum().sum()))


def long_form(cells: Cells) -> pd.DataFrame:
    """Tidy rows for CSV: table, protocol, select_on, dataset, model, error (the mean over seeds), std, n,
    SGD (its mean), highlight (of the means), fragile, diverged, partial, paper, diff (mean − paper),
    paper_within_2se, then one ``seed_<k>`` column per seed with that seed's cell."""
    paper, classes, fragile, inside = cells.paper(), cells.classes(), cells.fragile(), paper_within_2se(cells)
    records = []
    for row in cells.value.index:
        for col in cells.value.columns:
            base = baseline_column(col)
            records.append({"table": cells.spec.key, "protocol": cells.protocol.split(":")[0].removeprefix(
                                "protocol "), "dataset": row, "model": col,
                            "select_on": cells.select_on,
                            "error": cells.value.loc[row, col], "std": cells.std.loc[row, col],
                            "n": int(cells.n.loc[row, col]),
                            "sgd": cells.value.loc[row, base] if base in cells.value else np.nan,
                            "highlight": classes.loc[row, col], "fragile": bool(fragile.loc[row, col]),
                            "diverged": bool(cells.diverged.loc[row, col]),
                            "partial": bool(cells.partial.loc[row, col]), "paper": paper.loc[row, col],
                            "diff": cells.value.loc[row, col] - paper.loc[row, col],
                            "paper_within_2se": bool(inside.loc[row, col]),
                            **{f"seed_{s}": v.loc[row, col] for s, v in cells.seeds.items()}})
    return pd.DataFrame.from_records(records)
