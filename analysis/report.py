"""The report page (``asym-report``) and the tables and report a sweep's MLflow run keeps as artifacts.

A sweep's run (``asym.kind = sweep``, ``asym.tracking.start_sweep_run``) gets, when the sweep ends and whenever
``asym-tables``/``asym-report --log-to-mlflow`` asks: ``tables/tables.html`` (rendered by MLflow's artifact
view), ``tables/tables.csv``, ``tables/tables.md``, ``report.html`` (figures embedded) and ``runs.csv`` (every run
of the sweep: its MLflow run and its parent, the sweep that first trained it).
"""
from __future__ import annotations

import base64
import html as html_lib
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from asym import tracking
from asym.files import write_atomic
from asym.protocol import SELECTIONS
from asym.study import table_keys

from . import claims, figures, render
from .tables import Cells, build_all, load_runs, select_protocol

TABLES_DIR = "tables"              # artifact folder of a sweep run's tables
TABLE_FILES = {"html": "tables.html", "csv": "tables.csv", "markdown": "tables.md"}
REPORT_FILE = "report.html"
RUNS_FILE = "runs.csv"
TITLE = "Weight symmetry in backpropagation: our runs vs the paper"


def figures_of(cells_list: list[Cells], runs: pd.DataFrame, uri: str | None, experiment: str, fig_dir: Path,
               curves: str | None = None, formats: tuple[str, ...] = figures.FORMATS) -> list[figures.Plot]:
    """Every figure of the report: Exp. B, the learning curves on ``curves`` (default: the first row), a heat map per
    table that has a cell to compare with the paper (one colour scale for all), with several seeds the verdict
    robustness. Exp. B and a heat map are left out when their table has nothing to show."""
    by_key = {c.spec.key: c for c in cells_list}
    plots = []
    if "3" in by_key and by_key["3"].value.drop(columns="SGD").notna().to_numpy().any():  # a p column has a cell
        plots.append(figures.flip_probability(by_key["3"], fig_dir, formats))
    row = curves or cells_list[0].value.index[0]
    plots.append(figures.learning_curves(uri, experiment, runs, row, None, fig_dir, formats))
    limit = figures.heatmap_limit(cells_list)
    plots += [figures.difference_heatmap(c, fig_dir, limit, formats) for c in cells_list
              if np.isfinite(figures.difference(c)).any()]
    if any(c.multi_seed for c in cells_list):
        plots.append(figures.robustness(cells_list, fig_dir, formats))
    return plots


