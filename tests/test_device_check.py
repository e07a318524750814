"""Issue 13: ``benchmarks/device_check.py`` in its dry mode (what CI and a laptop without a GPU run)."""
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def test_device_check_dry_run_lists_the_plan_and_shows_every_cuda_test_skipping(tmp_path):
    """--dry-run exits 0, writes the JSON and Markdown summaries, lists each benchmark with --device cuda as
    planned, and (without a GPU) reports every CUDA test skipped with its reason, none passed silently."""
    res = subprocess.run([sys.executable, "benchmarks/device_check.py", "--dry-run", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads((tmp_path / "device_check.json").read_text())
    assert summary["mode"] == "dry-run"
    steps = {s["name"]: s for s in summary["steps"]}
    assert set(steps) == {"cuda-tests", "bench-group", "bench-compile"}
    for name in ("bench-group", "bench-compile"):
        assert steps[name]["status"] == "planned" and "--device cuda" in steps[name]["command_line"]
        assert f"would run ({steps[name]['timeout']} s limit): {steps[name]['command_line']}" in res.stdout
    tests = summary["cuda_tests"]
    if not torch.cuda.is_available():
        assert tests["passed"] == tests["failed"] == 0 and tests["skipped"] >= 5
        assert all("needs a CUDA device" in reason for reason in tests["skip_reasons"])
    md = (tmp_path / "device_check.md").read_text()
    assert md.startswith("# Device check (dry-run)") and "| bench-compile | planned |" in md
