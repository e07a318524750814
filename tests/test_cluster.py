"""The cluster path against real services: SLURM (slurmctld/slurmd/slurmdbd), a PostgreSQL-backed MLflow server.

Skipped with a reason on a machine without them; under CI (CI=true) a missing service fails the test.
Every test uses its own MLflow experiment, so tests never read each other's runs, and looks only at the SLURM
jobs of its own submission (by job id, or by a job name of its own), never at the whole queue or accounting.
Tests that need other limits (``MaxArraySize=5``, a partition ``MaxTime``, accounting off) rewrite slurm.conf,
restart slurmctld and wait for it, and put the original back — restarting again — even when they fail.
"""
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from asym import tracking
from asym.launcher import cluster, plan, slurm as slurm_launcher, status
from conftest import assert_one_error_line, in_ci, missing_service, server_up, slurm_lock, wait_until

pytestmark = pytest.mark.slow
EPOCHS = 12
RUN = ["model=brSF+BN+BM", "dataset=digits", "lr_mult=10", "train=demo", f"train.epochs={EPOCHS}"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def asym(cwd, *args, timeout=300, check=False):
    res = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, f"{args[0]} exited {res.returncode}:\n{res.stderr[-3000:]}"
    return res


def experiment() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def tracking_args(uri, exp, root):
    return [f"tracking.uri={uri}", f"tracking.experiment={exp}", f"output_root={root}"]


def sweep_dir(root: Path) -> Path:
    return next(root.glob("logs/multirun-*"))


def finished_runs(uri, exp):
    df = tracking.runs_frame(uri, exp)
    if df is None or df.empty:  # the sweep creates the experiment before any run exists
        return []
    return df[df["tags.status"].isin(tracking.DONE)]


def reference(tmp_path, *extra) -> dict:
    """The same run, uninterrupted, in-process (no scheduler), tracked in a private SQLite file."""
    root = tmp_path / "reference"
    asym(tmp_path, "asym-train", *RUN, *extra, f"tracking.uri=sqlite:///{tmp_path}/ref.db", f"output_root={root}",
         check=True)
    return json.loads(next(root.rglob("result.json")).read_text())


def job_log_shows(root: Path, text: str):
    logs = list(root.glob("logs/multirun-*/.submitit/*/*_log.out"))
    return any(text in p.read_text(errors="replace") for p in logs)


def checkpoint_epoch(root: Path) -> int:
    ckpt = next(root.rglob("checkpoint.pt"), None)
    return torch.load(ckpt, weights_only=True)["epoch"] if ckpt else -1


def job_name() -> str:
    """A SLURM job name of this test's own (``hydra.launcher.name``): its jobs are found by it."""
    return f"asym-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def name():
    """A job name of this test's own; whatever still runs under it when the test ends is cancelled."""
    n = job_name()
    yield n
    subprocess.run(["scancel", "-n", n], capture_output=True)


def jobs_named(name: str) -> set[str]:
    """Every job with this name the controller holds (``squeue -t all``) or accounting remembers."""
    queue = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-n", name, "-o", "%i"], capture_output=True, text=True)
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-S", "now-1days", "--name", name, "-o", "JobID"],
                          capture_output=True, text=True)
    return set(queue.stdout.split()) | (set(acct.stdout.split()) if acct.returncode == 0 else set())


def job_states(job_ids) -> dict[str, list[str]]:
    """job id → every state accounting (or, without it, the queue) has for it: a job that ran twice shows twice."""
    ids = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-D", "-o", "JobID,State", "-j", ids], capture_output=True,
                          text=True)
    out: dict[str, list[str]] = {}
    for line in acct.stdout.splitlines():
        job, _, state = line.partition("|")
        if job in job_ids:
            out.setdefault(job, []).append(state.split()[0])
    return out


# -------------------------------------------------------------------- reconfiguring the real controller

SLURM_CONF = Path("/etc/slurm/slurm.conf")
DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def edited(conf: str, settings: dict[str, str], partition: dict[str, str]) -> str:
    """slurm.conf with ``settings`` (global keys) set and every PartitionName line given ``partition``'s keys."""
    out, seen = [], set()
    for line in conf.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in settings:
            out.append(f"{key}={settings[key]}")
            seen.add(key)
        elif key == "PartitionName" and partition:
            tokens = dict(t.split("=", 1) for t in line.split())
            out.append(" ".join(f"{k}={v}" for k, v in {**tokens, **partition}.items()))
        else:
            out.append(line)
    first_node = next(i for i, line in enumerate(out) if line.startswith("NodeName="))
    out[first_node:first_node] = [f"{k}={v}" for k, v in settings.items() if k not in seen]
    return "\n".join(out) + "\n"


