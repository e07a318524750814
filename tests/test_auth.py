"""A tracking server only the team can write to (MLflow's basic-auth app), against the real services.

The server of .ci/services-up.sh runs ``mlflow server --app-name basic-auth`` on PostgreSQL; its writer has
EDIT on the study's experiment, its reader READ only. Without credentials, with a wrong password or as the
reader, ``asym-train`` (a run, a SLURM sweep) stops with one ``error:`` line and exit 2 before anything
exists; the reading tools work as the reader and say one line without credentials; no credential ends up in
anything a sweep writes.
"""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from asym import tracking
from conftest import env_with_credentials, require, wait_until

pytestmark = pytest.mark.slow
RUN = ["model=SGD", "dataset=digits", "train=demo", "train.epochs=1"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def sh(cwd, args, env, timeout=300):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def error_lines(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("error:")]


def slurm_jobs(name: str) -> set[str]:
    """The jobs named ``name`` (this test's own ``hydra.launcher.name``), queued or in accounting."""
    queue = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-n", name, "-o", "%i"], capture_output=True, text=True)
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-S", "now-1days", "--name", name, "-o", "JobID"],
                          capture_output=True, text=True)
    return set(queue.stdout.split()) | set(acct.stdout.split())


def new_experiment(uri) -> tuple[str, str]:
    """An experiment the writer creates (MANAGE for it; the reader gets basic-auth's default, READ)."""
    name = f"auth-{uuid.uuid4().hex[:8]}"
    return name, tracking.client(uri).create_experiment(name)


def test_services_grant_edit_to_the_writer_and_read_to_the_reader(mlflow_server, mlflow_users, tmp_path):
    """What services-up.sh promises: the study's experiment exists, the writer may EDIT it, the reader only READ."""
    code = ("import sys; from mlflow.server import get_app_client; from asym import tracking\n"
            "exp = tracking.client(sys.argv[1]).get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id\n"
            "print(get_app_client('basic-auth', tracking_uri=sys.argv[1]).get_user_permission(sys.argv[2], "
            "'experiment', exp).permission)")
    for role, expected in (("writer", "EDIT"), ("reader", "READ")):
        res = sh(tmp_path, [sys.executable, "-c", code, mlflow_server, mlflow_users[role][0]],
                 env_with_credentials(mlflow_users[role], tmp_path))
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout.strip() == expected, (role, res.stdout)


CASES = {  # credentials → what the one error line must say
    "unauthenticated": (lambda users: None, "needs credentials (HTTP 401)"),
    "wrong_password": (lambda users: (users["writer"][0], "not-the-password"),
                       "rejected the password of user 'asym-writer' (HTTP 401)"),
    "read_only": (lambda users: users["reader"], "user 'asym-reader' has READ on experiment"),
}


@pytest.mark.parametrize("how", ["run", "slurm_sweep"])
@pytest.mark.parametrize("case", list(CASES))
def test_train_is_refused_before_anything_exists(mlflow_server, mlflow_users, slurm, tmp_path, case, how):
    credentials, message = CASES[case]
    exp, exp_id = new_experiment(mlflow_server)
    root = tmp_path / "runs"
    name = f"asym-test-{uuid.uuid4().hex[:8]}"  # this test's jobs, if any were queued, carry this name
    args = ["asym-train", *(["-m", "model=SGD,BN", *SLURM, f"hydra.launcher.name={name}"] if how == "slurm_sweep"
                            else ["model=SGD"]),
            "dataset=digits", "train=demo", "train.epochs=1", f"tracking.uri={mlflow_server}",
            f"tracking.experiment={exp}", f"output_root={root}"]
    res = sh(tmp_path, args, env_with_credentials(credentials(mlflow_users), tmp_path))
    assert res.returncode == 2, res.stderr[-3000:]
    errors = error_lines(res)
    assert len(errors) == 1 and message in errors[0] and mlflow_server in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    # nothing half-written: no run directory (Hydra's own job log folder logs/ aside), no MLflow run, no job
    assert not list(root.rglob("result.json")) and not list(root.rglob("checkpoint.pt"))
    assert {p.name for p in root.iterdir()} <= {"logs"} if root.exists() else True
    if how == "slurm_sweep":
        assert not root.exists(), "a refused sweep must not create its sweep directory"
    assert tracking.client(mlflow_server).search_runs([exp_id]) == [], "an MLflow run was created"
    assert slurm_jobs(name) == set(), "something was submitted to SLURM"


def test_basic_auth_names_match_mlflow():
    """tracking.py spells out basic-auth's permission route and write permissions (a client need not install
    the server's extras); they must be MLflow's own."""
    ALL_PERMISSIONS = require("mlflow.server.auth.permissions", "server").ALL_PERMISSIONS  # Flask-WTF: [server]
    GET_USER_PERMISSION = require("mlflow.server.auth.routes", "server").GET_USER_PERMISSION
    assert tracking.USER_PERMISSION_PATH == GET_USER_PERMISSION
    assert set(tracking.WRITE_PERMISSIONS) == {name for name, p in ALL_PERMISSIONS.items() if p.can_update}


