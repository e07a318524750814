"""MLflow's store states, on real stores: a deleted experiment, a deleted run, a read-only store and an unreachable
server are four different messages; a deleted experiment (or a read-only store) stops ``asym-train`` before
anything runs and ``asym-sync``/``asym-tables`` say the same; a run started over from epoch 0 gets its own MLflow
run, linked to the one it replaces, never two points for one epoch."""
import json
import logging
import shutil
import subprocess
import sys
import uuid
from dataclasses import asdict

import pytest

from asym import cli, tracking
from asym.launcher import sync
from asym.record import RunStatus
from asym.train import Protocol, RunSpec, previous_checkpoint

RUN = ["model=SGD", "dataset=digits", "lr_mult=10", "train=demo", "train.epochs=1", "train.threads=0"]


def compose(*overrides):
    from hydra import compose as hydra_compose, initialize_config_module
    with initialize_config_module("asym.conf", version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def run(tmp_path, uri, *extra, experiment=tracking.DEFAULT_EXPERIMENT, output="runs"):
    """``asym-train`` in process on the composed config (its console script adds only the one-line printing)."""
    return cli.run_one(compose(*RUN, f"tracking.uri={uri}", f"tracking.experiment={experiment}",
                               f"output_root={tmp_path / output}", *extra))


def sqlite(tmp_path, name="mlflow"):
    return f"sqlite:///{tmp_path / name}.db"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def immutable():
    """Make a file read-only for root too: ``chattr +i`` (ext4, xfs, btrfs); chmod where the tests do not run as
    root. Undone at the end, so pytest can remove the folder."""
    import os
    done = []

    def make(path):
        if os.geteuid() != 0:
            os.chmod(path, 0o444)
            return
        res = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot make a file immutable here: {res.stderr.strip()}")
        done.append(path)
    yield make
    for path in done:
        subprocess.run(["chattr", "-i", str(path)])


def runs_of(uri, experiment=tracking.DEFAULT_EXPERIMENT):
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    from mlflow.entities import ViewType
    return c.search_runs([exp.experiment_id], run_view_type=ViewType.ALL) if exp else []


def steps(uri, run_id, metric="val_error"):
    return sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, metric))


def one_point_per_epoch(uri, run_id, epochs):
    for k in tracking.EPOCH_METRICS:
        want = [e["epoch"] for e in epochs if e.get(k) is not None]
        assert steps(uri, run_id, k) == want, (k, steps(uri, run_id, k), want)


# ------------------------------------------------------------------ a deleted experiment
def deleted_experiment(uri):
    name = f"deleted-{uuid.uuid4().hex[:8]}"
    c = tracking.client(uri)
    exp_id = c.create_experiment(name)
    c.delete_experiment(exp_id)
    return name, exp_id


def assert_deleted_message(text, uri, name, exp_id, option):
    assert "\n" not in text.strip(), text
    assert f"MLflow experiment '{name}' (id {exp_id})" in text and "is deleted" in text
    assert f"mlflow experiments restore --experiment-id {exp_id}" in text and option in text
    assert "unreachable" not in text


def test_a_deleted_experiment_stops_asym_train_before_anything_runs(tmp_path):
    """Fails on main: the run trained, said "MLflow unreachable … run asym-sync later" and logged nothing."""
    uri = sqlite(tmp_path)
    name, exp_id = deleted_experiment(uri)
    with pytest.raises(cli.UsageError) as e:
        run(tmp_path, uri, experiment=name)
    assert_deleted_message(str(e.value), tracking.resolve_uri(uri), name, exp_id, "tracking.experiment=NAME")
    assert not (tmp_path / "runs").exists() and runs_of(uri, name) == []


def test_a_deleted_experiment_on_the_server_stops_asym_train(tmp_path, mlflow_server, mlflow_users):
    name, exp_id = deleted_experiment(mlflow_server)
    with pytest.raises(cli.UsageError) as e:
        run(tmp_path, mlflow_server, experiment=name)
    assert_deleted_message(str(e.value), mlflow_server, name, exp_id, "tracking.experiment=NAME")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # trains a demo run in process
