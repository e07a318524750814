"""Figures (matplotlib, written as PNG and SVG): Exp. B error against p, learning curves, ours − paper heat maps,
verdict robustness over seeds. With several seeds: Exp. B has ±1 std error bars, the learning curves are the
mean over seeds in a min–max band.

Each figure has a ``*_figure`` builder (the matplotlib ``Figure`` and its caption, a sentence: what tests read)
and a writer that saves it (``Plot``: the files and the caption the report prints under it).
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on clusters and in CI without a display
import matplotlib.colors  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from asym import tracking  # noqa: E402
from asym.record import DONE, RunStatus  # noqa: E402
from asym.study import FLIP_P, TABLES, column_run, flip_column  # noqa: E402

from .tables import COMPARE_ROW, MARGIN, SAME, Cells, baseline_column, ranked  # noqa: E402

P_MARGIN = 8  # x-axis room on either side of p = 0 and p = 100, so their markers and error bars show whole
HEATMAP_CMAP = "RdBu_r"  # diverging: red where we do worse than the paper, blue where better
MIN_HEATMAP_LIMIT = MARGIN  # pp: the colour scale spans at least the highlighting margin (protocol decision 10)
# A qualitative palette of distinct colours (matplotlib's tab10, then the dark members of tab20b/Dark2): one per
# model of a learning-curve figure, before any repeats
CURVE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#1b9e77", "#d95f02", "#7570b3",
                "#e7298a", "#66a61e")
# Distinct dash patterns (on, off, …) in points; "" is solid
CURVE_DASHES = ((), (6, 2), (2, 2), (6, 2, 2, 2), (10, 3), (1, 1), (6, 2, 2, 2, 2, 2), (4, 4), (10, 2, 2, 2),
                (3, 1, 1, 1), (8, 2, 1, 2, 1, 2), (2, 4), (12, 4), (5, 1, 5, 4), (1, 3), (7, 2, 3, 2))
CURVE_MARKERS = ("o", "s", "^", "v", "D", "P", "*", "<", ">", "h", "p", "d", "+", "8", "H", "1")  # X: divergence


class Plot(list):
    """A written figure: its files (PNG and SVG, the list itself) and its caption, a sentence."""

    def __init__(self, paths: list[Path], caption: str, name: str = ""):
        super().__init__(paths)
        self.caption, self.name = caption, name

    @property
    def paths(self) -> list[Path]:
        return list(self)


def plain(label) -> str:
    """A user's name as literal text in a figure: a ``$`` would start matplotlib's mathtext."""
    return str(label).replace("$", r"\$")


def file_part(label) -> str:
    """A name made safe for a file name: letters, digits, ``-`` and ``_`` kept, anything else ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(label))


FORMATS = ("png", "svg")


