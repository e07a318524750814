"""``asym-tables`` and ``asym-report``."""
from __future__ import annotations

import argparse
import base64
import html as html_lib
import sys
from pathlib import Path

from asym import tracking
from asym.files import write_atomic
from asym.protocol import SELECTIONS
from asym.study import table_keys

from . import claims, render
from .render import render_tables, use_color
from .tables import build_all, load_runs, select_protocol

FORMATS = ("terminal", "html", "latex", "markdown", "csv")


def fail(msg: str, code: int = 1) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def read_runs(uri: str | None, experiment: str):
    tracking.limit_http_retries()
    try:
        return load_runs(uri, experiment)
    except LookupError as e:
        fail(str(e))
    except tracking.AccessError as e:  # no credentials, wrong ones: one line
        fail(str(e), 2)
    except Exception as e:  # unreachable server, unreadable database
        fail(f"cannot read MLflow at {tracking.resolve_uri(uri)}: {str(e).splitlines()[0][:200]}")


PROTOCOL_HELP = ("whose runs: paper, demo (the conf/train options) or a protocol hash prefix; default: the protocol "
                 "with the most runs. A table never mixes protocols")


def one_protocol(runs, wanted: str | None):
    """The runs of one protocol and the line naming it, or one error line (exit 2) if ``wanted`` matches none."""
    try:
        return select_protocol(runs, wanted)
    except LookupError as e:
        fail(str(e), 2)


def tables(argv: list[str] | None = None) -> None:
    """Console script ``asym-tables``."""
    ap = argparse.ArgumentParser(prog="asym-tables", description="Rebuild the paper's Tables 2–5 from MLflow runs.")
    ap.add_argument("--table", default="all", help="2, 3, 4 (C1 and C2), 4c1, 4c2, 5 or all (default)")
    ap.add_argument("--format", default="terminal", choices=FORMATS)
    ap.add_argument("--out", type=Path, help="write here instead of standard output")
    ap.add_argument("--compare", action="store_true", help="the paper's numbers and the differences side by side")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    ap.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    ap.add_argument("--color", default="auto", choices=("auto", "always", "never"), help="terminal colours")
    ap.add_argument("--protocol", default=None, help=PROTOCOL_HELP)
    ap.add_argument("--claims", action="store_true",
                    help="instead of tables: each of the paper's conclusions checked on our cells and on the paper's "
                         "(supported / contradicted / not enough cells), as text")
    a = ap.parse_args(argv)
    if a.claims and (a.format != "terminal" or a.compare or a.table != "all"):
        fail("--claims reads every table and prints text: use it without --table, --format or --compare", 2)
    try:
        keys = table_keys(a.table)
    except ValueError as e:
        fail(str(e), 2)
    runs, line = one_protocol(read_runs(a.tracking_uri, a.experiment), a.protocol)
    cells_list = build_all(runs, keys, line)
    if a.claims:
        text = claims.report({c.spec.key: c for c in cells_list}, SELECTIONS[cells_list[0].select_on])
    else:
        text = render_tables(cells_list, a.format, a.compare, use_color(a.color, a.out is None and sys.stdout.isatty()))
    if a.format == "terminal":
        text = line + "\n\n" + text
    if a.out:
        write_atomic(a.out, lambda p: p.write_text(text, encoding="utf-8"))
        print(f"asym-tables: wrote {a.out}")
    else:
        sys.stdout.write(text)


def report(argv: list[str] | None = None) -> None:
    """Console script ``asym-report``: one self-contained HTML page with every table, comparison and figure."""
    ap = argparse.ArgumentParser(prog="asym-report", description="Write an HTML report of every table and figure.")
    ap.add_argument("--out", type=Path, default=Path("report.html"))
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    ap.add_argument("--curves", default=None, help="dataset row for the learning curves (default: the first row)")
    ap.add_argument("--protocol", default=None, help=PROTOCOL_HELP)
    a = ap.parse_args(argv)
    from . import figures  # matplotlib takes a second or more to import: only the report draws, asym-tables never
    runs, line = one_protocol(read_runs(a.tracking_uri, a.experiment), a.protocol)
    cells_list = build_all(runs, table_keys("all"), line)
    fig_dir = a.out.with_name(a.out.stem + "_figures")
    paths = figures.flip_probability(cells_list[1], fig_dir)
    row = a.curves or cells_list[0].value.index[0]
    paths += figures.learning_curves(a.tracking_uri, a.experiment, runs, row, None, fig_dir)
    for c in cells_list:
        paths += figures.difference_heatmap(c, fig_dir)
    if any(c.multi_seed for c in cells_list):
        paths += figures.robustness(cells_list, fig_dir)
    body = []
    body.append(f"<p>{html_lib.escape(line)}</p>")
    for c in cells_list:
        body.append(f"<h2>{html_lib.escape(c.title)}</h2>")
        body.append(render.html(c, compare_paper=True))
    body.append("<h2>The paper's conclusions as checks</h2>")
    checks = claims.report({c.spec.key: c for c in cells_list}, SELECTIONS[cells_list[0].select_on])
    body.append(f'<pre style="white-space: pre-wrap">{html_lib.escape(checks)}</pre>')
    body.append("<h2>Figures</h2>")
    for p in paths:
        if p.suffix == ".png":  # embedded, so the page stands alone; PNG and SVG files sit beside it
            data = base64.b64encode(p.read_bytes()).decode()
            stem = html_lib.escape(p.stem)
            body.append(f'<figure><img alt="{stem}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{stem}</figcaption></figure>")
    page = render.html_page("Weight symmetry in backpropagation: our runs vs the paper", "\n".join(body))
    write_atomic(a.out, lambda p: p.write_text(page, encoding="utf-8"))
    print(f"asym-report: wrote {a.out} and {len(paths)} figure files in {fig_dir}")
