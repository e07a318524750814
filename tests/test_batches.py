"""Protocol decision 14: a last mini-batch of one joins the batch before it, for every model, in training, BN
calibration and run groups; batch sizes that cannot train are one line before anything runs."""
import os

import pytest
import torch

from asym import data
from asym.engine import Engine, calibrate_batchnorm
from asym.models import batchnorm_layers
from asym.protocol import MIN_BATCH, batch_bounds, check_batch_sizes
from asym.train import Protocol, RunSpec, train
from conftest import assert_one_error_line

BATCH = 8
PROTO = Protocol(epochs=1, lr_steps=[], batch_size=BATCH, bn_batches=50)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", cache=os.environ.get("ASYM_CACHE"))


def subset(d: data.TensorData, n: int) -> data.TensorData:
    return data.TensorData(d.name, d.arch, d.num_classes, d.x_train[:n], d.y_train[:n], d.x_test[:50], d.y_test[:50])


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 100, 500])
@pytest.mark.parametrize("n", [1, 2, 3, 99, 100, 101, 102, 199, 1257, 1501])
def test_batches_cover_each_example_once_and_none_is_too_small_for_bn(n, batch):
    """The cut is a partition of range(n); every batch has `batch` examples except the last (shorter, or one
    longer when n ≡ 1 mod batch); none has fewer than MIN_BATCH unless the whole pass is that small or batch is 1;
    where n mod batch ≠ 1, or batch is 1, it is exactly range(0, n, batch)'s slices (those numbers never change)."""
    bounds = batch_bounds(n, batch)
    assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
    sizes = [b - a for a, b in bounds]
    assert all(s == batch for s in sizes[:-1])
    if batch >= MIN_BATCH and n >= MIN_BATCH:
        assert min(sizes) >= MIN_BATCH
    if n % batch != 1 or n < batch or batch == 1:
        assert bounds == [(i, min(i + batch, n)) for i in range(0, n, batch)]
    else:
        assert sizes[-1] == batch + 1


def test_digits_at_the_paper_batch_is_unchanged():
    """Digits' 1,257 training images leave 57 at batch 100 and 257 at 500: the rule changes nothing there (the
    bitwise goldens of tests/test_engine.py stand)."""
    assert batch_bounds(1257, 100)[-1] == (1200, 1257) and len(batch_bounds(1257, 100)) == 13
    assert batch_bounds(1257, 500)[-1] == (1000, 1257)
    assert batch_bounds(201, 100) == [(0, 100), (100, 201)]


@pytest.mark.parametrize("model", ["SGD", "uSF+BN+BM", "BN"])
@pytest.mark.parametrize("mults", [[10], [10, 1]], ids=["single", "group"])
@pytest.mark.parametrize("rest", [0, 1, 2])
def test_every_dataset_size_trains(digits, tmp_path, model, mults, rest):
    """n ≡ 0, 1, 2 (mod batch) for BN and non-BN models, a run and a run group: each trains its epoch, sees every
    example once (the epoch's error is a count over n), and calibrates BN on the same cut. Fails on main for BN
    models with n ≡ 1: ``Expected more than 1 value per channel when training``."""
    n = 4 * BATCH + rest
    runs = [RunSpec(model, "digits", m) for m in mults]
    results = train(runs, subset(digits, n), [tmp_path / f"m{k}" for k in range(len(runs))], PROTO,
                    checkpoint=tmp_path / "checkpoint.pt")
    for r in results:
        assert r["status"] == "finished", r["error"]
        epoch = r["epochs"][1]
        wrong = epoch["train_error"] * n / 100
        assert abs(wrong - round(wrong)) < 1e-6  # a whole number of the n examples


@pytest.mark.parametrize("rest", [0, 1, 2])
def test_bn_calibration_forwards_the_same_cut(digits, rest):
    """Calibration forwards the first bn_batches batches of the training cut: with n ≡ 1 the last one holds
    batch + 1 examples (main sliced a batch of one and failed)."""
    n = 3 * BATCH + rest
    d = subset(digits, n)
    engine = Engine([RunSpec("uSF+BN", "digits", 1)], PROTO, d, torch.device("cpu"))
    seen = []
    handle = engine.net[0].register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    calibrate_batchnorm(engine.net, d.x_train, torch.Generator().manual_seed(0), PROTO)
    handle.remove()
    assert seen == [b - a for a, b in batch_bounds(n, BATCH)] and sum(seen) == n
    assert all(int(bn.calibrated_batches) == len(seen) for bn in batchnorm_layers(engine.net))


