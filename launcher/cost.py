"""What a sweep costs: training steps per run and CPU-/GPU-hours from measured per-step costs.

The per-step costs are ``step_costs.csv`` next to this module, written by ``benchmarks/bench_steps.py``:
seconds per training step at batch 100 (forward, backward, update) and per 100 samples of evaluation
forward, for each Table 1 network and a few model kinds, on the machine it ran on (its ``device`` column:
``cpu`` rows measured with one thread; ``cuda`` rows only where a GPU measured them).

A run of ``E`` epochs on ``n`` training images costs, in units of one batch-100 step:
``Σ_epochs ceil(n / b_e) · b_e / 100`` training steps (``b_e`` the epoch's batch: 100, or 500 after epoch 3
for uSF+BM's large-batch procedure, protocol decision 8 (docs/protocol.md)), plus evaluation forwards of the
test split after every epoch and before the first (decision 7: ``(E + 1) · n_test`` samples, and the holdout
under ``select_on=val``) and, for BN models, ``bn_batches`` calibration batches per epoch (decision 4).
The estimate is an upper bound for ``freeze`` runs (clamped layers skip their weight gradients) and ignores
``engine=group`` (on CPUs a group member costs about what a single run does, BENCHMARKS.md).
"""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from typing import Iterable

from asym.data import info
from asym.labels import parse_model
from asym.study import ASSUMED_SIZES, split_sizes

STEP_COSTS_FILE = "step_costs.csv"
REFERENCE_BATCH = 100   # the per-step costs are measured at the paper's batch (decision 6)

# the model kinds bench_steps.py measures: what a step costs depends on BN (extra layers, calibration) and on
# feedback drawn afresh every batch (brSF, brSF-p: a U[0,1] draw of every weight per step); not on the rest
KINDS = ("SGD", "uSF+BN+BM", "brSF+BN+BM")


def cost_kind(model: str) -> str:
    """The measured model kind whose step costs what ``model``'s does (one of ``KINDS``)."""
    spec = parse_model(model)
    if not spec.batchnorm:
        return "SGD"
    return "brSF+BN+BM" if spec.feedback == "brsf" else "uSF+BN+BM"


@dataclass(frozen=True)
class StepCost:
    train_step_s: float      # one training step at batch 100
    eval_s_per_100: float    # forward of 100 samples in evaluation (batches of 1000, no gradients)


@dataclass(frozen=True)
class StepCosts:
    """The cost table: (device, arch, kind) → StepCost, and where each device's figures were measured."""

    costs: dict[tuple[str, str, str], StepCost]
    machines: dict[str, str]

    def get(self, device: str, arch: str, kind: str) -> StepCost | None:
        return self.costs.get((device, arch, kind))


def read_costs(text: str | None = None) -> StepCosts:
    """The committed cost table (or ``text`` in its CSV format)."""
    if text is None:
        text = (resources.files("asym.launcher") / STEP_COSTS_FILE).read_text()
    costs, machines = {}, {}
    for row in csv.DictReader(text.splitlines()):
        costs[(row["device"], row["arch"], row["kind"])] = StepCost(float(row["train_step_s"]),
                                                                     float(row["eval_s_per_100"]))
        machines[row["device"]] = row["machine"]
    return StepCosts(costs, machines)


@dataclass(frozen=True)
class RunWork:
    """One run's work in batch-100 units: training steps, and forward-only samples ÷ 100."""

    train_steps: int         # optimizer steps (any batch size)
    step_units: float        # training work in batch-100 steps
    forward_units: float     # evaluation + BN calibration forwards, in units of 100 samples


def run_work(run: dict, protocol: dict, sizes: tuple[int, int]) -> RunWork:
    """The work of one run (``run``: a plan entry's run fields; ``protocol``: ``Protocol`` as a dict)."""
    n_train, n_test = sizes
    n_hold = 0
    if protocol.get("select_on", "test") == "val":
        n_hold = round(protocol.get("val_fraction", 0.1) * n_train)
        n_train -= n_hold
    epochs, steps, units = int(protocol["epochs"]), 0, 0.0
    for epoch in range(1, epochs + 1):
        large = run.get("procedure") == "large_batch" and epoch > protocol["large_batch_after"]
        b = protocol["large_batch_size"] if large else protocol["batch_size"]
        n = math.ceil(n_train / b)
        steps += n
        units += n * b / REFERENCE_BATCH
    forward = (epochs + 1) * (n_test + n_hold) / REFERENCE_BATCH
    if parse_model(run["model"]).batchnorm:
        forward += epochs * protocol["bn_batches"] * protocol["batch_size"] / REFERENCE_BATCH
    return RunWork(steps, units, forward)


@dataclass
class Estimate:
    """A sweep's cost: per arch, runs and training steps, and hours per device (None: not measured)."""

    runs: dict[str, int]
    steps: dict[str, int]
    hours: dict[str, dict[str, float | None]]      # device → arch → hours
    unsized: list[str]                              # datasets whose size is unknown (user data)
    assumed: list[str]                              # notes on assumed sizes

    def total_hours(self, device: str) -> float | None:
        per = self.hours.get(device, {})
        return None if not per or any(h is None for h in per.values()) else sum(per.values())


def estimate(entries: Iterable[dict], protocol: dict, costs: StepCosts, devices=("cpu", "cuda"),
             protocols: dict | None = None) -> Estimate:
    """Hours to train ``entries`` (plan entries) on each device of the cost table, each under its own protocol
    (``protocols``: protocol hash → protocol, as ``plan.plan`` collects them) or else under ``protocol``."""
    runs, steps = defaultdict(int), defaultdict(int)
    hours = {d: defaultdict(float) for d in devices}
    unsized, assumed = set(), set()
    for e in entries:
        run = e["run"]
        sizes = split_sizes(run["dataset"])
        if sizes is None:
            unsized.add(run["dataset"])
            continue
        if run["dataset"] in ASSUMED_SIZES:
            n_train, n_test = ASSUMED_SIZES[run["dataset"]]
            assumed.add(f"the paper does not state {info(run['dataset']).title}'s split sizes; assumed {n_train:,} "
                        f"train / {n_test:,} test images")
        arch = info(run["dataset"]).arch
        work = run_work(run, (protocols or {}).get(e.get("protocol_hash"), protocol), sizes)
        runs[arch] += 1
        steps[arch] += work.train_steps
        for d in devices:
            c = costs.get(d, arch, cost_kind(run["model"]))
            if c is None or hours[d][arch] is None:
                hours[d][arch] = None
            else:
                hours[d][arch] += (work.step_units * c.train_step_s + work.forward_units * c.eval_s_per_100) / 3600
    return Estimate(dict(runs), dict(steps), {d: dict(h) for d, h in hours.items()}, sorted(unsized), sorted(assumed))
