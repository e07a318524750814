"""The one engine: a job of N ≥ 1 runs. N = 1 reproduces the single-run trainer bit for bit."""
import json
from pathlib import Path

import pytest
import torch


GOLDEN = Path(__file__).parent / "golden"


def _golden() -> dict:
    return json.loads((GOLDEN / "single_run.json").read_text())


def _cases():
    return [pytest.param(c, id=f"{c['dtype']}-{c['model']}-{c['freeze']}-{c['procedure']}") for c in _golden()["cases"]]


@pytest.mark.slow
@pytest.mark.parametrize("case", _cases())
def test_a_group_of_one_reproduces_the_single_run_trainer_bitwise(case, tmp_path):
    """Per-epoch metrics equal, bit for bit, those the single-run trainer of commit e1bf69d recorded
    (tests/golden/make_golden.py), in float32 and float64, for sign-free and Batch Manhattan models."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    recorded = _golden()["machine"]
    if make.fingerprint() != recorded:
        pytest.skip(f"golden recorded on {recorded}, this machine is {make.fingerprint()}: summation order differs")
    threads = torch.get_num_threads()
    try:
        epochs = make.record(case["dtype"], case["model"], case["lr_mult"], case["freeze"], case["procedure"],
                             tmp_path / "cache")
    finally:
        torch.set_num_threads(threads)
    assert epochs == case["epochs"]