def test_asym_sync_and_asym_tables_say_the_experiment_is_deleted(tmp_path, monkeypatch, capsys):
    """Fails on main: asym-sync failed on every record ("could not upload"), asym-tables said there are no runs."""
    uri = sqlite(tmp_path)
    name = f"synced-{uuid.uuid4().hex[:8]}"
    run(tmp_path, uri, experiment=name)
    c = tracking.client(uri)
    exp_id = c.get_experiment_by_name(name).experiment_id
    c.delete_experiment(exp_id)
    monkeypatch.setattr(sys, "argv", ["asym-sync", str(tmp_path / "runs"), "--tracking-uri", uri, "--experiment", name])
    with pytest.raises(SystemExit) as e:
        sync.main()
    assert e.value.code == 2
    (err,) = error_lines(capsys.readouterr().err)
    assert_deleted_message(err, tracking.resolve_uri(uri), name, exp_id, "--experiment NAME")
    from asym.analysis.cli import tables
    with pytest.raises(SystemExit) as e:
        tables(["--tracking-uri", uri, "--experiment", name])
    assert e.value.code == 2
    assert error_lines(capsys.readouterr().err) == [err]  # the same line


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------ a read-only store
@pytest.mark.slow  # trains a demo run in process
def test_a_read_only_store_stops_asym_train_and_sync_but_tables_read_it(tmp_path, immutable, monkeypatch, capsys):
    """Fails on main: the run trained and said "MLflow unreachable" at every write."""
    uri = sqlite(tmp_path)
    run(tmp_path, uri, output="first")
    immutable(tmp_path / "mlflow.db")
    with pytest.raises(cli.UsageError, match=r"MLflow store .*mlflow.db is read-only \(.*mlflow.db is not writable\): "
                                             r"make it writable, or choose another store with tracking.uri=URI"):
        run(tmp_path, uri, "lr_mult=1")
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(sys, "argv", ["asym-sync", str(tmp_path / "first"), "--tracking-uri", uri])
    with pytest.raises(SystemExit) as e:
        sync.main()
    assert e.value.code == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "is read-only" in line and "--tracking-uri URI" in line
    assert len(tracking.runs_frame(uri)) == 1  # reading still works


# ------------------------------------------------------------------ the four states mid-run, one message each
def tracker(uri, experiment=tracking.DEFAULT_EXPERIMENT):
    run_fields = asdict(RunSpec("SGD", "digits", 10))
    return tracking.RunTracker(uri, experiment, run_fields, asdict(Protocol(epochs=1)), {"model": "SGD"})


RECORD = {"epoch": 1, "val_error": 50.0, "train_error": 40.0, "train_loss": 1.5, "lr": 0.005}


def warning_of(caplog, t):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asym.tracking"):
        t.log_epoch(RECORD)
    assert not t.ok
    lines = [r.getMessage() for r in caplog.records if r.name == "asym.tracking"]  # not MLflow's own logging
    assert len(lines) == 1, lines
    return lines[0]


def test_four_store_states_are_four_messages(tmp_path, caplog, immutable):
    """Each while logging an epoch, on real stores: the experiment deleted, the run deleted, the store made
    read-only, the server unreachable. Fails on main: all four said "MLflow unreachable"."""
    messages = {}
    uri = sqlite(tmp_path, "a")
    t = tracker(uri)
    t.start()
    exp = tracking.client(uri).get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    tracking.client(uri).delete_experiment(exp.experiment_id)
    messages["experiment"] = warning_of(caplog, t)
    assert (f"experiment '{tracking.DEFAULT_EXPERIMENT}' (id {exp.experiment_id}) was deleted" in messages["experiment"]
            and f"mlflow experiments restore --experiment-id {exp.experiment_id}" in messages["experiment"])

    uri = sqlite(tmp_path, "b")
    t = tracker(uri)
    t.start()
    tracking.client(uri).delete_run(t.run_id)
    messages["run"] = warning_of(caplog, t)
    assert f"MLflow run {t.run_id} was deleted" in messages["run"] and f"mlflow runs restore --run-id {t.run_id}" in \
        messages["run"]

    uri = sqlite(tmp_path, "c")
    t = tracker(uri)
    t.start()
    immutable(tmp_path / "c.db")
    messages["read_only"] = warning_of(caplog, t)
    assert "is read-only" in messages["read_only"] and "c.db is not writable" in messages["read_only"]

    t = tracker("http://127.0.0.1:9")  # nothing listens on the discard port
    t.run_id = "0" * 32
    messages["unreachable"] = warning_of(caplog, t)
    assert "MLflow at http://127.0.0.1:9 is unreachable" in messages["unreachable"]

    assert all("unreachable" not in m for k, m in messages.items() if k != "unreachable"), messages
    assert all("the run continues and keeps its result.json" in m for m in messages.values())


# ------------------------------------------------------------------ starting over in an existing MLflow run
def only_result(root):
    return json.loads(next(root.rglob("result.json")).read_text())


