"""The README is a newcomer's contract: every command of its "Set up" and "Look at the results" sections runs as
written, in a fresh directory, against the store the demo sweep leaves there; `.ci/run` runs the README's set-up
commands as written, then the slow tier.

The ``pip install -e …`` before ``&&`` is not run here: CI's fresh install (`.ci/run` installs the project from
its own files) covers it; everything after ``&&`` runs as written, through bash."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FAST_TIER = ' -m "not slow"'   # the README's test command runs the fast tier; CI drops this to run everything
# the demo (a module fixture) runs once: every test of this file on one xdist worker
pytestmark = pytest.mark.xdist_group("readme-demo")


def section(title: str) -> str:
    """The text of the README's ``## title`` section, up to the next ``## `` heading."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert m, f"README.md has no section '## {title}'"
    return m.group(1)


def commands(title: str) -> list[str]:
    """The commands of a section's fenced bash blocks: one per line, backslash continuations joined."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", section(title), re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(line.strip())
    return out


SETUP, RESULTS = commands("Set up"), commands("Look at the results")


def after_install(command: str) -> str:
    """``pip install -e … && REST`` → ``REST`` (the install: see the module docstring)."""
    install, sep, rest = command.partition(" && ")
    assert sep and install.startswith("pip install -e "), f"a set-up command installs first: {command!r}"
    return rest


def the(commands_: list[str], word: str) -> str:
    found = [c for c in commands_ if word in c]
    assert len(found) == 1, f"expected one README command with {word!r}, got {found}"
    return found[0]


def newcomer_env(home: Path) -> dict:
    """A shell like a newcomer's: this interpreter's console scripts first on PATH, no MLflow server configured,
    a dataset cache of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["ASYM_CACHE"] = str(home / "cache")
    return env


