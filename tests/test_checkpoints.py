"""Checkpoints that can be trusted: the last two good ones are kept; a damaged newest falls back to the previous
with one warning; none usable, another run's or another protocol's is one error naming the files and the choice,
with nothing overwritten. Each for a run (N = 1) and a run group (N = 2)."""
import os
from dataclasses import replace

import pytest
import torch

from asym import data
from asym.train import Checkpoint, CheckpointError, Protocol, RunSpec, previous_checkpoint, train

PROTO = Protocol(epochs=3, lr_steps=[2], bn_batches=3)
GROUPS = {"single": [10], "group": [10, 1]}


@pytest.fixture(scope="module")
def digits():
    d = data.load("digits", cache=os.environ.get("ASYM_CACHE"))
    return data.TensorData(d.name, d.arch, d.num_classes, d.x_train[:200], d.y_train[:200], d.x_test[:100],
                           d.y_test[:100])


def job(mults, model="uSF+BN+BM"):
    return [RunSpec(model, "digits", m) for m in mults]


def dirs(root, n):
    return [root / f"m{k}" for k in range(n)]


def stop_after(epoch):
    def on_epoch(k, rec):
        if rec["epoch"] == epoch:
            raise RuntimeError("stopped here by the test")
    return on_epoch


def interrupted(digits, root, mults, proto=PROTO, model="uSF+BN+BM"):
    """A job stopped after epoch 2 of 3: checkpoint.pt holds epoch 2, checkpoint.prev.pt epoch 1."""
    runs = job(mults, model)
    with pytest.raises(RuntimeError, match="stopped here"):
        train(runs, digits, dirs(root, len(runs)), proto, checkpoint=root / "checkpoint.pt", on_epoch=stop_after(2))
    return runs, root / "checkpoint.pt"


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path):
    path.write_bytes(b"")


DAMAGE = {"truncated": truncate, "zero_byte": empty}


def snapshot(root) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    """Each job trained without interruption."""
    return {name: train(job(m), digits, dirs(tmp_path_factory.mktemp(name), len(m)), PROTO,
                        checkpoint=tmp_path_factory.mktemp(name + "c") / "checkpoint.pt")
            for name, m in GROUPS.items()}


@pytest.mark.parametrize("group", list(GROUPS))
def test_the_last_two_good_checkpoints_are_kept(digits, tmp_path, group):
    runs, path = interrupted(digits, tmp_path, GROUPS[group])
    assert Checkpoint.read(path)["epoch"] == 2 and Checkpoint.read(previous_checkpoint(path))["epoch"] == 1
    assert previous_checkpoint(path).name == "checkpoint.prev.pt"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(digits, tmp_path, reference, capfd, group,
                                                                    damage):
    """One warning line naming the damaged file and the one used; the resumed job equals the uninterrupted one.
    Fails on main: the rerun ends in ``PytorchStreamReader failed reading zip archive`` / ``EOFError``."""
    runs, path = interrupted(digits, tmp_path, GROUPS[group])
    DAMAGE[damage](path)
    capfd.readouterr()
    results = train(runs, digits, dirs(tmp_path, len(runs)), PROTO, checkpoint=path)
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0] and str(previous_checkpoint(path)) in warnings[0] and "(epoch 1)" in warnings[0]
    for got, want in zip(results, reference[group]):
        assert got["status"] == "finished" and got["timings"]["resumed_from_epoch"] == 1
        assert got["epochs"] == want["epochs"]
    assert Checkpoint.read(path)["epoch"] == 3 and Checkpoint.read(previous_checkpoint(path))["epoch"] == 2


