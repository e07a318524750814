"""Run groups: N lr multipliers of one model as one network, against the same runs trained alone."""
import subprocess

import pytest
import torch

from asym import data, tracking
from asym.group import GroupBatchManhattan
from asym.launcher import plan
from asym.optim import BatchManhattan
from asym.train import Protocol, RunSpec, train, train_run

pytestmark = pytest.mark.usefixtures("float64")
PROTO = Protocol(epochs=2, lr_steps=[1], bn_batches=3)
# sign-free updates (setting 0): a group must reproduce its members to rounding, for every feedback mode
SETTING0 = ["SGD", "uSF", "NuSF", "frSF", "frSF-p50", "RndF", "brSF", "brSF-p50", "BN", "uSF+BN", "RndF+BN"]


def as64(d: data.TensorData, n_train: int = 300, n_test: int = 200, flat: bool = False) -> data.TensorData:
    x_train, x_test = d.x_train[:n_train].double(), d.x_test[:n_test].double()
    if flat:  # the MLP (TIMIT) arch on digits' pixels
        x_train, x_test = x_train.flatten(1), x_test.flatten(1)
    return data.TensorData(d.name, "timit" if flat else d.arch, d.num_classes, x_train, d.y_train[:n_train],
                           x_test, d.y_test[:n_test])


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return data.load("digits", cache=tmp_path_factory.mktemp("cache"))


def train_group(runs, ds, group_dir, out_dirs, proto):
    return train(runs, ds, out_dirs, proto, checkpoint=group_dir / "checkpoint.pt")


def solo_and_group(runs, ds, tmp_path, proto=PROTO):
    solo = [train_run(r, ds, tmp_path / f"solo{k}", proto) for k, r in enumerate(runs)]
    group = train_group(runs, ds, tmp_path / "group", [tmp_path / f"member{k}" for k in range(len(runs))], proto)
    return solo, group


def assert_same_history(a: dict, b: dict, rtol=1e-9):
    assert a["status"] == b["status"]
    assert [r["epoch"] for r in a["epochs"]] == [r["epoch"] for r in b["epochs"]]
    for x, y in zip(a["epochs"], b["epochs"]):
        assert x["val_error"] == y["val_error"] and x.get("train_error") == y.get("train_error")
        if "train_loss" in x:
            assert y["train_loss"] == pytest.approx(x["train_loss"], rel=rtol)


@pytest.mark.parametrize("model", SETTING0)
def test_group_matches_members_trained_alone(model, digits, tmp_path):
    runs = [RunSpec(model, "digits", m) for m in (10, 1)]
    solo, group = solo_and_group(runs, as64(digits), tmp_path)
    for a, b in zip(solo, group):
        assert_same_history(a, b)


@pytest.mark.parametrize("arch", ["cifar", "timit"])
def test_group_matches_on_the_other_architectures(arch, digits, tmp_path):
    ds = as64(digits, flat=arch == "timit")
    if arch == "cifar":  # CIFAR's net (pad-right-bottom pooling, avg pools) on 3×32×32 digits
        up = lambda x: torch.nn.functional.interpolate(x, size=32).repeat(1, 3, 1, 1)
        ds = data.TensorData(ds.name, "cifar", 10, up(ds.x_train), ds.y_train, up(ds.x_test), ds.y_test)
    runs = [RunSpec("uSF+BN", "digits", m) for m in (10, 1)]
    solo, group = solo_and_group(runs, ds, tmp_path)
    for a, b in zip(solo, group):
        assert_same_history(a, b)


@pytest.mark.parametrize("setting", [0, 1, 2, 3])
def test_group_update_is_each_members_update(setting):
    """The stacked Batch Manhattan step equals each member's own step, bit for bit, every setting."""
    torch.manual_seed(0)
    n, lrs, shapes = 3, [0.5, 0.05, 0.005], [(4, 5), (6,)]
    members = [[torch.randn(s) for s in shapes] for _ in range(n)]
    grads = [[[torch.randn(s) for s in shapes] for _ in range(n)] for _ in range(3)]
    stacked = [torch.nn.Parameter(torch.cat([members[k][j] for k in range(n)])) for j in range(len(shapes))]
    alone = [[torch.nn.Parameter(w.clone()) for w in ws] for ws in members]
    group_opt = GroupBatchManhattan(stacked, lrs, setting=setting)
    opts = [BatchManhattan(ps, lr=lr, setting=setting) for ps, lr in zip(alone, lrs)]
    for step in grads:
        for j, p in enumerate(stacked):
            p.grad = torch.cat([step[k][j] for k in range(n)])
        for k, ps in enumerate(alone):
            for j, p in enumerate(ps):
                p.grad = step[k][j].clone()
        group_opt.step()
        for o in opts:
            o.step()
    for j, p in enumerate(stacked):
        assert torch.equal(p.detach(), torch.cat([alone[k][j].detach() for k in range(n)]))