def controller_pid() -> int | None:
    try:
        pid = int(Path("/run/slurm/slurmctld.pid").read_text().strip())
        status_line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("State:"))
    except (OSError, ValueError, StopIteration):
        return None
    return None if "Z" in status_line.split()[1] else pid  # a zombie (reaped late) is gone


def node_ready() -> bool:
    """The controller answers and the node responds (idle, or running jobs): no '*', not down or drained."""
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.split()
    return "is UP" in ping.stdout and bool(states) and all(
        s.rstrip("*") in ("idle", "mixed", "allocated") and not s.endswith("*") for s in states)


def restart_controller() -> None:
    """Stop slurmctld (slurmd keeps running its jobs), start it on the current slurm.conf, have slurmd reread it,
    and wait until ``scontrol ping`` says UP and ``sinfo`` shows the node responding."""
    pid = controller_pid()
    if pid is not None:
        subprocess.run(["scontrol", "shutdown", "slurmctld"], capture_output=True, timeout=60)
        wait_until(lambda: controller_pid() != pid, 60, "slurmctld to stop")
    subprocess.run(["/usr/sbin/slurmctld"], check=True, env=DAEMON_ENV, timeout=60)
    wait_until(lambda: "is UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout, 60,
               "scontrol ping: slurmctld UP")
    subprocess.run(["scontrol", "reconfigure"], capture_output=True, timeout=60)
    wait_until(node_ready, 120, "sinfo: the node responding again")


@contextlib.contextmanager
def reconfigured(settings: dict[str, str], partition: dict[str, str] | None = None):
    """The real controller with these slurm.conf settings for the block; the original file and daemon after it,
    whatever the block did."""
    original = SLURM_CONF.read_text()
    try:
        SLURM_CONF.write_text(edited(original, settings, partition or {}))
        restart_controller()
        yield
    finally:
        SLURM_CONF.write_text(original)
        restart_controller()


def test_slurm_2x2_sweep_lands_in_postgres_mlflow(slurm, mlflow_server, tmp_path):
    exp, root = experiment(), tmp_path / "runs"
    res = asym(tmp_path, "asym-train", "-m", "model=SGD,BN", "lr_mult=10,1", "dataset=digits", "train=demo",
               "train.epochs=2", *SLURM, *tracking_args(mlflow_server, exp, root), check=True)
    assert "submitted 4 runs as SLURM array" in res.stderr + res.stdout  # returned without waiting
    wait_until(lambda: len(finished_runs(mlflow_server, exp)) == 4, 240, "4 finished runs in MLflow")
    df = finished_runs(mlflow_server, exp)
    assert set(df["status"]) == {"FINISHED"} and df["tags.config_hash"].nunique() == 4
    c = tracking.client(mlflow_server)
    for run_id in df["run_id"]:
        assert [m.step for m in c.get_metric_history(run_id, "val_error")] == [0, 1, 2]
    status = asym(tmp_path, "asym-status", str(root), check=True).stdout
    assert "4/4 done" in status
    states = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j",
                             plan.read(sweep_dir(root))["jobs"]["0"].split("_")[0]], capture_output=True, text=True)
    assert set(states.stdout.split()) == {"COMPLETED"}


