"""``asym-tables`` and ``asym-report``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asym import tracking
from asym.files import write_atomic
from asym.protocol import SELECTIONS
from asym.study import table_keys

from . import claims
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


LOG_HELP = ("also log the tables (HTML, CSV, Markdown; asym-report: the report) as artifacts of a sweep's MLflow run: "
            "RUN_ID, or by default the newest sweep run of the tables' protocol")


def log_target(a, runs) -> str | None:
    """The sweep run ``--log-to-mlflow`` names, checked before anything is written (one line, exit 2), or None."""
    if a.log_to_mlflow is None:
        return None
    from . import report as pages  # imports matplotlib (a second or more): only to draw or log, never for a table
    try:
        tracking.check_access(a.tracking_uri, a.experiment, write=True)
        return pages.target_run(a.tracking_uri, a.experiment, a.log_to_mlflow or None,
                                runs["protocol_hash"].iloc[0])
    except (tracking.AccessError, pages.NoSweepRun) as e:
        fail(str(e), 2)
    except Exception as e:  # unreachable server, unreadable database
        fail(f"cannot read MLflow at {tracking.resolve_uri(a.tracking_uri)}: {str(e).splitlines()[0][:200]}")


def log_to_mlflow(a, run_id: str, cells_list, line: str, runs, report) -> None:
    from . import report as pages  # imports matplotlib (a second or more): only to draw or log, never for a table
    try:
        pages.publish(a.tracking_uri, run_id, cells_list, line, runs, a.experiment, report=report)
    except Exception as e:  # the server went away between the check and the upload
        fail(f"cannot log to MLflow run {run_id} at {tracking.resolve_uri(a.tracking_uri)}: "
             f"{str(e).splitlines()[0][:200]}")
    print(f"{'asym-report' if report else 'asym-tables'}: logged to MLflow run {run_id} "
          f"({pages.TABLES_DIR}/{', '.join(pages.TABLE_FILES.values())}" + (f", {pages.REPORT_FILE}" if report else "")
          + ")", file=sys.stderr)


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
    ap.add_argument("--log-to-mlflow", nargs="?", const="", default=None, metavar="RUN_ID", help=LOG_HELP)
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
    target = log_target(a, runs)
    cells_list = build_all(runs, keys, line)
    if target:
        log_to_mlflow(a, target, cells_list, line, runs, report=False)
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
    ap.add_argument("--log-to-mlflow", nargs="?", const="", default=None, metavar="RUN_ID", help=LOG_HELP)
    a = ap.parse_args(argv)
    from . import report as pages  # imports matplotlib (a second or more): only to draw or log, never for a table
    runs, line = one_protocol(read_runs(a.tracking_uri, a.experiment), a.protocol)
    target = log_target(a, runs)
    cells_list = build_all(runs, table_keys("all"), line)
    plots = pages.write_report(cells_list, line, runs, a.tracking_uri, a.experiment, a.out, a.curves)
    print(f"asym-report: wrote {a.out} and {sum(len(p.paths) for p in plots)} figure files in "
          f"{a.out.with_name(a.out.stem + '_figures')}")
    if target:
        log_to_mlflow(a, target, cells_list, line, runs, report=a.out)
