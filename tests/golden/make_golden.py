"""Writes ``single_run.json``: per-epoch metrics of single runs, the reference the one engine must equal bitwise.

Recorded with the single-run trainer as it stood before the one-engine redesign (commit e1bf69d,
``asym.train.train_run``) and re-runnable against any later version (``train_run`` keeps its signature):

    python tests/golden/make_golden.py            # rewrites tests/golden/single_run.json

The numbers depend on the CPU's vector unit and the torch version (summation order), so the file
records both and the test compares bitwise only where they match.
"""
import json
import sys
import tempfile
from pathlib import Path

import torch

from asym import data
from asym.train import Protocol, RunSpec, train_run

PROTO = Protocol(epochs=3, lr_steps=[2], bn_batches=5, large_batch_after=1)
CASES = [("SGD", 100, "none", "standard"), ("uSF+BN+BM", 10, "none", "standard"),
         ("brSF+BN+BM", 10, "none", "standard"), ("NuSF", 10, "none", "standard"), ("RndF+BN", 10, "none", "standard"),
         ("BN+BM", 1, "none", "standard"), ("uSF+BM", 1, "none", "large_batch"), ("uSF+BN+BM", 10, "top", "standard")]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def fingerprint() -> dict:
    return {"torch": torch.__version__.split("+")[0], "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def record(dtype: str, model: str, mult: float, freeze: str, procedure: str, cache) -> list[dict]:
    torch.set_num_threads(1)
    before = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[dtype])
    try:
        ds = data.load("digits", cache=cache)
        if dtype == "float64":
            ds = data.TensorData(ds.name, ds.arch, ds.num_classes, ds.x_train.double(), ds.y_train,
                                 ds.x_test.double(), ds.y_test)
        with tempfile.TemporaryDirectory() as out:
            return train_run(RunSpec(model, "digits", mult, freeze, procedure), ds, out, PROTO)["epochs"]
    finally:
        torch.set_default_dtype(before)


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        cases = [{"dtype": dt, "model": m, "lr_mult": k, "freeze": f, "procedure": p,
                  "epochs": record(dt, m, k, f, p, cache)} for dt in DTYPES for m, k, f, p in CASES]
    out = Path(__file__).with_name("single_run.json")
    out.write_text(json.dumps({"machine": fingerprint(), "cases": cases}, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