def refused(digits, root, runs, proto, path, *expected):
    """The job is refused with one line naming ``expected``; nothing under ``root`` changed."""
    before = snapshot(root)
    with pytest.raises(CheckpointError) as e:
        train(runs, digits, dirs(root, len(runs)), proto, checkpoint=path)
    message = str(e.value)
    assert "\n" not in message and "train.restart=true" in message and "move them away" in message
    for text in expected:
        assert text in message, message
    assert snapshot(root) == before
    return message


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_no_usable_checkpoint_is_one_error_naming_the_files_and_nothing_is_overwritten(digits, tmp_path, group,
                                                                                       damage):
    runs, path = interrupted(digits, tmp_path, GROUPS[group])
    DAMAGE[damage](path)
    truncate(previous_checkpoint(path))
    refused(digits, tmp_path, runs, PROTO, path, str(path), str(previous_checkpoint(path)), "damaged")


@pytest.mark.parametrize("group", list(GROUPS))
def test_another_runs_checkpoint_is_refused(digits, tmp_path, group):
    """The checkpoint records its runs: a job of other runs (another lr multiplier, another model) finding it is
    refused with the difference in words. Fails on main: it loaded the weights silently (same network) or failed
    with a state-dict trace."""
    runs, path = interrupted(digits, tmp_path, GROUPS[group])
    other = [replace(r, lr_mult=r.lr_mult * 100) for r in runs]
    message = refused(digits, tmp_path, other, PROTO, path, str(path), "belongs to other runs")
    assert "lr×10 there" in message or "lr×10;" in message
    refused(digits, tmp_path, job(GROUPS[group], "BN+BM"), PROTO, path, "BN+BM on digits")


@pytest.mark.parametrize("group", list(GROUPS))
def test_another_protocols_checkpoint_is_refused(digits, tmp_path, group):
    runs, path = interrupted(digits, tmp_path, GROUPS[group])
    refused(digits, tmp_path, runs, replace(PROTO, epochs=4), path, "another protocol", "train.epochs: 3 there, 4 here")
    refused(digits, tmp_path, runs, replace(PROTO, batch_size=50), path, "train.batch_size: 100 there, 50 here")


@pytest.mark.parametrize("group", list(GROUPS))
def test_a_wrong_newest_checkpoint_is_refused_even_with_a_good_previous(digits, tmp_path, group):
    """Another job's file in this job's place is not passed over as damaged: the directory is not this job's."""
    runs, path = interrupted(digits, tmp_path, GROUPS[group])
    other, _ = interrupted(digits, tmp_path / "other", GROUPS[group], model="SGD")
    path.write_bytes((tmp_path / "other" / "checkpoint.pt").read_bytes())
    refused(digits, tmp_path, runs, PROTO, path, str(path), "SGD on digits")


@pytest.mark.parametrize("group", list(GROUPS))
def test_restart_starts_over(digits, tmp_path, reference, group):
    runs, path = interrupted(digits, tmp_path, GROUPS[group])
    empty(path)
    empty(previous_checkpoint(path))
    results = train(runs, digits, dirs(tmp_path, len(runs)), PROTO, checkpoint=path, restart=True)
    for got, want in zip(results, reference[group]):
        assert got["timings"]["resumed_from_epoch"] is None and got["epochs"] == want["epochs"]


def test_a_checkpoint_that_does_not_read_back_is_never_rotated_in(digits, tmp_path, monkeypatch):
    """Write, verify, then rotate: a save whose file does not load back raises before anything is renamed, so the
    checkpoints already there stay as they were."""
    runs, path = interrupted(digits, tmp_path, [10])
    before = snapshot(tmp_path)
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (real_save(obj, f), truncate(__import__("pathlib").Path(f))))
    with pytest.raises(Exception):
        train(runs, digits, dirs(tmp_path, 1), PROTO, checkpoint=path)
    assert {p: b for p, b in snapshot(tmp_path).items() if "checkpoint" in p.name} == \
        {p: b for p, b in before.items() if "checkpoint" in p.name}


def test_restart_is_an_execution_option_outside_the_protocol_hash():
    from dataclasses import asdict

    from asym.config import TrainConf
    from asym.tracking import protocol_hash
    assert "restart" not in asdict(TrainConf(restart=True).protocol())
    assert protocol_hash(asdict(TrainConf(restart=True).protocol())) == protocol_hash(asdict(TrainConf().protocol()))
