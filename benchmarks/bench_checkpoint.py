"""What a trusted checkpoint costs per epoch: write + fsync + read back + rotate, against a plain atomic save.

    python benchmarks/bench_checkpoint.py [--arch default119] [--classes 102] [--runs 1] [--repeats 7]

One process, the same engine state, the two saves interleaved round-robin (median kept, so machine noise hits
both alike): "plain" is the save before checkpoints were verified (``write_atomic`` + ``torch.save``), "trusted"
is ``asym.train.Checkpoint.save``. Prints the checkpoint's size, both times and their ratio; set the seconds
against an epoch's time on your machine (one save per epoch).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from asym.data import TensorData
from asym.engine import Engine
from asym.files import write_atomic
from asym.models import input_shape
from asym.train import Checkpoint, Protocol, RunSpec, job_identity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="default119")
    ap.add_argument("--classes", type=int, default=102)
    ap.add_argument("--runs", type=int, default=1, help="members of the job (a run group if > 1)")
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    shape = input_shape(a.arch)
    x = torch.zeros(2, *shape)
    data = TensorData("bench", a.arch, a.classes, x, torch.zeros(2, dtype=torch.long), x, torch.zeros(2, dtype=torch.long))
    runs = [RunSpec("uSF+BN+BM", "digits", m) for m in (100, 10, 1, 0.1, 0.01)[:a.runs]]
    proto = Protocol()
    engine = Engine(runs, proto, data, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        trusted = Checkpoint(engine, Path(tmp) / "trusted" / "checkpoint.pt", job_identity(runs, proto))
        plain_path = Path(tmp) / "plain" / "checkpoint.pt"

        def plain() -> None:
            state = {**engine.state_dict(), "epoch": 0, "histories": trusted.histories, "statuses": trusted.statuses}
            write_atomic(plain_path, lambda p: torch.save(state, p))
        times = {"plain": [], "trusted": []}
        for _ in range(a.repeats):
            for name, save in (("plain", plain), ("trusted", trusted.save)):
                t0 = time.perf_counter()
                save()
                times[name].append(time.perf_counter() - t0)
        size = trusted.path.stat().st_size
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{a.arch} net, {a.classes} classes, {a.runs} run(s): checkpoint {size / 2**20:.1f} MiB")
    print(f"  plain atomic save   {med['plain'] * 1e3:8.1f} ms")
    print(f"  trusted save        {med['trusted'] * 1e3:8.1f} ms   ({med['trusted'] / med['plain']:.2f}× plain)")


if __name__ == "__main__":
    main()
