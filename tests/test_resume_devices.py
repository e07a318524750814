"""Issue 13 item 1: a checkpoint resumes on any device — written on a GPU, read on a CPU, and the other way.

``Generator.set_state``/``torch.set_rng_state`` take only CPU byte tensors, whatever device the generator is
on. A checkpoint loaded with ``map_location=<the net's device>`` (asym before the one engine) moved the data
order's, torch's and each feedback strategy's RNG state off the CPU, so every resume on a GPU node failed.
This machine has no GPU: the ``meta`` device stands for "a device that is not the CPU" (its tensors, like
CUDA ones, cannot be RNG states), and a GPU-written checkpoint is one whose feedback generator states are
CUDA generator states (``CUDAGeneratorImpl``: 16 bytes, Philox seed and offset). A test that needs a real
GPU runs where one is.
"""
import copy
import os
import shutil

import pytest
import torch

from asym import data
from asym.engine import Engine
from asym.feedback import make_feedback
from asym.train import Checkpoint, Protocol, RunSpec, train

SHORT = Protocol(epochs=2, lr_steps=[2])
# every kind of feedback state: none (BP, uSF), drawn once (frSF, RndF), redrawn every batch (brSF), with BN and BM
MODELS = ["SGD", "uSF+BN+BM", "brSF+BN+BM", "frSF-p50+BN", "RndF+BM"]


@pytest.fixture(scope="module")
def digits():
    """A few batches of digits: a resume is about state, not accuracy."""
    d = data.load("digits", cache=os.environ.get("ASYM_CACHE"))
    return data.TensorData(d.name, d.arch, d.num_classes, d.x_train[:300], d.y_train[:300], d.x_test[:200],
                           d.y_test[:200])


def stop_after(epoch):
    def on_epoch(k, rec):
        if rec["epoch"] == epoch:
            raise RuntimeError("stopped here by the test")
    return on_epoch


def members(model, n):
    return [RunSpec(model, "digits", m) for m in (10, 1, 100)[:n]]


def dirs(root, n):
    return [root / f"m{k}" for k in range(n)]


@pytest.mark.parametrize("model,n", [(m, 1) for m in MODELS] + [("brSF+BM", 2)])  # a group's BN cannot be widened on meta
def test_a_checkpoint_resumes_on_a_device_that_is_not_the_cpu(digits, tmp_path, model, n):
    """A finished job's checkpoint, read again by a job on a non-CPU device: it loads (RNG states stay on the
    CPU), and the job reports the epochs it had. Fails on asym before the one engine (e1bf69d, for n = 1):
    ``torch.load(map_location=device)`` made the RNG states meta tensors → TypeError."""
    runs = members(model, n)
    first = train(runs, digits, dirs(tmp_path, n), SHORT, checkpoint=tmp_path / "checkpoint.pt")
    again = train(runs, digits, dirs(tmp_path, n), SHORT, device="meta", checkpoint=tmp_path / "checkpoint.pt")
    assert [r["epochs"] for r in again] == [r["epochs"] for r in first]
    assert [r["status"] for r in again] == ["finished"] * n
    assert all(r["timings"]["resumed_from_epoch"] == SHORT.epochs for r in again)