def save(fig, out_dir: Path, name: str, caption: str, formats: tuple[str, ...] = FORMATS) -> Plot:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{f}" for f in formats]
    for p in paths:
        fig.savefig(p, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Plot(paths, caption, name)


def short_title(cells: Cells) -> str:
    """``Table 4, Exp. C1``: a table's name without its description (distinct for every table)."""
    return cells.spec.title.split(":")[0].replace(" — ", ", ")


# ---------------------------------------------------------------------------------------------------- Exp. B


def pair_colors(n: int) -> list[tuple[str, str]]:
    """``n`` (dark, light) colour pairs: tab20's ten, then tab20b's and tab20c's groups (their 1st and 3rd shade)."""
    pairs = [(matplotlib.colors.to_hex(plt.get_cmap("tab20")(2 * i)),
              matplotlib.colors.to_hex(plt.get_cmap("tab20")(2 * i + 1))) for i in range(10)]
    for cmap in ("tab20b", "tab20c"):
        pairs += [(matplotlib.colors.to_hex(plt.get_cmap(cmap)(4 * i)),
                   matplotlib.colors.to_hex(plt.get_cmap(cmap)(4 * i + 2))) for i in range(5)]
    return [pairs[i % len(pairs)] for i in range(n)]


FLIP_SERIES = {"brSF": ("batchwise", "-", "o", 0), "frSF": ("fixed", "--", "s", 1)}  # label, line, marker, shade


def flip_probability_figure(table3: Cells):
    """Exp. B: error against sign-flip probability p (0 = "Same Sign"), per dataset: batchwise (brSF-p) a solid line
    with circles in the dataset's dark shade, fixed (frSF-p) a dashed line with squares in its light shade."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = list(table3.value.index)
    for row, pair in zip(rows, pair_colors(len(rows))):
        for family, (label, style, marker, shade) in FLIP_SERIES.items():
            cols = [flip_column(family, p) for p in FLIP_P]
            ys = table3.value.loc[row, cols].to_numpy(dtype=float)
            err = np.nan_to_num(table3.std.loc[row, cols].to_numpy(dtype=float))  # one seed: no bar
            if np.isfinite(ys).any():
                ax.errorbar(FLIP_P, ys, yerr=err, linestyle=style, marker=marker, capsize=3, color=pair[shade],
                            label=f"{plain(row)} ({label})")
    ax.set_xlabel("sign-flip probability p (%); p = 0 is “Same Sign”")
    ax.set_ylabel("best validation error (%)" + (", mean ± 1 std over seeds" if table3.multi_seed else ""))
    ax.set_title("Exp. B: violating sign concordance")
    ax.set_xticks(FLIP_P)
    ax.set_xlim(FLIP_P[0] - P_MARGIN, FLIP_P[-1] + P_MARGIN)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    caption = ("Exp. B (Table 3): the best validation error against the sign-flip probability p, per dataset, "
               "for batchwise flips (brSF-p, solid line, circles) and fixed flips (frSF-p, dashed line, squares); "
               "p = 0 is the paper's “Same Sign” column"
               + (", with ±1 standard deviation over seeds." if table3.multi_seed else "."))
    return fig, caption


def flip_probability(table3: Cells, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> Plot:
    fig, caption = flip_probability_figure(table3)
    return save(fig, out_dir, "exp_b_flip_probability", caption, formats)


# ------------------------------------------------------------------------------------------- learning curves


def curve_data(uri: str | None, runs: pd.DataFrame, dataset_row: str, models: list[str] | None) -> pd.DataFrame:
    """The learning curves' numbers: per model and epoch, the val error's mean, min and max over seeds of each
    seed's chosen run (the one its cell reports), n seeds, the run's lr multiplier when n = 1, and whether a chosen
    run diverged. Columns: model, epoch, mean, lo, hi, n, lr_mult, diverged (read from MLflow's metric history)."""
    mine = runs[(runs["row"] == dataset_row) & runs["status"].isin(DONE) & (runs["freeze"] == "none")]
    if models:
        mine = mine[mine["model"].isin(models)]
    select_on = mine[tracking.SELECT_ON_TAG].iloc[0] if len(mine) else "test"
    if "seed" not in mine:
        mine = mine.assign(seed=0)
    best = ranked(mine, select_on).drop_duplicates(["model", "seed"])  # each seed's run, as its cell chose it
    c = tracking.client(uri)
    out = []
    for model, group in best.groupby("model"):
        curves = []
        for _, run in group.iterrows():
            hist = c.get_metric_history(run["run_id"], tracking.VAL_METRIC)
            curves.append(pd.Series({m.step: m.value for m in hist}, dtype=float))
        frame = pd.concat(curves, axis=1).sort_index()  # epochs × seeds
        out.append(pd.DataFrame({"model": model, "epoch": frame.index, "mean": frame.mean(axis=1).to_numpy(),
                                 "lo": frame.min(axis=1).to_numpy(), "hi": frame.max(axis=1).to_numpy(),
                                 "n": frame.notna().sum(axis=1).to_numpy(),
                                 "lr_mult": group["lr_mult"].iloc[0] if len(group) == 1 else np.nan,
                                 "diverged": bool((group["status"] == RunStatus.DIVERGED).any())}))
    cols = ["model", "epoch", "mean", "lo", "hi", "n", "lr_mult", "diverged"]
    if not out:
        return pd.DataFrame(columns=cols)
    order = {m: i for i, m in enumerate(dict.fromkeys(column_run(c)[0] for t in TABLES.values() for c in t.columns))}
    out.sort(key=lambda d: (order.get(d["model"].iloc[0], len(order)), d["model"].iloc[0]))  # the tables' order
    return pd.concat(out, ignore_index=True)


def curve_styles(models: list[str]) -> dict[str, dict]:
    """One look per model, every one distinct in colour and in line style (and marker): the i-th model gets the
    i-th of each list; past the palette, colours are drawn evenly from a continuous colour map instead."""
    n = len(models)
    colors = list(CURVE_COLORS) if n <= len(CURVE_COLORS) else \
        [matplotlib.colors.to_hex(plt.get_cmap("turbo")(x)) for x in np.linspace(0.02, 0.98, n)]
    dashes = list(CURVE_DASHES) + [(1 + k, 1 + k % 3) for k in range(max(0, n - len(CURVE_DASHES)))]
    return {m: {"color": colors[i], "linestyle": (0, dashes[i]) if dashes[i] else "-",
                "marker": CURVE_MARKERS[i % len(CURVE_MARKERS)]} for i, m in enumerate(models)}


def learning_curves_figure(data: pd.DataFrame, dataset_row: str):
    """Val error per epoch of each model's chosen run (``curve_data``); with several seeds, the mean over seeds in a
    band from the lowest to the highest seed. Integer epoch ticks; a run that diverged ends in a large ×."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    seeds = int(data["n"].max()) if len(data) else 0
    styles = curve_styles(list(dict.fromkeys(data["model"])))
    for model, d in data.groupby("model", sort=False):
        n, style, diverged = int(d["n"].max()), styles[model], bool(d["diverged"].iloc[0])
        label = (f"{model} (lr×{d['lr_mult'].iloc[0]:g})" if n == 1 else f"{model} ({n} seeds)") + \
            (", diverged" if diverged else "")
        ax.plot(d["epoch"], d["mean"], markersize=4, markevery=max(1, len(d) // 8), label=label, **style)
        if n > 1:
            ax.fill_between(d["epoch"], d["lo"], d["hi"], color=style["color"], alpha=0.2, linewidth=0)
        if diverged:
            last = d.dropna(subset=["mean"]).iloc[-1]
            ax.plot([last["epoch"]], [last["mean"]], marker="X", markersize=11, color=style["color"],
                    markeredgecolor="black", linestyle="none")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("validation error (%)" + (": mean over seeds, band min–max" if seeds > 1 else ""))
    ax.set_title(f"Learning curves: {plain(dataset_row)} (best run per model" + (" and seed)" if seeds > 1 else ")"))
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    caption = (f"The validation error after every epoch (epoch 0: the untrained network) of each model's best run on "
               f"{dataset_row}, the run its table cell reports"
               + (", as the mean over seeds in a band from the lowest to the highest seed" if seeds > 1 else "")
               + "; a large × marks where a run diverged.")
    return fig, caption


def learning_curves(uri: str | None, experiment: str, runs: pd.DataFrame, dataset_row: str,
                    models: list[str] | None, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> Plot:
    """``learning_curves_figure`` of ``curve_data``, written to ``out_dir``."""
    fig, caption = learning_curves_figure(curve_data(uri, runs, dataset_row, models), dataset_row)
    return save(fig, out_dir, f"learning_curves_{file_part(dataset_row)}", caption, formats)


# -------------------------------------------------------------------------------------------------- heat maps


def difference(cells: Cells) -> np.ndarray:
    """Ours − paper per cell (pp), rows × columns, NaN where one side has no number."""
    return (cells.value - cells.paper()).to_numpy(dtype=float)


def heatmap_limit(cells_list: list[Cells]) -> float:
    """The one colour scale of every heat map: ±(the largest |ours − paper| of any table, at least 3 pp), so a
    colour means the same difference in every figure."""
    diffs = [np.abs(d[np.isfinite(d)]) for d in map(difference, cells_list)]
    largest = max((float(d.max()) for d in diffs if d.size), default=0.0)
    return float(np.ceil(max(MIN_HEATMAP_LIMIT, largest)))


def luminance(rgb) -> float:
    """WCAG relative luminance of an sRGB colour (components in [0, 1])."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a, b) -> float:
    """WCAG contrast ratio of two colours (1 to 21; text wants ≥ 4.5)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_color(background) -> str:
    """Black or white, whichever contrasts more with ``background``."""
    return "black" if contrast(background, (0, 0, 0)) >= contrast(background, (1, 1, 1)) else "white"


def heatmap_figure(cells: Cells, limit: float):
    """Ours − paper per cell on the shared diverging scale ±``limit`` centred on 0 (``heatmap_limit``): red, we do
    worse; blue, better; grey, no number on one side. Each cell's number in black or white, whichever reads."""
    diff = difference(cells)
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * diff.shape[1], 1.2 + 0.4 * diff.shape[0]))
    cmap = plt.get_cmap(HEATMAP_CMAP).with_extremes(bad="#dddddd")
    norm = matplotlib.colors.TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    im = ax.imshow(np.ma.masked_invalid(diff), cmap=cmap, norm=norm, aspect="auto")
    for (i, j), v in np.ndenumerate(diff):
        if np.isfinite(v):
            ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7, color=text_color(cmap(norm(v))))
    ax.set_xticks(range(diff.shape[1]), cells.value.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(diff.shape[0]), [plain(r) for r in cells.value.index], fontsize=8)
    fig.colorbar(im, ax=ax, label="ours − paper (pp)")
    ax.set_title(f"{short_title(cells)}: ours − paper")
    stand_ins = "".join(f" {r} is compared with the paper's {COMPARE_ROW[r]} row, a stand-in." for r in cells.value.index
                        if r in COMPARE_ROW)
    caption = (f"{short_title(cells)}: our cell minus the paper's, in percentage points (red: we do worse, blue: "
               f"better, grey: no number on one side), on one colour scale of ±{limit:g} pp shared by every table."
               + stand_ins)
    return fig, caption


