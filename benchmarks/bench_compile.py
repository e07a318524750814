"""Eager against torch.compile'd training steps of the Table 1 networks, side by side.

    python benchmarks/bench_compile.py [--device cpu|cuda] [--threads N] [--steps 5] [--repeats 3]
                                       [--model uSF+BN+BM] [--nets mnist,cifar,default119] [--json PATH]

One process builds, per net, two engines of one run (``asym.engine.Engine``, N = 1, batch 100): eager and
``compile=True`` (``train.compile=true``, default inductor backend). The compiled one is warmed up first
(its compile time is printed apart), then both are timed round-robin on the same batch, median per step;
the ratio eager ÷ compiled > 1 means compiling pays.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from asym.data import TensorData
from asym.engine import Engine
from asym.archs import ARCHS
from asym.protocol import Protocol, RunSpec

BATCH = 100
NETS = ("mnist", "cifar", "default119")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_step(arch: str, model: str, device: torch.device, compile: bool):
    """A closure doing one Engine.train_step on a fixed random batch of ``arch``'s input shape."""
    torch.manual_seed(0)
    x = torch.randn(BATCH, *ARCHS[arch]["input"], device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    engine = Engine([RunSpec(model, "bench", 1.0)], Protocol(), TensorData("bench", arch, 10, x, y, x, y), device,
                    compile=compile)
    engine.net.train()
    return lambda: engine.train_step(x, y)


def measure(arch: str, model: str, device: torch.device, steps: int, repeats: int) -> dict:
    variants = {"eager": engine_step(arch, model, device, False), "compiled": engine_step(arch, model, device, True)}
    warm = {}
    for name, step in variants.items():
        sync(device)
        t = time.perf_counter()
        for _ in range(2):  # the compiled step compiles here (train mode: one graph, plus recompiles if any)
            step()
        sync(device)
        warm[name] = time.perf_counter() - t
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, step in variants.items():
            sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                step()
            sync(device)
            times[name].append((time.perf_counter() - t) / steps)
    eager, compiled = (statistics.median(times[k]) for k in ("eager", "compiled"))
    return {"net": arch, "model": model, "eager_ms": eager * 1e3, "compiled_ms": compiled * 1e3,
            "eager_over_compiled": eager / compiled, "compile_s": warm["compiled"] - warm["eager"]}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="uSF+BN+BM")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--json", help="also write the rows as JSON here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{a.model}, batch {BATCH}, {where}, torch {torch.__version__}; median of {a.repeats}×{a.steps} steps, "
          "interleaved")
    print(f"{'net':<12}{'eager ms':>10}{'compiled ms':>13}{'eager÷compiled':>16}{'compile s':>11}")
    rows = []
    for arch in a.nets.split(","):
        r = measure(arch, a.model, device, a.steps, a.repeats)
        rows.append(r)
        print(f"{arch:<12}{r['eager_ms']:>10.2f}{r['compiled_ms']:>13.2f}{r['eager_over_compiled']:>16.3f}"
              f"{r['compile_s']:>11.1f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": where, "torch": torch.__version__, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