def test_credentials_in_the_tracking_uri_are_refused_without_echoing_them():
    """A URI with user:password@ would be logged as a param and written to runs.json: refused, the secret not echoed."""
    with pytest.raises(tracking.AccessError) as e:
        tracking.check_access("http://alice:s3cret-pw@127.0.0.1:5066", write=True)
    assert "http://127.0.0.1:5066" in str(e.value) and "s3cret-pw" not in str(e.value)
    assert "alice" not in str(e.value)


def test_reading_tools_work_as_the_reader_and_say_one_line_without_credentials(mlflow_server, mlflow_users, tmp_path):
    exp, _ = new_experiment(mlflow_server)
    root = tmp_path / "runs"
    res = sh(tmp_path, ["asym-train", "-m", *RUN, f"tracking.uri={mlflow_server}", f"tracking.experiment={exp}",
                        f"output_root={root}"], env_with_credentials(mlflow_users["writer"], tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    where = ["--tracking-uri", mlflow_server, "--experiment", exp]
    tools = {"asym-tables": ["asym-tables", "--table", "2", *where],
             "asym-report": ["asym-report", "--out", str(tmp_path / "report.html"), *where],
             "asym-status": ["asym-status", str(root), *where]}
    # the reader through MLflow's credentials file, the way a lab member's laptop has it
    reader_home = tmp_path / "reader-home"
    (reader_home / ".mlflow").mkdir(parents=True)
    user, password = mlflow_users["reader"]
    (reader_home / ".mlflow" / "credentials").write_text(f"[mlflow]\nmlflow_tracking_username = {user}\n"
                                                         f"mlflow_tracking_password = {password}\n")
    for name, args in tools.items():
        ok = sh(tmp_path, args, env_with_credentials(None, reader_home))
        assert ok.returncode == 0, (name, ok.stderr[-3000:])
        assert not error_lines(ok), (name, ok.stderr)
    assert "SGD" in sh(tmp_path, tools["asym-tables"], env_with_credentials(None, reader_home)).stdout
    for name, args in tools.items():
        for credentials, message in ((None, "needs credentials (HTTP 401)"),
                                     ((user, "not-the-password"), "rejected the password")):
            bad = sh(tmp_path, args, env_with_credentials(credentials, tmp_path / "empty-home"))
            errors = error_lines(bad)
            assert bad.returncode == 2 and len(errors) == 1, (name, bad.stderr)
            assert message in errors[0] and mlflow_server in errors[0], (name, errors)
            assert "Traceback" not in bad.stderr


def all_bytes_under(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_credentials_never_leave_the_environment(mlflow_server, mlflow_users, slurm, tmp_path):
    """A real 2-run SLURM sweep through the writer; then every file it wrote and everything MLflow holds of it
    is searched for the password (and the admin's and reader's, which no run should ever see)."""
    exp, exp_id = new_experiment(mlflow_server)
    root = tmp_path / "runs"
    password = mlflow_users["writer"][1]
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == password  # the jobs get it the only way: the environment
    res = sh(tmp_path, ["asym-train", "-m", "model=SGD,BN", "dataset=digits", "train=demo", "train.epochs=1", *SLURM,
                        f"tracking.uri={mlflow_server}", f"tracking.experiment={exp}", f"output_root={root}"],
             dict(os.environ))
    assert res.returncode == 0, res.stderr[-3000:]
    c = tracking.client(mlflow_server)
    wait_until(lambda: len([r for r in c.search_runs([exp_id]) if r.data.tags.get("status") in tracking.DONE]) == 2,
               240, "2 finished runs in MLflow")
    files = all_bytes_under(root)
    names = {p.name for p in files}
    # the grep must see what could leak: submitit's pickles, the sbatch script, job logs, plan, records, configs
    assert any(n.endswith(".pkl") for n in names) and any(n.endswith("_submission.sh") for n in names)
    assert any(n.endswith("_log.out") for n in names) and {"runs.json", "result.json", "config.yaml"} <= names
    secrets = [password.encode(), mlflow_users["reader"][1].encode()]
    leaked = [str(p) for p, data in files.items() if any(s in data for s in secrets)]
    assert leaked == [], f"a password was written to {leaked}"
    assert password not in res.stdout + res.stderr
    download = tmp_path / "artifacts"
    for run in c.search_runs([exp_id]):
        text = json.dumps({"params": run.data.params, "tags": run.data.tags})
        assert password not in text, f"a password is in the MLflow params/tags of {run.info.run_name}"
        run_dir = download / run.info.run_id
        run_dir.mkdir(parents=True)
        c.download_artifacts(run.info.run_id, "", str(run_dir))
        artifacts = all_bytes_under(run_dir)
        assert {p.name for p in artifacts} >= ({"runs.json", "overrides.yaml", "multirun.yaml"} if tracking.is_sweep(run)
                                               else {"result.json", "config.yaml"})  # the sweep's run: its plan
        assert not [p for p, data in artifacts.items() if password.encode() in data], "a password is in an artifact"
    assert password not in json.dumps(c.get_experiment(exp_id).tags)
