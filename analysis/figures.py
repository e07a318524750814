"""Figures (matplotlib, written as PNG and SVG): Exp. B error against p, learning curves, ours − paper heat map,
verdict robustness over seeds. With several seeds: Exp. B has ±1 std error bars, the learning curves are the
mean over seeds in a min–max band."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on clusters and in CI without a display
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from asym import tracking  # noqa: E402
from asym.record import DONE  # noqa: E402
from asym.study import FLIP_P, flip_column  # noqa: E402

from .tables import SAME, Cells, baseline_column, ranked  # noqa: E402


def plain(label) -> str:
    """A user's name as literal text in a figure: a ``$`` would start matplotlib's mathtext."""
    return str(label).replace("$", r"\$")


def file_part(label) -> str:
    """A name made safe for a file name: letters, digits, ``-`` and ``_`` kept, anything else ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(label))


def save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    for p in paths:
        fig.savefig(p, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def flip_probability(table3: Cells, out_dir: Path) -> list[Path]:
    """Exp. B: error against sign-flip probability p, one colour per dataset, solid batchwise, dashed fixed."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(table3.value.index):
        for family, style in (("brSF", "-"), ("frSF", "--")):
            cols = [flip_column(family, p) for p in FLIP_P]
            ys = table3.value.loc[row, cols].to_numpy(dtype=float)
            err = np.nan_to_num(table3.std.loc[row, cols].to_numpy(dtype=float))  # one seed: no bar
            if np.isfinite(ys).any():
                ax.errorbar(FLIP_P, ys, yerr=err, fmt=style, marker="o", capsize=3, color=colors[i % len(colors)],
                            label=f"{plain(row)} ({'batchwise' if family == 'brSF' else 'fixed'})")
    ax.set_xlabel("sign-flip probability p (%)")
    ax.set_ylabel("best validation error (%)" + (", mean ± 1 std over seeds" if table3.multi_seed else ""))
    ax.set_title("Exp. B: violating sign concordance")
    ax.set_xticks(FLIP_P)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    return save(fig, out_dir, "exp_b_flip_probability")


def curve_data(uri: str | None, runs: pd.DataFrame, dataset_row: str, models: list[str] | None) -> pd.DataFrame:
    """The learning curves' numbers: per model and epoch, the val error's mean, min and max over seeds of each
    seed's chosen run (the one its cell reports), n seeds and the run's lr multiplier when n = 1.
    Columns: model, epoch, mean, lo, hi, n, lr_mult (read from MLflow's metric history)."""
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
        out.append(pd.DataFrame({"model": model, "epoch": frame.index, "mean": frame.mean(1).to_numpy(),
                                 "lo": frame.min(1).to_numpy(), "hi": frame.max(1).to_numpy(),
                                 "n": frame.notna().sum(1).to_numpy(),
                                 "lr_mult": group["lr_mult"].iloc[0] if len(group) == 1 else np.nan}))
    cols = ["model", "epoch", "mean", "lo", "hi", "n", "lr_mult"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def learning_curves(uri: str | None, experiment: str, runs: pd.DataFrame, dataset_row: str,
                    models: list[str] | None, out_dir: Path) -> list[Path]:
    """Val error per epoch of each model's chosen run on one dataset; with several seeds, the mean over seeds
    in a band from the lowest to the highest seed (``curve_data``)."""
    data = curve_data(uri, runs, dataset_row, models)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seeds = int(data["n"].max()) if len(data) else 0
    for model, d in data.groupby("model"):
        n = int(d["n"].max())
        line, = ax.plot(d["epoch"], d["mean"], marker=".",
                        label=f"{model} (lr×{d['lr_mult'].iloc[0]:g})" if n == 1 else f"{model} ({n} seeds)")
        if n > 1:
            ax.fill_between(d["epoch"], d["lo"], d["hi"], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("validation error (%)" + (": mean over seeds, band min–max" if seeds > 1 else ""))
    ax.set_title(f"Learning curves: {plain(dataset_row)} (best run per model"
                 + (" and seed)" if seeds > 1 else ")"))
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    return save(fig, out_dir, f"learning_curves_{file_part(dataset_row)}")


def difference_heatmap(cells: Cells, out_dir: Path) -> list[Path]:
    """Ours − paper per cell (pp); red: we do worse, blue: better, grey: no number on one side."""
    diff = (cells.value - cells.paper()).to_numpy(dtype=float)
    lim = max(3.0, float(np.nanmax(np.abs(diff)))) if np.isfinite(diff).any() else 3.0
    fig, ax = plt.subplots(figsize=(1 + 0.8 * diff.shape[1], 1 + 0.4 * diff.shape[0]))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(diff), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(diff):
        if np.isfinite(v):
            ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(diff.shape[1]), cells.value.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(diff.shape[0]), [plain(r) for r in cells.value.index], fontsize=8)
    fig.colorbar(im, ax=ax, label="ours − paper (pp)")
    ax.set_title(f"{cells.spec.title.split(' — ')[0]}: ours − paper")
    return save(fig, out_dir, f"diff_table{cells.spec.key}")


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


def robustness(cells_list: list[Cells], out_dir: Path) -> list[Path]:
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
    return save(fig, out_dir, "verdict_robustness")