def bash(command: str, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_readme_sections_have_the_commands():
    assert [c.split(" && ")[1].split()[0] for c in SETUP] == ["asym-train", "pytest"]
    assert {c.split()[0] for c in RESULTS} == {"asym-tables", "asym-report", "mlflow"}


def test_ci_runs_the_readme_set_up_as_written_then_the_slow_tier():
    """.ci/run takes the README's set-up commands from the README itself (the same lines as ``SETUP``), runs them as
    written, and then what the test command's fast tier leaves out: every test once."""
    readme_cmd = the(SETUP, "pytest")
    assert readme_cmd.endswith(FAST_TIER), "the README's test command is the fast tier"
    ci = (REPO / ".ci" / "run").read_text()
    extract = re.search(r"<<'EOF'\n(.*?)^EOF$", ci, re.S | re.M)
    assert extract, ".ci/run reads the README's set-up commands with its inline script"
    res = subprocess.run([sys.executable, "-c", extract.group(1), str(REPO / "README.md")], capture_output=True,
                         text=True)
    assert res.returncode == 0 and res.stdout.splitlines() == SETUP, res.stdout + res.stderr
    lines = [l.strip() for l in ci.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert lines[-3:] == ['bash -e "$FRESH/setup.sh" 2>&1 | tee "$FRESH/setup.log"',
                          'export ASYM_README_SETUP_RAN="$CLONE" ASYM_README_SETUP_LOG="$FRESH/setup.log"',
                          'if grep -q "not slow" "$FRESH/setup.sh"; then pytest -m slow; fi']
    assert "set -euo pipefail" in ci, "a failing set-up command fails CI through the tee"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    """The README's demo command, once, in an empty directory: its store is what the results commands read.
    Under ``.ci/run``, which has just run the README's set-up commands as written (the demo included) on a fresh
    clone, that clone and their output are used instead of running the demo a second time
    (``ASYM_README_SETUP_RAN``, ``ASYM_README_SETUP_LOG``); ``set -e`` there already failed CI if it failed."""
    ran, log = os.environ.get("ASYM_README_SETUP_RAN"), os.environ.get("ASYM_README_SETUP_LOG")
    if ran and log:
        home = Path(ran)
        output = Path(log).read_text(errors="replace")
        return home, newcomer_env(home), subprocess.CompletedProcess(the(SETUP, "asym-train"), 0, output, "")
    home = tmp_path_factory.mktemp("newcomer")
    env = newcomer_env(home)
    res = bash(after_install(the(SETUP, "asym-train")), home, env, timeout=3600)
    return home, env, res


@pytest.mark.slow
def test_demo_command_as_written(demo):
    home, _, res = demo
    assert res.returncode == 0, res.stderr[-3000:]
    assert (home / "mlflow.db").is_file(), "the demo's results go to MLflow in ./mlflow.db"
    assert "Table 2" in res.stdout + res.stderr, "Table 2 is printed at the end"
    from mlflow.tracking import MlflowClient

    from asym.tracking import DEFAULT_EXPERIMENT
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    trained = [r for r in runs if r.data.tags.get("asym.kind") != "sweep"]  # and the sweep's own run, their parent
    assert len(trained) == 36 and {r.info.status for r in runs} == {"FINISHED"}, "the demo is 36 finished runs"
    assert len(runs) == 37 and {r.data.tags.get("mlflow.parentRunId") for r in trained} == \
        {r.info.run_id for r in runs if r not in trained}


@pytest.mark.slow
def test_test_command_as_written(tmp_path):
    """The fast tier's command, as written plus ``--collect-only``: it parses, selects, and leaves the slow tier out
    (running the suite from inside the suite would run it twice; CI runs it in full)."""
    cmd = after_install(the(SETUP, "pytest"))
    env = newcomer_env(tmp_path)
    fast = bash(cmd + " --collect-only -q", REPO, env, timeout=600)
    everything = bash(cmd[: -len(FAST_TIER)] + " --collect-only -q", REPO, env, timeout=600)
    assert fast.returncode == 0 and everything.returncode == 0, fast.stdout[-2000:] + everything.stdout[-2000:]
    count = lambda out: len([l for l in out.splitlines() if "::" in l])
    assert 0 < count(fast.stdout) < count(everything.stdout)
    assert "tests/test_readme.py::test_demo_command_as_written" not in fast.stdout


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


@pytest.mark.slow
@pytest.mark.parametrize("command", RESULTS, ids=lambda c: " ".join(c.partition("#")[0].split()[:4]))
def test_results_command_as_written(demo, command):
    home, env, res = demo
    assert res.returncode == 0, "the demo failed: nothing to look at"
    if command.startswith("mlflow ui"):
        return ui_serves_the_demo(home, env, command)
    out = bash(command, home, env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    shown = out.stdout
    written = re.search(r"--out (\S+)", command)
    if written:
        path = home / written.group(1)
        assert path.is_file() and path.stat().st_size > 0, f"{command!r} wrote no {path.name}"
        shown += path.read_text()
    assert "Digits" in shown, f"{command!r} does not show the demo's Digits row"


def ui_serves_the_demo(home: Path, env: dict, command: str) -> None:
    """Start the UI as written, wait for the address the README says to open, check it serves the demo's store,
    stop it (its whole process group: the server's workers too)."""
    url = re.search(r"http://[\d.]+:\d+", command.partition("#")[2])
    assert url, f"the README says which address to open: {command!r}"
    url = url.group(0)
    port = int(url.rsplit(":", 1)[1])
    if port_open(port):
        pytest.skip(f"something already listens on port {port}: the README's `mlflow ui` cannot start here")
    log = open(home / "mlflow-ui.log", "w")
    proc = subprocess.Popen(["bash", "-c", command.partition("#")[0]], cwd=home, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                if get(url)[0] == 200:
                    break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, "mlflow ui exited: " + (home / "mlflow-ui.log").read_text()[-2000:]
        status, page = get(url)
        assert status == 200 and "MLflow" in page
        from asym.tracking import DEFAULT_EXPERIMENT
        status, body = get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={DEFAULT_EXPERIMENT}")
        assert status == 200 and json.loads(body)["experiment"]["name"] == DEFAULT_EXPERIMENT
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group ``proc`` leads (start_new_session); after 30 s, or once it has exited, SIGKILL
    what is left of the group (the server's workers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