@pytest.mark.parametrize("interrupt", ["usr2_preemption", "scontrol_requeue"])
def test_interrupted_slurm_run_resumes_identically(slurm, mlflow_server, tmp_path, interrupt):
    exp, root = experiment(), tmp_path / "runs"
    asym(tmp_path, "asym-train", "-m", *RUN, *SLURM, *tracking_args(mlflow_server, exp, root), check=True)
    job = plan.read(sweep_dir(root))["jobs"]["0"]
    wait_until(lambda: job_log_shows(root, "epoch 3:"), 180, "epoch 3 of the SLURM job")
    if interrupt == "usr2_preemption":  # what SLURM sends before preempting: submitit checkpoints and requeues
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
    else:  # restart from scratch, no checkpoint() call: the run's own checkpoint.pt must carry it
        subprocess.run(["scontrol", "requeue", job], check=True)
    wait_until(lambda: len(finished_runs(mlflow_server, exp)) == 1, 300, "the resumed run to finish")
    result = json.loads(next(root.rglob("result.json")).read_text())
    assert result["status"] == "finished"
    assert result["timings"]["resumed_from_epoch"] is not None and result["timings"]["resumed_from_epoch"] >= 3, \
        "the job was not interrupted mid-run"
    assert result["epochs"] == reference(tmp_path)["epochs"]
    df = tracking.runs_frame(mlflow_server, exp)
    assert len(df) == 1, "a resumed run must continue its MLflow run, not start another"
    steps = [m.step for m in tracking.client(mlflow_server).get_metric_history(df["run_id"][0], "val_error")]
    assert steps == list(range(EPOCHS + 1)), "every epoch logged exactly once across the interruption"


def test_sigkilled_local_worker_is_failed_then_resumes_identically(mlflow_server, tmp_path):
    exp, root = experiment(), tmp_path / "runs"
    cmd = ["asym-train", "-m", *RUN, "hydra/launcher=local", "hydra.launcher.workers=1",
           *tracking_args(mlflow_server, exp, root)]
    sweep = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: job_log_shows(root, "epoch 3:"), 180, "epoch 3 of the local worker")
    workers = subprocess.run(["pgrep", "-f", f"submitit.core._submit {root}"], capture_output=True, text=True)
    pids = [int(p) for p in workers.stdout.split()]
    assert len(pids) == 1, workers.stdout
    os.kill(pids[0], signal.SIGKILL)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode != 0 and "1 of 1 runs failed" in err
    df = tracking.runs_frame(mlflow_server, exp)
    assert list(df["status"]) == ["FAILED"] and list(df["tags.status"]) == ["failed"], "the killed run was lost"
    asym(tmp_path, *cmd, check=True)  # the same command again: resumes from the checkpoint
    result = json.loads(next(root.rglob("result.json")).read_text())
    assert result["timings"]["resumed_from_epoch"] >= 3
    assert result["epochs"] == reference(tmp_path)["epochs"]
    df = tracking.runs_frame(mlflow_server, exp)
    assert len(df) == 1 and list(df["status"]) == ["FINISHED"]


def test_16_concurrent_runs_write_every_metric(mlflow_server, tmp_path):
    exp, root = experiment(), tmp_path / "runs"
    seeds = ",".join(str(s) for s in range(16))
    asym(tmp_path, "asym-train", "-m", "model=uSF+BN+BM", "dataset=digits", "lr_mult=10", f"seed={seeds}",
         "train=demo", "train.epochs=2", "hydra/launcher=local", "hydra.launcher.workers=16",
         *tracking_args(mlflow_server, exp, root), timeout=600, check=True)
    df = finished_runs(mlflow_server, exp)
    assert len(df) == 16 and sorted(df["tags.seed"].astype(int)) == list(range(16))
    c = tracking.client(mlflow_server)
    for run_id in df["run_id"]:
        for metric, steps in (("val_error", [0, 1, 2]), ("lr", [0, 1, 2]), ("train_loss", [1, 2]),
                              ("train_error", [1, 2])):
            assert sorted(m.step for m in c.get_metric_history(run_id, metric)) == steps, (run_id, metric)
        assert {a.path for a in c.list_artifacts(run_id)} >= {"result.json", "config.yaml"}