def test_a_diverging_member_does_not_touch_the_others(digits, tmp_path):
    ds = as64(digits)
    runs = [RunSpec("SGD", "digits", 1e300), RunSpec("SGD", "digits", 1)]  # float64 overflows only here
    group = train_group(runs, ds, tmp_path / "g", [tmp_path / "a", tmp_path / "b"], PROTO)
    alone = train_run(runs[1], ds, tmp_path / "solo", PROTO)
    assert group[0]["status"] == "diverged" and group[0]["best_val_error"] is not None
    assert len(group[0]["epochs"]) < len(group[1]["epochs"])
    assert_same_history(alone, group[1])


def test_group_checkpoint_resume_is_identical(digits, tmp_path):
    """Interrupted after epoch 1 and resumed: every member's metrics equal the uninterrupted group's,
    also for BN+BM, whose sign updates amplify any difference."""
    ds, runs = as64(digits), [RunSpec("uSF+BN+BM", "digits", m) for m in (10, 1)]
    straight = train_group(runs, ds, tmp_path / "g1", [tmp_path / "s0", tmp_path / "s1"], PROTO)

    def stop_after_epoch_1(k, rec):  # a checkpoint of this protocol's epoch 1 (another protocol's is refused)
        if rec["epoch"] == 1:
            raise RuntimeError("stopped")
    with pytest.raises(RuntimeError, match="stopped"):
        train(runs, ds, [tmp_path / "r0", tmp_path / "r1"], PROTO, checkpoint=tmp_path / "g2" / "checkpoint.pt",
              on_epoch=stop_after_epoch_1)
    resumed = train_group(runs, ds, tmp_path / "g2", [tmp_path / "r0", tmp_path / "r1"], PROTO)
    assert resumed[0]["timings"]["resumed_from_epoch"] == 1
    for a, b in zip(straight, resumed):
        assert a["epochs"] == b["epochs"]


def test_members_must_differ_only_in_lr(digits, tmp_path):
    with pytest.raises(ValueError, match="differ only in lr_mult"):
        train_group([RunSpec("SGD", "digits", 1), RunSpec("BN", "digits", 1)], as64(digits), tmp_path,
                    [tmp_path / "a", tmp_path / "b"], PROTO)


def test_group_jobs_renumber_the_plan():
    jobs = [["model=SGD", "lr_mult=10"], ["model=SGD", "++lr_mult=1"], ["model=BN", "lr_mult=10"],
            ["model=BN", "+lr_mult=0.1"]]
    entries = [{"num": i, "run": {"lr_mult": m}} for i, m in enumerate([10.0, 1.0, 10.0, 0.1])]
    assert plan.group_jobs(jobs, entries, 1.0) == [["model=SGD", "lr_mults=[10,1]"], ["model=BN", "lr_mults=[10,0.1]"]]
    assert [e["num"] for e in entries] == [0, 0, 1, 1]


@pytest.mark.slow
def test_engine_group_sweep_tracks_every_member_and_skips_done_ones(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["asym-train", "-m", "model=SGD,uSF+BN", "lr_mult=10,1", "dataset=digits", "train=demo", "train.epochs=1",
            "engine=group", f"tracking.uri={uri}", f"output_root={tmp_path}/runs"]
    first = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stderr.count("run group of 2") == 2
    df = tracking.runs_frame(uri)
    assert len(df) == 4 and set(df["tags.status"]) == {"finished"} and set(df["status"]) == {"FINISHED"}
    c = tracking.client(uri)
    for run_id in df["run_id"]:
        assert [m.step for m in c.get_metric_history(run_id, "val_error")] == [0, 1]
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stderr.count("skip ") == 4 and len(tracking.runs_frame(uri)) == 4
