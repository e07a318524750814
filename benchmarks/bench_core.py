"""Training-step speed of the asymmetric layers against plain PyTorch backprop, side by side.

    python benchmarks/bench_core.py [--steps 30] [--repeats 5] [--device cpu|cuda] [--threads N]

One process times forward + backward + optimizer step of the MNIST net (Table 1) at batch 100 for
plain torch (nn.Conv2d/nn.Linear + torch.optim.SGD) and for every feedback mode, with and without
BN+BM. Timings are interleaved round-robin and the median per step is kept, so machine noise hits all
variants alike. If BioTorch is importable its usf/brsf/frsf layers are timed on the same net.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from asym import build_network, parse_model
from asym.optim import BatchManhattan

BATCH = 100
MODE_LABELS = {"bp": "SGD", "usf": "uSF", "nusf": "NuSF", "brsf": "brSF", "frsf": "frSF",
               "brsf-p50": "brSF-p50", "frsf-p50": "frSF-p50", "rndf": "RndF"}


def plain_mnist_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))


def ours(label: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    spec = parse_model(label)
    net = build_network("mnist", 10, spec)
    return net, BatchManhattan(net.parameters(), lr=1e-4, setting=spec.setting)


def biotorch_variants() -> dict:
    try:
        from biotorch.module.biomodule import BioModule  # noqa: F401
    except Exception:
        return {}
    variants = {}
    for mode in ("usf", "brsf", "frsf"):
        def make(mode=mode):
            from biotorch.module.biomodule import BioModule
            net = BioModule(plain_mnist_net(), mode=mode)
            return net, torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
        variants[f"biotorch {mode}"] = make
    return variants


def step_fn(net, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(BATCH, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (BATCH,), device=dev)

    def plain():
        net = plain_mnist_net()
        return net, torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4, foreach=True)

    variants = {"plain torch": plain}
    for mode, label in MODE_LABELS.items():
        variants[mode] = lambda label=label: ours(label)
        variants[f"{mode} +BN+BM"] = lambda label=label: ours("BN+BM" if label == "SGD" else label + "+BN+BM")
    variants.update(biotorch_variants())

    steps = {}
    for name, make in variants.items():
        net, opt = make()
        net.to(dev).train()
        steps[name] = step_fn(net, opt, x, y)
        for _ in range(3):  # warm-up
            steps[name]()
    times = {name: [] for name in steps}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(args.repeats):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            times[name].append((time.perf_counter() - t0) / args.steps)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["plain torch"]
    print(f"MNIST net, batch {BATCH}, device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"median of {args.repeats}×{args.steps} steps")
    print(f"{'variant':<22}{'ms/step':>10}{'÷ plain':>10}")
    for name, t in med.items():
        print(f"{name:<22}{t * 1e3:>10.2f}{t / base:>10.3f}")
    for mode in ("usf", "brsf", "frsf"):
        if f"biotorch {mode}" in med:
            print(f"ours {mode} ÷ biotorch {mode}: {med[mode] / med[f'biotorch {mode}']:.3f}")


if __name__ == "__main__":
    main()