def create_user(uri: str, admin_password: str, username: str, password: str) -> None:
    """Through MLflow's own AuthServiceClient, as the admin; the password goes by stdin, never in argv."""
    code = ("import sys; from mlflow.server import get_app_client\n"
            "get_app_client('basic-auth', tracking_uri=sys.argv[1]).create_user(sys.argv[2], sys.stdin.read())")
    env = {**os.environ, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": admin_password}
    subprocess.run([sys.executable, "-c", code, uri, username], input=password, env=env, text=True, check=True,
                   capture_output=True)


@pytest.fixture
def private_server(tmp_path, mlflow_users):
    """An MLflow server of this test's own (same PostgreSQL database, basic-auth like the shared one), which
    the test may stop and restart — with the same users, or with a fresh user store where the writer's
    password is a different one (``start(same_credentials=False)``)."""
    backend = os.environ.get("ASYM_TEST_MLFLOW_BACKEND")
    if not backend:
        missing_service("ASYM_TEST_MLFLOW_BACKEND (the PostgreSQL URI of the MLflow database) is not set")
    port = 5100 + os.getpid() % 700
    uri = f"http://127.0.0.1:{port}"
    user, password = mlflow_users["writer"]
    procs = []

    def start(same_credentials: bool = True):
        auth = tmp_path / ("auth" if same_credentials else f"auth-other-{len(procs)}")
        fresh = not auth.exists()
        auth.mkdir(mode=0o700, exist_ok=True)
        admin = secrets.token_urlsafe(16)
        (auth / "basic_auth.ini").write_text(
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{auth}/basic_auth.db\n"
            f"admin_username = admin\nadmin_password = {admin}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 300\n")  # as docs/cluster.md advises: one password check per 5 minutes
        if fresh:
            (auth / "admin").write_text(admin)  # the admin is created once, with the first password
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_AUTH_CONFIG_PATH": str(auth / "basic_auth.ini"),
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(16)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", backend,
             "--default-artifact-root", str(tmp_path / "art"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env))
        wait_until(lambda: server_up(uri), 120, f"MLflow server on {uri}")
        if fresh:
            create_user(uri, (auth / "admin").read_text(), user, password if same_credentials else "another-password")

    def stop():
        os.killpg(procs[-1].pid, signal.SIGKILL)
        procs[-1].wait()
    start()
    yield uri, start, stop
    if procs[-1].poll() is None:
        stop()


def test_tracking_server_down_mid_run_then_sync_uploads_once(private_server, tmp_path):
    uri, start, stop = private_server
    exp, root = experiment(), tmp_path / "runs"
    run = subprocess.Popen(["asym-train", *RUN, *tracking_args(uri, exp, root)], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: checkpoint_epoch(root) >= 2, 120, "epoch 2 of the run")
    stop()
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out[-3000:]  # the run succeeds without its tracking server
    result = json.loads(next(root.rglob("result.json")).read_text())
    assert result["status"] == "finished" and result["mlflow_synced"] is False
    # the server comes back, but its users are not ours any more: one line, nothing uploaded
    start(same_credentials=False)
    refused = asym(tmp_path, "asym-sync", str(root), "--tracking-uri", uri, "--experiment", exp)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr
    assert f"tracking server {uri} rejected the password of user" in errors[0] and "Traceback" not in refused.stderr
    stop()
    start()  # the team's server again: the same credentials upload it, once
    df = tracking.runs_frame(uri, exp)
    assert list(df["tags.status"]) == ["running"], "the refused sync changed the run"
    first = asym(tmp_path, "asym-sync", str(root), "--tracking-uri", uri, "--experiment", exp, check=True)
    assert "1 uploaded" in first.stdout
    second = asym(tmp_path, "asym-sync", str(root), "--tracking-uri", uri, "--experiment", exp, check=True)
    assert "0 uploaded, 1 already" in second.stdout
    df = tracking.runs_frame(uri, exp)
    assert len(df) == 1 and list(df["status"]) == ["FINISHED"] and list(df["tags.status"]) == ["finished"]
    steps = [m.step for m in tracking.client(uri).get_metric_history(df["run_id"][0], "val_error")]
    assert steps == list(range(EPOCHS + 1))


def test_failing_slurm_job_is_failed_everywhere(slurm, mlflow_server, tmp_path):
    exp, root = experiment(), tmp_path / "runs"
    asym(tmp_path, "asym-train", "-m", "model=SGD", "dataset=digits", "train=demo", "train.epochs=1",
         "train.device=cuda:99", *SLURM, *tracking_args(mlflow_server, exp, root), check=True)
    job = plan.read(sweep_dir(root))["jobs"]["0"]

    def ended():
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State,ExitCode", "-j", job], capture_output=True,
                             text=True).stdout.split()
        return out and not out[0].startswith(("PENDING", "RUNNING", "COMPLETING")) and out
    state, code = wait_until(ended, 180, "the job to end")[0].split("|")
    assert state == "FAILED" and code != "0:0"
    df = tracking.runs_frame(mlflow_server, exp)
    assert list(df["status"]) == ["FAILED"] and list(df["tags.status"]) == ["failed"]
    status = asym(tmp_path, "asym-status", str(root), check=True).stdout
    assert "failed:" in status and f"SLURM {job}: FAILED" in status


