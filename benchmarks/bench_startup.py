"""Start-up time of the command-line tools: a rejected ``asym-train`` override and each tool's ``--help``.

    python benchmarks/bench_startup.py [--runs 5] [--env NAME=PYTHON ...] [--top 12]

Each command is the console script installed next to PYTHON (default: this interpreter), run in a fresh process
from an empty directory; the commands of every environment run interleaved, round-robin, ``--runs`` times, and
each is reported as its median wall time and as a ratio to ``python -c "import torch"`` in the same environment
(the reference: what any command that imports torch pays at least). Several ``--env`` compare installs side by
side in one run, e.g. the base commit's virtual environment against this one. Then ``python -X importtime``'s
top cumulative imports of ``asym-tables --help`` in each environment.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {  # label → (console script or "python", arguments)
    "asym-train modle=SGD (error line)": ("asym-train", ["modle=SGD"]),
    "asym-train --help": ("asym-train", ["--help"]),
    "asym-tables --help": ("asym-tables", ["--help"]),
    "asym-report --help": ("asym-report", ["--help"]),
    "asym-status --help": ("asym-status", ["--help"]),
    "asym-data status --help": ("asym-data", ["status", "--help"]),
    "asym-sync --help": ("asym-sync", ["--help"]),
    'python -c "import torch" (reference)': ("python", ["-c", "import torch"]),
}
REFERENCE = 'python -c "import torch" (reference)'


def argv(python: str, script: str, args: list[str]) -> list[str]:
    return [python, *args] if script == "python" else [str(Path(python).parent / script), *args]


def describe(python: str, cwd: str) -> str:
    """Where an environment's asym lives and at which commit (without importing asym here)."""
    where = subprocess.run([python, "-c", "import asym, os; print(os.path.dirname(os.path.dirname(asym.__file__)))"],
                           cwd=cwd, capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return f"{where} @ {commit or '?'}"


def measure(envs: dict[str, str], runs: int, cwd: str) -> tuple[dict, dict]:
    """Median seconds per (env, command), and each command's exit code and first stderr line (last run)."""
    times: dict[tuple[str, str], list[float]] = {}
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    for _ in range(runs):
        for label, (script, args) in COMMANDS.items():
            for env, python in envs.items():
                t = time.perf_counter()
                res = subprocess.run(argv(python, script, args), cwd=cwd, capture_output=True, text=True)
                times.setdefault((env, label), []).append(time.perf_counter() - t)
                seen[(env, label)] = (res.returncode, (res.stderr.strip().splitlines() or [""])[-1][:110])
    return {k: statistics.median(v) for k, v in times.items()}, seen


def importtime(python: str, top: int, cwd: str) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of the ``top`` slowest imports of ``asym-tables --help``."""
    res = subprocess.run([python, "-X", "importtime", str(Path(python).parent / "asym-tables"), "--help"], cwd=cwd,
                         capture_output=True, text=True)
    rows = []
    for line in res.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            rows.append((int(cumulative) / 1e6, name.rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=PYTHON",
                    help="an interpreter whose console scripts to time (repeat to compare; default: this one)")
    ap.add_argument("--top", type=int, default=12, help="imports listed from python -X importtime")
    a = ap.parse_args()
    envs = dict(e.split("=", 1) for e in a.env) or {"this": sys.executable}
    with tempfile.TemporaryDirectory() as cwd:  # an empty directory: no ./asym shadows the install, nothing written
        print(f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f} at start; Python {platform.python_version()}; "
              f"median of {a.runs} runs, interleaved")
        for env, python in envs.items():
            print(f"  {env}: {describe(python, cwd)}")
        medians, seen = measure(envs, a.runs, cwd)
        width = max(map(len, COMMANDS)) + 2
        print("\n" + f"{'command':<{width}}" + "".join(f"{env + ' s':>14}{'÷ torch':>9}" for env in envs))
        for label in COMMANDS:
            cells = "".join(f"{medians[(env, label)]:>14.2f}{medians[(env, label)] / medians[(env, REFERENCE)]:>9.2f}"
                            for env in envs)
            print(f"{label:<{width}}{cells}")
        for env in envs:
            code, line = seen[(env, "asym-train modle=SGD (error line)")]
            print(f"\n{env}: asym-train modle=SGD exits {code}, last stderr line: {line}")
        for env, python in envs.items():
            print(f"\n{env}: python -X importtime asym-tables --help, top {a.top} cumulative imports")
            for seconds, name in importtime(python, a.top, cwd):
                print(f"  {seconds:7.3f} s  {name}")


if __name__ == "__main__":
    main()