@pytest.mark.parametrize("model,n", [("uSF+BN+BM", 1), ("brSF+BN+BM", 1), ("frSF-p50+BM", 2)])
def test_resume_puts_tensors_on_the_nets_device_and_rng_states_on_the_cpu(digits, tmp_path, model, n):
    runs = members(model, n)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(RuntimeError, match="stopped here"):
        train(runs, digits, dirs(tmp_path, n), SHORT, checkpoint=path, on_epoch=stop_after(1))
    saved = Checkpoint.read(path)
    engine = Engine(runs, SHORT, digits.to("meta"), torch.device("meta"))
    assert Checkpoint(engine, path).resume() == 1
    assert {t.device.type for t in engine.net.state_dict().values() if isinstance(t, torch.Tensor)} == {"meta"}
    opt = [t for s in engine.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    assert opt and {t.device.type for t in opt} == {"meta"}
    assert torch.equal(engine.data_rng.get_state(), saved["data_rng"])
    assert torch.equal(torch.get_rng_state(), saved["torch_rng"])
    states = [m.get_extra_state() for m in engine.net.modules() if hasattr(m, "seed") and hasattr(m, "_gen")]
    assert states and all(s["rng"] is None or s["rng"].device.type == "cpu" for s in states)


def cuda_generator_state(seed: int, offset: int) -> torch.Tensor:
    """What ``torch.Generator('cuda').get_state()`` returns: 16 CPU bytes, the Philox seed and offset."""
    return torch.tensor([seed, offset], dtype=torch.int64).view(torch.uint8)


def as_written_on_a_gpu(path):
    """The checkpoint at ``path`` as a GPU job writes it: each feedback generator is a CUDA one."""
    d = torch.load(path, weights_only=True)
    for key, state in d["net"].items():
        if key.endswith("_extra_state"):
            d["net"][key] = {**state, "rng": cuda_generator_state(state["seed"], 4 * 1024), "rng_device": "cuda"}
    torch.save(d, path)


@pytest.mark.parametrize("model,n", [("brSF+BN+BM", 1), ("brSF-p50", 2), ("frSF+BN", 1)])
def test_a_gpu_written_checkpoint_resumes_on_a_cpu(digits, tmp_path, model, n):
    """Fails on main before this fix: loading a CUDA generator state created a CUDA generator at once
    (an error on a machine without a GPU). Now the state waits for the first draw; on a CPU the stream
    continues from a seed made of that state, the same one every time the checkpoint is resumed."""
    runs = members(model, n)
    whole = train(runs, digits, dirs(tmp_path / "whole", n), SHORT, checkpoint=tmp_path / "whole.pt")
    with pytest.raises(RuntimeError, match="stopped here"):
        train(runs, digits, dirs(tmp_path / "a", n), SHORT, checkpoint=tmp_path / "a.pt", on_epoch=stop_after(1))
    as_written_on_a_gpu(tmp_path / "a.pt")
    shutil.copy(tmp_path / "a.pt", tmp_path / "b.pt")
    a = train(runs, digits, dirs(tmp_path / "a", n), SHORT, checkpoint=tmp_path / "a.pt")
    b = train(runs, digits, dirs(tmp_path / "b", n), SHORT, checkpoint=tmp_path / "b.pt")
    assert [r["status"] for r in a] == ["finished"] * n and all(r["timings"]["resumed_from_epoch"] == 1 for r in a)
    assert [r["epochs"][:2] for r in a] == [r["epochs"][:2] for r in whole]  # the epochs before the checkpoint
    assert [r["epochs"] for r in a] == [r["epochs"] for r in b]              # reproducible
    assert all([h["epoch"] for h in r["epochs"]] == list(range(SHORT.epochs + 1)) for r in a)


@pytest.mark.parametrize("mode", ["brsf", "brsf-p25"])
def test_a_generator_state_goes_back_to_its_own_device_type(mode):
    """A CPU state continues the CPU stream exactly; a state from another device type does not restart the
    seed's stream (that would replay the first draws) but one seeded from it, deterministically."""
    fb = make_feedback(mode, (6, 5), seed=3)
    fb.train()
    w = torch.randn(6, 5)
    fb(w)
    saved = copy.deepcopy(fb.get_extra_state())
    expected = fb(w)
    resumed = make_feedback(mode, (6, 5), seed=3).train()
    resumed.set_extra_state(saved)
    assert resumed.get_extra_state()["rng_device"] == "cpu" and torch.equal(resumed(w), expected)

    cuda = {"seed": 3, "rng": cuda_generator_state(3, 0), "rng_device": "cuda"}
    draws = []
    for _ in range(2):
        other = make_feedback(mode, (6, 5), seed=3).train()
        other.set_extra_state(cuda)
        again = other.get_extra_state()  # saved again before a draw: passed on unchanged, as CUDA's
        assert again["rng_device"] == "cuda" and torch.equal(again["rng"], cuda["rng"])
        draws.append(other(w))
    fresh = make_feedback(mode, (6, 5), seed=3).train()
    fresh._gen = None  # the seed's own stream from its start
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], fresh(w))


@pytest.mark.cuda  # run by benchmarks/device_check.py
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False); "
                    "run python benchmarks/device_check.py on a GPU machine")
@pytest.mark.parametrize("write,read", [("cuda", "cpu"), ("cpu", "cuda"), ("cuda", "cuda")])
def test_a_checkpoint_written_on_one_device_resumes_on_another(digits, tmp_path, write, read):
    """A checkpoint of epoch 1 resumes on the other device type (and twice the same way); on the device that
    wrote it, the resumed run equals an uninterrupted one epoch for epoch."""
    runs = members("brSF+BN+BM", 1)
    results = []
    for attempt in ("a", "b"):
        with pytest.raises(RuntimeError, match="stopped here"):
            train(runs, digits, [tmp_path / attempt], SHORT, device=write, on_epoch=stop_after(1))
        results.append(train(runs, digits, [tmp_path / attempt], SHORT, device=read)[0])
    assert all(r["status"] == "finished" and r["timings"]["resumed_from_epoch"] == 1 for r in results)
    assert results[0]["epochs"] == results[1]["epochs"], "two resumes of one checkpoint differ"
    if write == read:
        whole = train(runs, digits, [tmp_path / "whole"], SHORT, device=read)[0]
        assert results[0]["epochs"] == whole["epochs"]