@pytest.mark.parametrize("override,message", [
    ("hydra.launcher.partition=nosuchpartition", "no SLURM partition 'nosuchpartition'; available: debug"),
    ("data.root=/nonexistent", "dataset 'mnist' not found at /nonexistent/MNIST/raw"),
])
def test_bad_cluster_input_is_one_line_before_anything_is_queued(slurm, asym_train, tmp_path, name, override, message):
    res = asym_train("-m", "model=SGD", "dataset=mnist" if "data.root" in override else "dataset=digits",
                     *SLURM, f"hydra.launcher.name={name}", override, f"tracking.uri=sqlite:///{tmp_path}/m.db",
                     f"output_root={tmp_path}/runs")
    assert_one_error_line(res, message, tmp_path)
    assert jobs_named(name) == set(), "something was queued"


def test_services_are_required_in_ci():
    """Guard: under CI the cluster tests above must have run against real services, not skipped."""
    if not in_ci():
        pytest.skip("not under CI")
    assert os.environ.get("ASYM_TEST_SLURM") and os.environ.get("ASYM_TEST_MLFLOW_URI")


def task_logs(root: Path) -> dict[str, str]:
    """Each array task's submitit log (``.submitit/ARRAY_TASK/ARRAY_TASK_0_log.out``), by task id."""
    return {p.parent.name: p.read_text(errors="replace") for p in root.glob("logs/multirun-*/.submitit/*/*_0_log.out")}


def test_slurm_sweep_of_6_runs_as_2_array_tasks_of_3(slurm, mlflow_server, tmp_path):
    """``runs_per_task=3``: 2 array tasks, each trains its 3 runs in turn (dataset loaded once per task); every
    run has its own run directory and MLflow run; asym-status maps each run to its task."""
    exp, root = experiment(), tmp_path / "runs"
    res = asym(tmp_path, "asym-train", "-m", "model=SGD,BN", "lr_mult=10,1,0.1", "dataset=digits", "train=demo",
               "train.epochs=1", *SLURM, "hydra.launcher.runs_per_task=3", *tracking_args(mlflow_server, exp, root),
               check=True)
    out = res.stderr + res.stdout  # returned without waiting
    assert "submitted 6 runs as SLURM array" in out and "2 array tasks of up to 3 runs" in out
    doc = plan.read(sweep_dir(root))
    tasks = [doc["jobs"][str(e["num"])] for e in doc["runs"]]
    assert len(tasks) == 6 and tasks[:3] == [tasks[0]] * 3 and tasks[3:] == [tasks[3]] * 3 and tasks[0] != tasks[3]
    wait_until(lambda: len(finished_runs(mlflow_server, exp)) == 6, 300, "6 finished runs in MLflow")
    df = finished_runs(mlflow_server, exp)
    assert set(df["status"]) == {"FINISHED"} and df["tags.config_hash"].nunique() == 6
    results = list(root.rglob("result.json"))
    assert len({p.parent for p in results}) == 6
    array = tasks[0].split("_")[0]
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", array], capture_output=True,
                          text=True).stdout.split()
    wait_until(lambda: sorted(subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", array],
                                             capture_output=True, text=True).stdout.split()) ==
               [f"{tasks[0]}|COMPLETED", f"{tasks[3]}|COMPLETED"], 60, f"2 COMPLETED tasks in sacct, got {acct}")
    assert sorted(task_logs(root)) == sorted({tasks[0], tasks[3]})
    loads = [sum((sweep_dir(root) / str(e["num"]) / "asym.log").read_text().count("loaded dataset digits")
                 for e in doc["runs"][i:i + 3]) for i in (0, 3)]
    assert loads == [1, 1], "each task loads its runs' dataset once"
    status = asym(tmp_path, "asym-status", str(root), check=True).stdout
    assert "6/6 done" in status


