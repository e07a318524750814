"""``asym-sync``: upload the local run records (``result.json``) that MLflow lacks or holds incomplete.

A run that could not reach the tracking server keeps its record on disk; this uploads it, idempotently
(``asym.tracking.sync``). Torch-free: it reads JSON files and writes through MLflow's client.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asym import tracking


def main(argv: list[str] | None = None) -> None:
    """Console script ``asym-sync [OUTPUT_ROOT] [--tracking-uri URI] [--experiment NAME]``; exit code 2 with one
    ``error:`` line when the folder is missing or the server refuses or cannot be reached."""
    ap = argparse.ArgumentParser(prog="asym-sync", description="Upload local run records (result.json) that MLflow lacks.")
    ap.add_argument("output_root", nargs="?", default="runs", help="where the run directories are (default: runs)")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    ap.add_argument("--experiment", default=tracking.DEFAULT_EXPERIMENT)
    a = ap.parse_args(argv)
    if not Path(a.output_root).is_dir():
        fail(f"no run directory at {a.output_root}")
    tracking.limit_http_retries()
    try:
        counts = tracking.sync(a.output_root, a.tracking_uri, a.experiment)
    except RuntimeError as e:  # AccessError included: no credentials, wrong ones, an unreachable server
        fail(str(e))
    print(f"asym-sync: {counts['uploaded']} uploaded, {counts['already']} already in MLflow")


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)
