"""One command for the GPU path: the CUDA-marked tests and the GPU benchmarks, summarised in one JSON + Markdown.

    python benchmarks/device_check.py [--out device-check] [--dry-run] [--device cuda]

On a CUDA machine (about 5 minutes on one GPU; no network, no data beyond the bundled digits) it runs, each
with its own time limit:

1. ``pytest -m cuda tests/test_cuda.py tests/test_resume_devices.py`` — resume after SIGKILL on CUDA, a
   checkpoint written on one device type resumed on the other, autocast fp16/bf16, compiled == eager, run
   groups == single runs;
2. ``benchmarks/bench_group.py --device cuda`` — model-steps/s of a plain loop, one run, groups of 5 and 35;
3. ``benchmarks/bench_compile.py --device cuda`` — eager against ``train.compile=true`` on the Table 1 nets.

With ``--dry-run``, or automatically when ``torch.cuda.is_available()`` is False, it lists what it would run
and writes the same summary with every benchmark ``planned``. Without CUDA it also runs the CUDA tests, which
must all skip, each with its reason (a silent pass would hide the GPU path); with CUDA and ``--dry-run`` the
tests are ``planned`` too. Writes ``OUT/device_check.json``, ``OUT/device_check.md`` and each step's output
(``OUT/<step>.txt``). Exit code: 0 when every step passed (or, dry, was planned and the tests skipped), 1 else.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CUDA_TEST_FILES = ("tests/test_cuda.py", "tests/test_resume_devices.py")  # the tests marked ``cuda`` live here


def steps(device: str, out: Path) -> list[dict]:
    """The plan: name, command (run from the repository root) and time limit in seconds."""
    py = sys.executable
    return [
        {"name": "cuda-tests", "timeout": 300,
         "command": [py, "-m", "pytest", "-m", "cuda", *CUDA_TEST_FILES, "-q", "-rs", "-p", "no:cacheprovider",
                     f"--junitxml={out / 'cuda-tests.xml'}"]},
        {"name": "bench-group", "timeout": 90,
         "command": [py, "benchmarks/bench_group.py", "--device", device, "--steps", "10", "--repeats", "3"]},
        {"name": "bench-compile", "timeout": 150,
         "command": [py, "benchmarks/bench_compile.py", "--device", device, "--steps", "10", "--repeats", "3",
                     f"--json={out / 'bench-compile.json'}"]},
    ]


def junit(path: Path) -> dict:
    """Counts and skip reasons of a pytest JUnit XML report."""
    if not path.exists():
        return {}
    cases = ET.parse(path).getroot().iter("testcase")
    out = {"passed": 0, "failed": 0, "skipped": 0, "skip_reasons": {}}
    for case in cases:
        skip = case.find("skipped")
        if skip is not None:
            out["skipped"] += 1
            reason = skip.get("message", "")
            out["skip_reasons"][reason] = out["skip_reasons"].get(reason, 0) + 1
        elif case.find("failure") is not None or case.find("error") is not None:
            out["failed"] += 1
        else:
            out["passed"] += 1
    return out


def run_step(step: dict, out: Path) -> dict:
    t = time.time()
    try:
        res = subprocess.run(step["command"], cwd=ROOT, capture_output=True, text=True, timeout=step["timeout"])
        rc, text = res.returncode, res.stdout + res.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, f"{e.stdout or ''}{e.stderr or ''}\ntimed out after {step['timeout']} s"
        text = text if isinstance(text, str) else text.decode(errors="replace")
    (out / f"{step['name']}.txt").write_text(text)
    return {"status": "passed" if rc == 0 else "failed", "rc": rc, "seconds": round(time.time() - t, 1),
            "output_tail": text[-2000:]}


def markdown(summary: dict) -> str:
    lines = [f"# Device check ({summary['mode']})", "",
             f"- device: {summary['device']}", f"- torch {summary['torch']}, Python {summary['python']}",
             f"- finished: {summary['finished']}", "", "| step | status | seconds | command |", "|---|---|---:|---|"]
    for s in summary["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s.get('seconds', '')} | `{' '.join(s['command'][1:])}` |")
    tests = summary.get("cuda_tests") or {}
    if tests:
        lines += ["", f"CUDA tests: {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped."]
        lines += [f"- skipped ×{n}: {reason}" for reason, n in tests["skip_reasons"].items()]
    for s in summary["steps"]:
        if s["name"].startswith("bench") and s.get("output_tail"):
            lines += ["", f"## {s['name']}", "", "```", s["output_tail"].strip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="device-check", help="directory for the JSON, the Markdown and each step's output")
    ap.add_argument("--dry-run", action="store_true", help="list the plan, run nothing on a GPU (without CUDA: the CUDA tests run and must skip)")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    dry = a.dry_run or not cuda
    plan = steps(a.device, out)
    device = torch.cuda.get_device_name() if cuda else f"no CUDA device ({platform.processor() or platform.machine()})"
    mode = "dry-run" if dry else "run"
    print(f"device check ({mode}) on {device}; writing to {out}", flush=True)
    if dry and not a.dry_run:
        print("no CUDA device: dry run (the CUDA tests skip with their reason; the benchmarks are listed)")
    for s in plan:
        s["command_line"] = " ".join(s["command"])
        if dry and (cuda or s["name"] != "cuda-tests"):  # without CUDA the tests run: they must skip
            s["status"] = "planned"
            print(f"  would run ({s['timeout']} s limit): {s['command_line']}", flush=True)
            continue
        print(f"  running ({s['timeout']} s limit): {s['command_line']}", flush=True)
        s.update(run_step(s, out))
        print(f"    exit code {s['rc']} after {s['seconds']} s", flush=True)
    tests = junit(out / "cuda-tests.xml")
    summary = {"mode": mode, "device": device, "torch": torch.__version__, "python": platform.python_version(),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": plan, "cuda_tests": tests}
    if dry and cuda:  # a plan only
        ok = True
    elif dry:  # without a device every CUDA test must skip, with its reason: a silent pass would hide the GPU path
        ok = tests.get("skipped", 0) > 0 and tests.get("passed", 1) == 0 and tests.get("failed", 1) == 0 \
            and all(reason for reason in tests.get("skip_reasons", {}))
        plan[0]["status"] = "skipped" if ok else "failed"
    else:
        ok = all(s["status"] == "passed" for s in plan)
    (out / "device_check.json").write_text(json.dumps(summary, indent=1))
    (out / "device_check.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