def test_usr2_preemption_mid_task_skips_the_finished_run_and_resumes_the_next(slurm, mlflow_server, tmp_path):
    """Preempted (USR2) while its 2nd run trains, a task of 2 is requeued whole: the 1st run is skipped as done
    (not retrained: its checkpoint untouched, one MLflow run), the 2nd resumes from its checkpoint."""
    exp, root = experiment(), tmp_path / "runs"
    asym(tmp_path, "asym-train", "-m", *[a for a in RUN if not a.startswith("lr_mult")], "lr_mult=10,1", *SLURM,
         "hydra.launcher.runs_per_task=2", *tracking_args(mlflow_server, exp, root), check=True)
    doc = plan.read(sweep_dir(root))
    first, second = doc["runs"]
    task = doc["jobs"][str(first["num"])]
    assert doc["jobs"][str(second["num"])] == task
    wait_until(lambda: job_log_shows(root, f"[{second['name']}] epoch 3:"), 300, "epoch 3 of the task's 2nd run")
    first_ckpt = next(p for p in root.rglob("checkpoint.pt") if first["config_hash"][:8] in p.parent.name)
    before = first_ckpt.stat().st_mtime_ns
    subprocess.run(["scancel", "--signal=USR2", task], check=True)
    wait_until(lambda: len(finished_runs(mlflow_server, exp)) == 2, 300, "both runs to finish")
    assert first_ckpt.stat().st_mtime_ns == before, "the finished 1st run was trained again"
    results = {json.loads(p.read_text())["run"]["lr_mult"]: json.loads(p.read_text()) for p in root.rglob("result.json")}
    assert results[10]["timings"]["resumed_from_epoch"] is None
    assert results[1]["timings"]["resumed_from_epoch"] is not None and results[1]["timings"]["resumed_from_epoch"] >= 3, \
        "the 2nd run was not interrupted mid-run"
    assert f"skip {first['name']}: already finished" in (sweep_dir(root) / str(first["num"]) / "asym.log").read_text()
    df = tracking.runs_frame(mlflow_server, exp)
    assert len(df) == 2 and df["tags.config_hash"].nunique() == 2, "one MLflow run per run, across the requeue"
    c = tracking.client(mlflow_server)
    for run_id in df["run_id"]:
        assert [m.step for m in c.get_metric_history(run_id, "val_error")] == list(range(EPOCHS + 1))


# ----------------------------------------------------------- a cluster with small limits (issue 22 items 1, 2, 4)

DOZEN = ["model=SGD,BN", "lr_mult=10,1,0.1", "seed=0,1", "dataset=digits", "train=demo", "train.epochs=1"]


@pytest.fixture(scope="class")
def small_cluster(slurm):
    """MaxArraySize=5 (array task ids 0 … 4) and a partition MaxTime of 30 minutes, for this class's tests."""
    with slurm_lock(exclusive=True), reconfigured({"MaxArraySize": "5"}, {"MaxTime": "30"}):
        yield


