"""Figures (matplotlib, written as PNG and SVG): Exp. B error against p, learning curves, ours − paper heat map."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on clusters and in CI without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from asym import tracking  # noqa: E402
from asym.train import BEST_ERROR as BEST  # noqa: E402

from .tables import Cells  # noqa: E402

FLIP_P = (0, 25, 50, 75, 100)


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
            cols = [f"{family}+BN+BM" if p == 0 else f"{family}-p{p}+BN+BM" for p in FLIP_P]
            ys = table3.value.loc[row, cols].to_numpy(dtype=float)
            if np.isfinite(ys).any():
                ax.plot(FLIP_P, ys, style, marker="o", color=colors[i % len(colors)],
                        label=f"{plain(row)} ({'batchwise' if family == 'brSF' else 'fixed'})")
    ax.set_xlabel("sign-flip probability p (%)")
    ax.set_ylabel("best validation error (%)")
    ax.set_title("Exp. B: violating sign concordance")
    ax.set_xticks(FLIP_P)
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    return save(fig, out_dir, "exp_b_flip_probability")


def learning_curves(uri: str | None, experiment: str, runs: pd.DataFrame, dataset_row: str,
                    models: list[str] | None, out_dir: Path) -> list[Path]:
    """Val error per epoch of each model's best run on one dataset (read from MLflow's metric history)."""
    mine = runs[(runs["row"] == dataset_row) & runs["status"].isin(tracking.DONE) & (runs["freeze"] == "none")]
    if models:
        mine = mine[mine["model"].isin(models)]
    best = mine.dropna(subset=[BEST]).sort_values(BEST).drop_duplicates("model")
    c = tracking.client(uri)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, run in best.sort_values("model").iterrows():
        hist = sorted(c.get_metric_history(run["run_id"], tracking.VAL_METRIC), key=lambda m: m.step)
        ax.plot([m.step for m in hist], [m.value for m in hist], marker=".",
                label=f"{run['model']} (lr×{run['lr_mult']:g})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"Learning curves: {plain(dataset_row)} (best run per model)")
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
