"""Seconds per training step at batch 100 for each Table 1 network × model kind: the dry run's cost table.

    python benchmarks/bench_steps.py [--device cpu|cuda] [--threads 1] [--steps 5] [--repeats 3] [--write]

For every arch of Table 1 (MNIST, CIFAR, SVHN, TIMIT MLP, the 119×119 "all others" net with 102 classes) and
every kind of ``asym.launcher.cost.KINDS`` (no BN; BN with fixed feedback; BN with feedback redrawn every batch),
one process times the engine's training step at batch 100 (forward, backward, update) and its evaluation
forward (batches of 1000, no gradients), interleaved round-robin, median of ``repeats`` × ``steps``. On a CPU
the time is the process's CPU time with one thread (core-seconds, what a CPU-hour counts); on a GPU, wall time.
``--write`` replaces this device's rows of ``launcher/step_costs.csv`` (the table the dry run reads), keeping
the other devices' rows. CPU figures are per core: measure with ``--threads 1``.
"""
from __future__ import annotations

import argparse
import csv
import io
import platform
import statistics
import time
from pathlib import Path

import torch

from asym.data import TensorData
from asym.engine import EVAL_BATCH, Engine
from asym.launcher.cost import KINDS, REFERENCE_BATCH, STEP_COSTS_FILE
from asym.archs import ARCHS
from asym.protocol import Protocol, RunSpec

CLASSES = {"mnist": 10, "cifar": 10, "svhn": 10, "timit": 80, "default119": 102}  # default119: Caltech's 102
TABLE = Path(__file__).resolve().parent.parent / "launcher" / STEP_COSTS_FILE
FIELDS = ("device", "arch", "kind", "threads", "train_step_s", "eval_s_per_100", "machine")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timers(arch: str, kind: str, device: torch.device):
    """(train step, evaluation of EVAL_BATCH samples) closures on random inputs of the arch's shape."""
    shape = ARCHS[arch]["input"]
    x = torch.randn(EVAL_BATCH, *shape, device=device)
    y = torch.randint(0, CLASSES[arch], (EVAL_BATCH,), device=device)
    data = TensorData("bench", arch, CLASSES[arch], x, y, x, y)
    engine = Engine([RunSpec(kind, "bench", 1.0)], Protocol(), data, device)
    xb, yb = x[:REFERENCE_BATCH], y[:REFERENCE_BATCH]

    def train():
        engine.net.train()
        engine.train_step(xb, yb)

    return train, lambda: engine.evaluate(x, y)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def measure(device: torch.device, steps: int, repeats: int) -> list[dict]:
    fns = {(a, k): timers(a, k, device) for a in CLASSES for k in KINDS}
    times = {key: ([], []) for key in fns}
    for fn_pair in fns.values():  # warm up (allocator, oneDNN/cuDNN choices)
        for fn in fn_pair:
            fn()
    sync(device)
    # CPU: the process's CPU time (one thread), i.e. core-seconds — what a CPU-hour counts, and what other work
    # on a shared machine does not inflate the way it inflates wall time; GPU: wall time, synchronised
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    for _ in range(repeats):
        for key, (train, evaluate) in fns.items():  # round-robin: drift of a shared machine hits every variant
            for i, fn in enumerate((train, evaluate)):
                t0 = clock()
                for _ in range(steps):
                    fn()
                sync(device)
                times[key][i].append((clock() - t0) / steps)
    return [{"device": device.type, "arch": a, "kind": k, "threads": torch.get_num_threads() if device.type == "cpu" else "",
             "train_step_s": f"{statistics.median(times[(a, k)][0]):.5f}",
             "eval_s_per_100": f"{statistics.median(times[(a, k)][1]) * REFERENCE_BATCH / EVAL_BATCH:.5f}",
             "machine": machine(device)} for a, k in fns]


def write(rows: list[dict], device: str) -> None:
    kept = []
    if TABLE.exists():
        kept = [r for r in csv.DictReader(TABLE.read_text().splitlines()) if r["device"] != device]
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(kept + rows)
    TABLE.write_text(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true", help=f"write this device's rows into launcher/{STEP_COSTS_FILE}")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = measure(device, a.steps, a.repeats)
    print(f"{machine(device)}; batch {REFERENCE_BATCH}; median of {a.repeats}×{a.steps}, interleaved")
    print(f"{'arch':<12}{'kind':<13}{'s/train step':>14}{'s/100 eval':>12}{'÷ SGD':>8}")
    for r in rows:
        base = next(float(b["train_step_s"]) for b in rows if b["arch"] == r["arch"] and b["kind"] == "SGD")
        print(f"{r['arch']:<12}{r['kind']:<13}{r['train_step_s']:>14}{r['eval_s_per_100']:>12}"
              f"{float(r['train_step_s']) / base:>8.2f}")
    if a.write:
        write(rows, device.type)
        print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
