import contextlib
import fcntl
import importlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own dataset cache, so no test reads another's tensors."""
    monkeypatch.setenv("ASYM_CACHE", str(tmp_path / "cache"))
    yield


@pytest.fixture
def float64():
    """Exact comparisons need float64; restored afterwards so other tests see torch's default."""
    import torch
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_service(reason: str) -> None:
    """On a laptop a missing service skips the test; under CI it is a failure, never a skip."""
    if in_ci():
        pytest.fail(f"CI=true but {reason} (start it with .ci/services-up.sh)")
    pytest.skip(reason)


def require(module: str, extra: str):
    """``module`` imported, or — when a package of an extra is not installed (``pip install -e '.[test]'`` alone) —
    the test skips naming the extra; under CI, which installs every extra, it fails (``missing_service``)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        reason = f"{module} cannot be imported ({e}): it needs the [{extra}] extra, pip install -e '.[{extra}]'"
        if in_ci():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


# The suite runs in parallel (pytest-xdist, pyproject's addopts). Every test of these modules reads or submits to the
# one SLURM controller; a test class that restarts it with other settings (test_cluster.py's ``reconfigured``) must
# have it alone: the others share a lock file, the restarting class takes it exclusively.
SLURM_MODULES = {"test_cluster.py", "test_cluster_limits.py", "test_auth.py", "test_mlflow_view.py", "test_dry_run.py"}
SLURM_LOCK = Path(tempfile.gettempdir()) / f"asym-tests-slurm-{os.getuid()}.lock"


@contextlib.contextmanager
def slurm_lock(exclusive: bool):
    """Hold the SLURM controller shared (tests that use it as configured) or alone (tests that restart it)."""
    with open(SLURM_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _shared_slurm(request):
    """A test of a SLURM module holds the controller shared — unless its class restarts it and holds it alone."""
    if request.path.name not in SLURM_MODULES or getattr(request.cls, "RESTARTS_SLURM", False):
        yield
        return
    with slurm_lock(exclusive=False):
        yield


@pytest.fixture(scope="session")
def slurm() -> None:
    """A real SLURM cluster: sinfo answers and a node is up."""
    if shutil.which("sinfo") is None:
        missing_service("SLURM is not installed")
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.strip():
        missing_service(f"no SLURM controller answers ({res.stderr.strip()[:100]})")


def server_up(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server() -> str:
    """The URI of a real MLflow server (PostgreSQL-backed in CI): $ASYM_TEST_MLFLOW_URI."""
    uri = os.environ.get("ASYM_TEST_MLFLOW_URI")
    if not uri:
        missing_service("ASYM_TEST_MLFLOW_URI is not set")
    if not server_up(uri):
        missing_service(f"no MLflow server answers at {uri}")
    return uri


@pytest.fixture(scope="session")
def test_output() -> Path:
    """Files a person may want to look at after the run (screenshots): kept, unlike tmp_path."""
    out = Path(os.environ.get("ASYM_TEST_OUTPUT", Path(__file__).resolve().parent.parent / "test-output"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="session")
def mlflow_users(mlflow_server) -> dict:
    """The basic-auth users .ci/services-up.sh created: {'writer': (name, password), 'reader': (...)}.

    The writer is also what the environment carries (MLFLOW_TRACKING_USERNAME/PASSWORD), so every test
    that does not say otherwise writes through it."""
    auth = os.environ.get("ASYM_TEST_MLFLOW_AUTH")
    if not auth or not Path(auth, "asym-reader.password").exists():
        missing_service("ASYM_TEST_MLFLOW_AUTH (the MLflow server's basic-auth users) is not set")
    users = {role: (f"asym-{role}", Path(auth, f"asym-{role}.password").read_text().strip())
             for role in ("writer", "reader")}
    if os.environ.get("MLFLOW_TRACKING_USERNAME") != users["writer"][0]:
        missing_service("the environment does not carry the writer's credentials (source $ASYM_CI_STATE/env.sh)")
    return users


def env_with_credentials(credentials: "tuple[str | None, str | None] | None", home: Path) -> dict:
    """os.environ with these MLflow credentials only (None: none at all), and a HOME whose
    ~/.mlflow/credentials is not the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["HOME"] = str(home)
    if credentials:
        user, password = credentials
        if user is not None:
            env["MLFLOW_TRACKING_USERNAME"] = user
        if password is not None:
            env["MLFLOW_TRACKING_PASSWORD"] = password
    return env


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.returncode, self.stdout, self.stderr = code, out, err

    def error_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


@pytest.fixture
def asym_train(monkeypatch, capsys, tmp_path):
    """``asym-train ARGS`` in this process (its console-script function, ``asym.cli.train``, under a patched
    ``sys.argv``), run in ``tmp_path``: returns its exit code, stdout and stderr. Hydra's global state and the
    logging handlers it installs are reset afterwards. The fast way to test what a command line does."""
    import logging
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from asym import cli

    def run(*args, cwd=None) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["asym-train", *map(str, args)])
        monkeypatch.chdir(cwd or tmp_path)
        capsys.readouterr()
        handlers, level = logging.root.handlers[:], logging.root.level
        code = 0
        try:
            cli.train()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            GlobalHydra.instance().clear()
            logging.root.handlers[:] = handlers
            logging.root.setLevel(level)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)
    return run


def assert_one_error_line(res: CliResult, message: str, where: Path, keep: tuple = ()) -> None:
    """The standard for bad input: exit code 2, one ``error:`` line that says ``message``, and nothing written
    under ``where`` but what the test put there (``keep``): no run directory, no Hydra ``logs/<time>`` directory,
    no MLflow store."""
    lines = res.error_lines()
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert sorted(p.name for p in where.iterdir() if p.name not in keep) == [], "bad input wrote something"


def tiny_npz(path, seed=0):
    """A small real .npz dataset (x_train y_train x_test y_test) of three separable classes: 120 training rows,
    more than the protocol's batch of 100 (``check_batch_sizes`` refuses a batch larger than the split), 40 test."""
    import numpy as np
    rng = np.random.default_rng(seed)
    y = np.arange(160) % 3
    x = rng.normal(size=(160, 12)).astype("float32") + 3 * np.eye(3, 12, dtype="float32")[y]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    return path