def test_too_large_or_too_small_batch_sizes_are_refused_before_anything_is_written(digits, tmp_path):
    d = subset(digits, 30)
    for proto, runs, message in [
            (Protocol(epochs=1, batch_size=31), [RunSpec("SGD", "digits", 1)], "train.batch_size=31 is larger than"),
            (Protocol(epochs=2, large_batch_size=40, large_batch_after=1, batch_size=10),
             [RunSpec("uSF+BM", "digits", 1, procedure="large_batch")], "train.large_batch_size=40 is larger than"),
            (Protocol(epochs=1, batch_size=1), [RunSpec("BN", "digits", 1)], "train.batch_size=1 cannot train BN")]:
        out = tmp_path / "never"
        with pytest.raises(ValueError, match=message):
            train(runs, d, [out], proto)
        assert not out.exists()
    # fits: the split itself, a batch of one without BN, a large batch the run never reaches
    check_batch_sizes(Protocol(batch_size=30), [RunSpec("BN", "digits", 1)], 30, "digits")
    check_batch_sizes(Protocol(batch_size=1), [RunSpec("SGD", "digits", 1)], 30, "digits")
    check_batch_sizes(Protocol(epochs=3, large_batch_size=500, large_batch_after=3, batch_size=10),
                      [RunSpec("uSF+BM", "digits", 1, procedure="large_batch")], 30, "digits")


def test_the_holdout_counts_against_the_batch_size(digits, tmp_path):
    """Under train.select_on=val the training split is what the holdout leaves."""
    d = subset(digits, 100)
    with pytest.raises(ValueError, match=r"larger than the training split of digits \(90 examples\)"):
        train([RunSpec("SGD", "digits", 1)], d, [tmp_path / "r"], Protocol(epochs=1, batch_size=95, select_on="val"))
    assert not (tmp_path / "r").exists()


def test_asym_train_refuses_a_batch_larger_than_the_training_set_before_any_run_exists(tmp_path, monkeypatch, capsys):
    """The composed config, in process: one error line (UsageError → exit 2) once the dataset is loaded, before a
    run directory, a checkpoint or an MLflow run exists. Digits has 1,257 training images."""
    from hydra import compose, initialize_config_module

    from asym import cli, tracking
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with initialize_config_module("asym.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=BN", "dataset=digits", "train=demo", "train.batch_size=2000",
                                           f"tracking.uri={uri}", f"output_root={tmp_path}/runs"])
    with pytest.raises(cli.UsageError, match=r"train.batch_size=2000 is larger than the training split of digits "
                                             r"\(1257 examples\)"):
        cli.run_one(cfg)
    assert not (tmp_path / "runs").exists()
    df = tracking.runs_frame(uri)
    assert df is None or df.empty


@pytest.mark.parametrize("dataset,args,message", [
    ("digits", ["train.batch_size=2000"], "train.batch_size=2000 is larger than the training split of digits (1257"),
    ("npz", ["train.batch_size=150"], "train.batch_size=150 is larger than the training split of npz:"),
    ("digits", ["train.batch_size=1"], "train.batch_size=1 cannot train BN: batch normalisation needs ≥ 2"),
    ("digits", ["train.large_batch_size=5000", "+model=uSF+BM", "+procedure=large_batch"],
     "train.large_batch_size=5000 is larger than the training split of digits"),
])
def test_a_sweep_refuses_a_batch_its_data_cannot_fill_before_anything_runs(asym_train, tmp_path, dataset, args,
                                                                           message):
    """The sweep preflight checks every batch size against each dataset's prepared training split: one error line,
    no sweep directory, no MLflow run (it used to write the plan and fail every job, each with its own line)."""
    from conftest import tiny_npz  # noqa: I001
    if dataset == "npz":
        dataset = f"npz:{tiny_npz(tmp_path / 'data' / 'mine.npz')}"  # 120 training rows
    extra = [a.removeprefix("+") for a in args if a.startswith("+")]
    sizes = [a for a in args if not a.startswith("+")]
    models = [e for e in extra if e.startswith("model=")] or ["model=SGD,BN"]
    res = asym_train("-m", *models, *[e for e in extra if not e.startswith("model=")], f"dataset={dataset}",
                     "train=demo", *sizes, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "output_root=runs")
    assert_one_error_line(res, message, tmp_path, keep=("data", "cache"))
