"""What ``asym-data status`` costs on the paper's large image datasets in their real shape.

    python benchmarks/bench_data_status.py [--root /tmp/asym-real-shapes] [--repeats 3]

Writes (once) the six per-class datasets in their real on-disk shape (``tests/layouts.py``: Caltech-101's real
class sizes, Caltech-256, LFW's 5,749 identities, Scene-67, PubFig83, SUFR-W: ~100,000 files) and times
``asym-data status`` on them in this process, median of ``--repeats``. It prints the whole status time and,
where the installed ``asym.data`` has one, its content identity (``asym.data.identity``: the folder scan and
the stat-based manifest) side by side with the layout check alone (the same scan), as a ratio. Run it with
another checkout's interpreter (its own editable install) for a before/after.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from layouts import REAL_SHAPES, write_real_shape  # noqa: E402

from asym import data  # noqa: E402
from asym.data import cli  # noqa: E402


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/asym-real-shapes")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    root = Path(a.root)
    for name in REAL_SHAPES:
        if not (root / REAL_SHAPES[name][0]).exists():
            write_real_shape(root, name)
    names = sorted(REAL_SHAPES)
    files = sum(sum(1 for _ in (root / REAL_SHAPES[n][0]).rglob("*")) for n in names)

    def status():
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(["status", *names, "--root", str(root), "--cache", str(root / ".cache")])
    total = timed(status, a.repeats)
    print(f"asym-data status, {len(names)} datasets, {files:,} files/folders: {total:.2f} s (median of {a.repeats})")
    if hasattr(data, "identity"):
        def layout():
            for n in names:
                data.sources.inspect(data.info(n), root, data.CLASS_PROTOCOLS.get(n), 0)
        ident = timed(lambda: [data.identity(n, root) for n in names], a.repeats)
        check = timed(layout, a.repeats)
        print(f"layout check alone {check:.2f} s; identity alone (the same scan + the stat manifest) {ident:.2f} s; "
              f"identity ÷ layout check = {ident / check:.2f}")


if __name__ == "__main__":
    main()