def crashed(uri):
    """The run's MLflow record as a crash leaves it: status failed (a killed worker never ends it)."""
    (old,) = runs_of(uri)
    tracking.client(uri).set_tag(old.info.run_id, tracking.STATUS_TAG, RunStatus.FAILED)
    return old.info.run_id


@pytest.mark.slow  # trains a demo run in process
@pytest.mark.parametrize("how", ["run_dir_deleted", "output_root_changed"])
def test_a_restart_from_scratch_gets_a_new_mlflow_run_linked_to_the_old(tmp_path, how):
    """Fails on main: the old MLflow run was reopened and every epoch logged a second time."""
    uri = sqlite(tmp_path)
    run(tmp_path, uri)
    old_id = crashed(uri)
    old_steps = steps(uri, old_id)
    output = "runs"
    if how == "run_dir_deleted":
        shutil.rmtree(tmp_path / "runs")
    else:
        output = "elsewhere"
    run(tmp_path, uri, output=output)
    by_id = {r.info.run_id: r for r in runs_of(uri)}
    assert len(by_id) == 2
    (new_id,) = set(by_id) - {old_id}
    assert by_id[new_id].data.tags[tracking.RESTART_OF_TAG] == old_id
    assert by_id[old_id].data.tags[tracking.RESTARTED_AS_TAG] == new_id
    assert steps(uri, old_id) == old_steps  # the old run's history untouched
    one_point_per_epoch(uri, new_id, only_result(tmp_path / output)["epochs"])
    table = tracking.runs_table(uri)
    assert list(table["run_id"]) == [new_id] and list(table["status"]) == ["finished"]


@pytest.mark.slow  # trains a demo run in process
def test_unusable_checkpoints_stop_asym_train_until_restart_is_chosen(tmp_path):
    """Both checkpoints damaged: one error line naming them and train.restart=true, nothing overwritten, the MLflow
    run untouched; with train.restart=true the run starts over in a new MLflow run linked to the old one."""
    uri = sqlite(tmp_path)
    run(tmp_path, uri, "train.epochs=2")
    old_id = crashed(uri)
    ckpt = next((tmp_path / "runs").rglob("checkpoint.pt"))
    ckpt.write_bytes(b"")
    previous_checkpoint(ckpt).write_bytes(previous_checkpoint(ckpt).read_bytes()[:100])
    before = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    with pytest.raises(cli.UsageError) as e:
        run(tmp_path, uri, "train.epochs=2")
    message = str(e.value)
    assert str(ckpt) in message and str(previous_checkpoint(ckpt)) in message and "train.restart=true" in message
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} == before
    assert [r.info.run_id for r in runs_of(uri)] == [old_id] and runs_of(uri)[0].data.tags["status"] == "failed"
    run(tmp_path, uri, "train.epochs=2", "train.restart=true")
    new = [r for r in runs_of(uri) if r.info.run_id != old_id]
    assert len(new) == 1 and new[0].data.tags[tracking.RESTART_OF_TAG] == old_id
    result = only_result(tmp_path / "runs")
    assert result["status"] == "finished" and result["timings"]["resumed_from_epoch"] is None
    one_point_per_epoch(uri, new[0].info.run_id, result["epochs"])


@pytest.mark.slow  # trains a demo run in process
def test_asym_sync_of_a_run_that_started_over_does_not_mix_it_into_the_old_mlflow_run(tmp_path, monkeypatch):
    """A record that started from epoch 0 and never reached this store (it logged elsewhere) finds an unfinished
    MLflow run of its config hash there: asym-sync gives it its own run, linked to the old one (it used to finish
    the old run with the new record's summary over the old attempt's points)."""
    uri = sqlite(tmp_path)
    run(tmp_path, uri, output="old")
    old_id = crashed(uri)
    old_points = tracking.client(uri).get_metric_history(old_id, "train_loss")
    run(tmp_path, sqlite(tmp_path, "elsewhere"), output="new")
    monkeypatch.setattr(sys, "argv", ["asym-sync", str(tmp_path / "new"), "--tracking-uri", uri])
    sync.main()
    by_id = {r.info.run_id: r for r in runs_of(uri)}
    (new_id,) = set(by_id) - {old_id}
    assert by_id[new_id].data.tags[tracking.RESTART_OF_TAG] == old_id and by_id[new_id].data.tags["status"] == "finished"
    assert tracking.client(uri).get_metric_history(old_id, "train_loss") == old_points
    one_point_per_epoch(uri, new_id, only_result(tmp_path / "new")["epochs"])