def report_page(cells_list: list[Cells], line: str, plots: list[figures.Plot]) -> str:
    """One self-contained HTML page: each table under its title (once), the paper beside it, the conclusions as
    checks, the figures with their captions."""
    body = [f"<p>{html_lib.escape(line)}</p>"]
    for c in cells_list:
        body.append(f"<h2>{html_lib.escape(c.title)}</h2>")
        body.append(render.html(c, compare_paper=True, caption=False))
    body.append("<h2>The paper's conclusions as checks</h2>")
    checks = claims.report({c.spec.key: c for c in cells_list}, SELECTIONS[cells_list[0].select_on])
    body.append(f'<pre style="white-space: pre-wrap">{html_lib.escape(checks)}</pre>')
    body.append("<h2>Figures</h2>")
    for number, plot in enumerate(plots, start=1):
        png = next(p for p in plot.paths if p.suffix == ".png")  # embedded: the page stands alone
        data = base64.b64encode(png.read_bytes()).decode()
        body.append(f'<figure><img alt="{html_lib.escape(plot.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>Figure {number}. {html_lib.escape(plot.caption)}</figcaption></figure>")
    return render.html_page(TITLE, "\n".join(body))


def write_report(cells_list: list[Cells], line: str, runs: pd.DataFrame, uri: str | None, experiment: str,
                 out: Path, curves: str | None = None, formats: tuple[str, ...] = figures.FORMATS) -> list[figures.Plot]:
    """``out`` (the page) and its figures' files (PNG, SVG) in ``<out stem>_figures/``; the figures."""
    plots = figures_of(cells_list, runs, uri, experiment, out.with_name(out.stem + "_figures"), curves, formats)
    page = report_page(cells_list, line, plots)
    write_atomic(out, lambda p: p.write_text(page, encoding="utf-8"))
    return plots


def write_tables(cells_list: list[Cells], line: str, folder: Path) -> list[Path]:
    """The tables, the paper beside them, as HTML, CSV and Markdown files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt, name in TABLE_FILES.items():
        text = render.render_tables(cells_list, fmt, True, False)
        if fmt == "markdown":
            text = line + "\n\n" + text
        (folder / name).write_text(text, encoding="utf-8")
        out.append(folder / name)
    return out


# ------------------------------------------------------------------------------------- into a sweep's MLflow run


class NoSweepRun(LookupError):
    """No sweep run to log to (none of this protocol, or not a sweep run of this experiment): one line."""


def target_run(uri: str | None, experiment: str, wanted: str | None, protocol_hash: str) -> str:
    """The sweep run to log to: ``wanted`` (a run id, which must be a sweep run of ``experiment``), else the newest
    sweep run of the tables' protocol. Raises ``NoSweepRun``."""
    if wanted:
        if wanted not in {r.info.run_id for r in tracking.sweep_runs(uri, experiment)}:
            raise NoSweepRun(f"run {wanted} is not a sweep run of experiment {experiment!r} (its sweep runs carry "
                             f"tag {tracking.KIND_TAG}={tracking.SWEEP_KIND})")
        return wanted
    found = tracking.sweep_runs(uri, experiment, protocol_hash)
    if not found:
        raise NoSweepRun(f"no sweep run of protocol {protocol_hash[:8]} in experiment {experiment!r}: run a sweep "
                         "(asym-train -m …), or name a sweep run with --log-to-mlflow RUN_ID")
    return found[0].info.run_id


def sweep_runs_frame(runs: pd.DataFrame, plan: list[dict]) -> pd.DataFrame:
    """Every run of a sweep's plan (``runs.json`` entries) with its MLflow run and parent (where it has one yet)."""
    known = runs.set_index("config_hash") if len(runs) else pd.DataFrame()
    rows = []
    for e in plan:
        hit = known.loc[e["config_hash"]] if e["config_hash"] in known.index else None
        rows.append({"name": e["name"], "config_hash": e["config_hash"],
                     "run_id": None if hit is None else hit["run_id"],
                     "status": None if hit is None else hit["status"],
                     "parent_run_id": None if hit is None else hit.get("parent_run_id")})
    return pd.DataFrame(rows, columns=["name", "config_hash", "run_id", "status", "parent_run_id"])


def publish(uri: str | None, run_id: str, cells_list: list[Cells], line: str, runs: pd.DataFrame,
            experiment: str, report: bool | Path = True, plan: list[dict] | None = None) -> None:
    """Log the tables (``tables/``), the report page (``report``: True writes it, a path is a page already written
    by ``write_report``) and with ``plan`` the sweep's runs (``runs.csv``) as artifacts of the sweep run ``run_id``."""
    import shutil
    with tempfile.TemporaryDirectory(prefix="asym-publish-") as tmp:
        folder = Path(tmp)
        write_tables(cells_list, line, folder / TABLES_DIR)
        if report:
            page = folder / "page" / REPORT_FILE
            if report is True:
                write_report(cells_list, line, runs, uri, experiment, page)
            else:
                shutil.copytree(report.with_name(report.stem + "_figures"), page.with_name(page.stem + "_figures"))
                shutil.copyfile(report, page)
            tracking.log_artifacts(uri, run_id, page.parent)
        if plan is not None:
            sweep_runs_frame(runs, plan).to_csv(folder / RUNS_FILE, index=False)
            tracking.log_artifact(uri, run_id, folder / RUNS_FILE)
        tracking.log_artifacts(uri, run_id, folder / TABLES_DIR, TABLES_DIR)


def publish_sweep(config, run_id: str, which: list[str], protocol_hash: str | None, plan: list[dict]) -> None:
    """When a sweep ends: its tables (``which``, from the runs of its own protocol), the report of that protocol
    and the list of its runs, into its MLflow run. Called by the sweeper; raises what MLflow raises."""
    tracking.limit_http_retries()
    uri, experiment = config.tracking.uri, config.tracking.experiment
    runs, line = select_protocol(load_runs(uri, experiment), None, protocol_hash)
    with tempfile.TemporaryDirectory(prefix="asym-sweep-") as tmp:
        page = Path(tmp) / REPORT_FILE
        # PNG only: the page embeds them (asym-report writes the SVGs too)
        write_report(build_all(runs, table_keys("all"), line), line, runs, uri, experiment, page, formats=("png",))
        publish(uri, run_id, build_all(runs, table_keys(list(which) or "all"), line), line, runs, experiment,
                report=page, plan=plan)
