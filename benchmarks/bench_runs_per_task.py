"""What an array task's start costs: the same sweep as N tasks of 1 run and as 1 task of N runs, side by side.

    python benchmarks/bench_runs_per_task.py [--runs 4] [--epochs 1] [--repeats 1]

Needs a SLURM cluster (sbatch/sacct). Submits ``model=SGD dataset=digits train=demo`` at N lr multipliers
with ``hydra.launcher.runs_per_task`` = 1 and = N, one task at a time (``array_parallelism=1``), tracked in a
private SQLite file, and sums the tasks' ``ElapsedRaw`` from ``sacct``: the node time each layout is charged.
The two layouts alternate, so machine noise hits both alike. Prints seconds per run and the ratio.
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from asym.launcher import plan


def node_seconds(array: str, tasks: int) -> int:
    """Sum of the array's tasks' elapsed seconds, once all of them have ended."""
    while True:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,ElapsedRaw", "-j", array],
                             capture_output=True, text=True).stdout.split()
        rows = [r.split("|") for r in out if "[" not in r]  # "[…]": tasks not started yet (one array of one task is a plain job)
        if len(rows) == tasks and all(r[1] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED") for r in rows):
            assert {r[1] for r in rows} == {"COMPLETED"}, rows
            return sum(int(r[2]) for r in rows)
        time.sleep(2)


def sweep(work: Path, runs: int, epochs: int, k: int) -> int:
    mults = ",".join(str(10.0 ** -i) for i in range(runs))
    root = work / f"runs-k{k}-{time.time_ns()}"
    subprocess.run(["asym-train", "-m", "model=SGD", f"lr_mult={mults}", "dataset=digits", "train=demo",
                    f"train.epochs={epochs}", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                    "hydra.launcher.mem_gb=1", "hydra.launcher.array_parallelism=1",
                    f"hydra.launcher.runs_per_task={k}", f"tracking.uri=sqlite:///{work}/bench.db",
                    f"output_root={root}"], cwd=work, check=True, capture_output=True)
    jobs = plan.read(next(root.glob("logs/multirun-*")))["jobs"]
    return node_seconds(next(iter(jobs.values())).split("_")[0], len(set(jobs.values())))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    totals = {1: 0, a.runs: 0}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats):
            for k in (a.runs, 1):
                totals[k] += sweep(Path(tmp), a.runs, a.epochs, k)
    n = a.runs * a.repeats
    one, many = totals[1] / n, totals[a.runs] / n
    print(f"{a.runs} runs of {a.epochs} epoch(s), {a.repeats} repeat(s); node seconds per run from sacct ElapsedRaw")
    print(f"runs_per_task=1         {one:7.1f} s/run")
    print(f"runs_per_task={a.runs:<9} {many:7.1f} s/run")
    print(f"ratio (1 / {a.runs})         {one / many:7.2f}")


if __name__ == "__main__":
    main()