@pytest.mark.xdist_group("slurm-restarted")  # one worker, in turn: the controller is restarted around the class
@pytest.mark.usefixtures("small_cluster")
class TestSmallCluster:
    RESTARTS_SLURM = True  # holds the controller alone (small_cluster), so its tests take no shared hold

    def test_the_controller_is_read_as_configured(self):
        c = cluster.read_cluster()
        assert (c.max_array_size, cluster.array_size(c), c.default_partition) == (5, 5, "debug")
        assert c.partitions["debug"].max_time_min == 30 and c.partitions["debug"].gpus_per_node == 0

    @pytest.mark.parametrize("override,message", [
        ("hydra.launcher.timeout_min=60", "hydra.launcher.timeout_min=60 is above partition debug's MaxTime of 30 min "
                                          "(scontrol show partition): set hydra.launcher.timeout_min=30 or less"),
        ("hydra.launcher.gpus_per_node=1", "hydra.launcher.gpus_per_node=1 but partition debug has no GPUs"),
        ("hydra.launcher.cpus_per_task=64", "hydra.launcher.cpus_per_task=64 but partition debug's nodes have at most"),
    ])
    def test_a_request_over_a_limit_is_one_line_before_anything_exists(self, asym_train, tmp_path, name, override,
                                                                       message):
        res = asym_train("-m", *DOZEN, *SLURM, "hydra.launcher.timeout_min=10", override,
                         f"hydra.launcher.name={name}", f"tracking.uri=sqlite:///{tmp_path}/m.db",
                         f"output_root={tmp_path}/runs")
        assert_one_error_line(res, message, tmp_path)  # no sweep directory, plan or MLflow store either
        assert jobs_named(name) == set()

    def test_a_dozen_runs_go_as_three_arrays_and_each_runs_exactly_once(self, mlflow_server, tmp_path, name):
        exp, root = experiment(), tmp_path / "runs"
        res = asym(tmp_path, "asym-train", "-m", *DOZEN, *SLURM, "hydra.launcher.timeout_min=10",
                   f"hydra.launcher.name={name}", *tracking_args(mlflow_server, exp, root), check=True)
        assert "submitted 12 runs as SLURM arrays" in res.stdout + res.stderr, res.stderr[-2000:]
        doc = plan.read(sweep_dir(root))
        jobs = [doc["jobs"][str(e["num"])] for e in doc["runs"]]
        arrays = sorted({j.split("_")[0] for j in jobs})
        assert len(jobs) == len(set(jobs)) == 12 and len(arrays) == 3
        assert sorted(int(j.split("_")[1]) for j in jobs) == sorted([*range(5), *range(5), *range(2)])
        wait_until(lambda: len(finished_runs(mlflow_server, exp)) == 12, 600, "12 finished runs in MLflow")
        df = tracking.runs_frame(mlflow_server, exp)
        planned = {e["config_hash"] for e in doc["runs"]}
        assert len(df) == 12 and set(df["tags.config_hash"]) == planned, "each run exactly once in MLflow"
        results = [json.loads(p.read_text()) for p in root.rglob("result.json")]
        assert len(results) == 12 and {r["status"] for r in results} == {"finished"}
        assert sorted(p.parent.name[-8:] for p in root.rglob("result.json")) == sorted(h[:8] for h in planned)
        wait_until(lambda: all(s == ["COMPLETED"] for s in job_states(jobs).values()) and len(job_states(jobs)) == 12,
                   120, "each of the 12 array tasks COMPLETED once in sacct")
        assert jobs_named(name) == set(jobs), "the plan records every job submitted, and nothing else was"
        out = asym(tmp_path, "asym-status", str(root), check=True).stdout
        counts = status_counts(out)
        assert "12/12 done" in out and counts["finished"] == 12 and counts["lost"] == counts["queued"] == 0, out

    @pytest.mark.parametrize("how,reason", [
        ("preflight_bypassed", "Batch job submission failed: Invalid job array specification"),
        ("unknown_constraint", "Batch job submission failed: Invalid feature specification"),
    ])
    def test_a_refused_submission_is_one_line_and_recorded_as_not_submitted(self, asym_train, mlflow_server, tmp_path,
                                                                            monkeypatch, name, how, reason):
        exp, root = experiment(), tmp_path / "runs"
        extra = []
        if how == "preflight_bypassed":  # the limits as a stock SLURM has them: one array of 12, which sbatch refuses
            real = cluster.read_cluster
            monkeypatch.setattr(slurm_launcher, "read_cluster",
                                lambda qos=None: dataclasses.replace(real(qos), max_array_size=1001))
        else:
            extra = ["hydra.launcher.constraint=nosuchfeature"]
        res = asym_train("-m", *DOZEN, *SLURM, "hydra.launcher.timeout_min=10", f"hydra.launcher.name={name}",
                         *extra, *tracking_args(mlflow_server, exp, root))
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
        assert len(errors) == 1 and reason in errors[0] and "12 of 12 jobs not submitted" in errors[0], res.stderr
        assert [line for line in res.stderr.splitlines() if "sbatch: error" in line] == errors, "SLURM's reason once"
        doc = plan.read(sweep_dir(root))
        assert doc["jobs"] == {} and doc["not_submitted"]["jobs"] == list(range(12))
        assert reason in doc["not_submitted"]["reason"]
        (sweep_run,) = tracking.sweep_runs(mlflow_server, exp)  # ended failed, and says why
        assert reason in sweep_run.data.tags[tracking.NOT_SUBMITTED_TAG] and sweep_run.info.status == "FAILED"
        assert jobs_named(name) == set()
        runs, _ = status.sweep_view(sweep_dir(root))
        assert {r["state"] for r in runs} == {"not submitted"}
        out = asym(tmp_path, "asym-status", str(root), check=True).stdout
        assert "12 runs were not submitted" in out and reason in out


# ------------------------------------------------------- status without accounting (issue 22 item 3)