def difference_heatmap(cells: Cells, out_dir: Path, limit: float | None = None,
                       formats: tuple[str, ...] = FORMATS) -> Plot:
    """``heatmap_figure`` written to ``out_dir``; ``limit`` defaults to this table's own ``heatmap_limit`` (pass the
    one of every table to share the scale)."""
    fig, caption = heatmap_figure(cells, heatmap_limit([cells]) if limit is None else limit)
    return save(fig, out_dir, f"diff_table{cells.spec.key}", caption, formats)


# ------------------------------------------------------------------------------------------------ robustness


def robustness_counts(cells_list: list[Cells]) -> pd.DataFrame:
    """Per table, among the coloured-or-plain cells with n ≥ 2 seeds (SGD columns excluded): how many keep
    their colour over seeds (``robust``) and how many do not (``fragile``, ``Cells.fragile``); ``coloured``:
    of the robust, those yellow or blue. Index: table key."""
    rows = {}
    for cells in cells_list:
        cols = [c for c in cells.value.columns if baseline_column(c) != c and baseline_column(c) in cells.value.columns]
        judged = cells.n[cols] >= 2
        fragile, coloured = cells.fragile()[cols], cells.classes()[cols] != SAME
        rows[cells.spec.key] = {"robust": int((judged & ~fragile).to_numpy().sum()),
                                "fragile": int((judged & fragile).to_numpy().sum()),
                                "coloured": int((judged & ~fragile & coloured).to_numpy().sum())}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["robust", "fragile", "coloured"])


def robustness(cells_list: list[Cells], out_dir: Path, formats: tuple[str, ...] = FORMATS) -> Plot:
    """Verdict robustness: per table, the multi-seed cells whose colour holds over seeds vs the fragile ones."""
    counts = robustness_counts(cells_list)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(counts))
    ax.bar(x, counts["robust"], label="colour holds over seeds")
    ax.bar(x, counts["fragile"], bottom=counts["robust"], label="fragile (?)", color="#e57373")
    ax.set_xticks(x, [f"Table {k}" for k in counts.index])
    ax.set_ylabel("cells with ≥ 2 seeds")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title("Verdict robustness over seeds")
    ax.legend(fontsize=8)
    caption = ("Per table, the cells with at least two seeds whose colour holds over the seeds, and those whose "
               "colour does not (marked ? in the tables).")
    return save(fig, out_dir, "verdict_robustness", caption, formats)
