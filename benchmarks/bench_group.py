"""Model-steps per second: one run at a time against run groups (N lr multipliers as one network).

    python benchmarks/bench_group.py [--device cpu|cuda] [--threads N] [--steps 10] [--model uSF+BN+BM]

One process times forward + backward + Batch Manhattan update at batch 100 on the MNIST and CIFAR nets
(Table 1) for a plain torch loop, the engine's single run (N = 1) and its groups of 5 and 35, interleaved
round-robin (median per step), prints the ratios to the plain loop, and estimates the whole paper's
compute time from the measured rates.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from asym import build_network, parse_model
from asym.data import TensorData
from asym.engine import Engine
from asym.optim import BatchManhattan
from asym.protocol import Protocol, RunSpec
from asym.study import ASSUMED_SIZES, PAPER_DATASETS, TRAIN_SIZE, paper_runs

BATCH = 100
GROUP_SIZES = (5, 35)
# training-split sizes of the paper's datasets, from the study (asym.study.TRAIN_SIZE; iCub's assumed): the basis
TRAIN_SIZES = {n: TRAIN_SIZE.get(n) or ASSUMED_SIZES[n][0] for n in PAPER_DATASETS}
PAPER_RUNS, EPOCHS = len(paper_runs()), Protocol().epochs
NETS = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}


def step_fn(arch: str, n: int, model: str, device):
    """A closure doing one training step: of the engine with n members, or (n = 0) of a plain torch loop
    on the Table 1 net — the reference the engine's N = 1 must match in cost."""
    x = torch.randn(BATCH, *NETS[arch], device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    if n == 0:
        spec = parse_model(model)
        net = build_network(arch, 10, spec).to(device)
        opt = BatchManhattan(net.parameters(), lr=1e-4, setting=spec.setting)

        def step():
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return net, step
    data = TensorData("bench", arch, 10, x, y, x, y)
    engine = Engine([RunSpec(model, "bench", 1.0)] * n, Protocol(), data, device)
    return engine.net, lambda: engine.train_step(x, y)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="uSF+BN+BM")
    a = ap.parse_args()
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{a.model}, batch {BATCH}, {where}; median of {a.repeats}×{a.steps} steps, interleaved")
    print(f"{'net':<7}{'variant':<13}{'ms/step':>10}{'model-steps/s':>15}{'÷ plain':>10}")
    rates = {}
    for arch in NETS:
        variants = {"plain torch": (1, *step_fn(arch, 0, a.model, device)), "single": (1, *step_fn(arch, 1, a.model, device))}
        variants.update({f"group of {n}": (n, *step_fn(arch, n, a.model, device)) for n in GROUP_SIZES})
        times = {k: [] for k in variants}
        for _, (_, net, step) in variants.items():
            net.train()
            step()  # warm-up
        for _ in range(a.repeats):
            for name, (_, _, step) in variants.items():
                sync(device)
                t = time.perf_counter()
                for _ in range(a.steps):
                    step()
                sync(device)
                times[name].append((time.perf_counter() - t) / a.steps)
        single = None
        for name, (n, _, _) in variants.items():
            ms = statistics.median(times[name])
            rate = n / ms
            single = single or rate
            rates[(arch, name)] = rate
            print(f"{arch:<7}{name:<13}{ms * 1e3:>10.2f}{rate:>15.1f}{rate / single:>10.2f}")
    steps = PAPER_RUNS / len(TRAIN_SIZES) * EPOCHS * sum(-(-n // BATCH) for n in TRAIN_SIZES.values())
    best = max(rates[("mnist", k)] for k in ("single", *(f"group of {n}" for n in GROUP_SIZES)))
    print(f"\nwhole paper ≈ {steps / 1e6:.1f} M model-steps: {steps / rates[('mnist', 'single')] / 3600:,.0f} h "
          f"one run at a time, {steps / best / 3600:,.0f} h at the best rate above (MNIST-net rates; the "
          "119×119 and SVHN nets are larger, so this is a lower bound)")


if __name__ == "__main__":
    main()