@pytest.fixture(scope="class")
def no_accounting(slurm):
    """Accounting off, and ended jobs forgotten by the controller after 2 s (MinJobAge): only squeue, MLflow, the
    run records and submitit's files are left to say what happened."""
    with slurm_lock(exclusive=True), reconfigured({"AccountingStorageType": "accounting_storage/none",
                                                   "MinJobAge": "2"}):
        yield


@pytest.fixture(scope="class")
def ended_sweep(no_accounting, mlflow_server, tmp_path_factory):
    """Four runs, two at a time: the first two finish; the third fails when its job starts (a file stands where its
    run directory must go — a disk problem the plan cannot see); the fourth is cancelled while it waits: it never
    starts and leaves nothing behind. Returns once the controller has forgotten them all (MinJobAge)."""
    tmp = tmp_path_factory.mktemp("no-accounting")
    exp, root, name = experiment(), tmp / "runs", job_name()
    try:
        asym(tmp, "asym-train", "-m", "lr_mult=10,1,0.1,0.01", "model=SGD", "dataset=digits", "train=demo",
             "train.epochs=1", *SLURM, "hydra.launcher.array_parallelism=2", f"hydra.launcher.name={name}",
             *tracking_args(mlflow_server, exp, root), check=True)
        doc = plan.read(sweep_dir(root))
        jobs = [doc["jobs"][str(e["num"])] for e in doc["runs"]]
        subprocess.run(["scancel", jobs[3]], check=True)  # tasks 2 and 3 are still pending behind the %2 limit
        third = doc["runs"][2]
        blocker = root / "digits" / "SGD" / f"lr{third['run']['lr_mult']:g}-none-standard-{third['config_hash'][:8]}"
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("not a directory")
        array = jobs[0].split("_")[0]
        wait_until(lambda: subprocess.run(["squeue", "-h", "-r", "-j", array, "-t", "PENDING,RUNNING,COMPLETING",
                                           "-o", "%i"], capture_output=True, text=True).stdout.strip() == "", 600,
                   "every task of the sweep to end")
        wait_until(lambda: subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", array, "-o", "%i"],
                                          capture_output=True, text=True).stdout.strip() == "", 120,
                   "the controller to forget the ended tasks (MinJobAge=2)")
        yield tmp, root, jobs
    finally:  # a failed wait leaves nothing running
        subprocess.run(["scancel", "-n", name], capture_output=True)


def status_counts(out: str) -> dict[str, int]:
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("table"))
    cols = [c.replace("not_submitted", "not submitted") for c in header.replace("not submitted", "not_submitted").split()]
    row = next(line for line in lines if line.startswith("all ")).split()
    return dict(zip(cols[1:], map(int, row[1:])))


@pytest.mark.xdist_group("slurm-restarted")
@pytest.mark.usefixtures("no_accounting")
class TestNoAccounting:
    RESTARTS_SLURM = True

    def test_status_without_accounting_says_lost_and_watch_ends(self, ended_sweep):
        tmp, root, jobs = ended_sweep
        assert "accounting storage is disabled" in subprocess.run(
            ["sacct", "-j", jobs[0]], capture_output=True, text=True).stderr.lower()
        res = asym(tmp, "asym-status", str(root), "--watch", "1", timeout=120, check=True)
        counts = status_counts(res.stdout)
        assert (counts["finished"], counts["failed"], counts["lost"], counts["queued"], counts["running"]) == \
            (2, 1, 1, 0, 0), res.stdout
        assert sum(line.startswith("sweep ") for line in res.stdout.splitlines()) == 1, \
            "--watch ended at once: nothing is queued or running"
        assert f"SLURM {jobs[2]}: FAILED: FileExistsError: [Errno 17] File exists: " in res.stdout, res.stdout
        assert f"SLURM {jobs[3]}: LOST)" in res.stdout and "submitit's job files (sacct:" in res.stdout

    def test_status_without_the_sacct_binary(self, ended_sweep, tmp_path):
        """PATH with squeue (and asym-status's Python) but no sacct: the same answer, from squeue and the files."""
        tmp, root, jobs = ended_sweep
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in ("squeue", "scontrol", "sinfo"):
            (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{bin_dir}"}
        res = subprocess.run(["asym-status", str(root)], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        counts = status_counts(res.stdout)
        assert (counts["finished"], counts["failed"], counts["lost"], counts["queued"]) == (2, 1, 1, 0), res.stdout
        assert "submitit's job files (no sacct)" in res.stdout
