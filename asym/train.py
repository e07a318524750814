"""One run of the paper's protocol (Section 5, GUIDE items 4–8), with exact resume.

The pieces are kept apart so a later engine can train several runs as one batched network:
``Protocol`` (the schedule), ``RunSpec`` (what is trained), ``RunState`` (everything a checkpoint
holds), ``train_step`` (one mini-batch), ``evaluate``/``calibrate_batchnorm`` and ``train_run`` (the
per-epoch bookkeeping: metrics, divergence, checkpoint, result.json).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from . import __version__
from .data import TensorData
from .models import FREEZE_CHOICES, batchnorm_layers, build_network, parse_model
from .optim import MOMENTUM, WEIGHT_DECAY, BatchManhattan

PROCEDURES = ("standard", "large_batch")  # large_batch: uSF+BM's batch 100 for 3 epochs, then 500
EVAL_BATCH = 1000


@dataclass
class Protocol:
    """The paper's training schedule; tests and demos shrink ``epochs`` and ``lr_steps``."""

    epochs: int = 65
    lr_steps: list[int] = field(default_factory=lambda: [50, 60])  # ×0.1 after each of these epochs
    batch_size: int = 100
    base_lr: float = 5e-4
    momentum: float = MOMENTUM
    weight_decay: float = WEIGHT_DECAY
    bn_batches: int = 20        # training batches forwarded for BN test statistics (GUIDE item 4)
    bn_alpha: float = 0.05
    large_batch_size: int = 500
    large_batch_after: int = 3

    def lr(self, epoch: int, mult: float) -> float:
        """Learning rate of 1-based ``epoch``: 5e-4·mult, ×0.1 after each step epoch."""
        return self.base_lr * mult * 0.1 ** sum(epoch > s for s in self.lr_steps)

    def batch_size_at(self, epoch: int, procedure: str) -> int:
        if procedure == "large_batch" and epoch > self.large_batch_after:
            return self.large_batch_size
        return self.batch_size


@dataclass(frozen=True)
class RunSpec:
    """One point of the study: (model, dataset, lr multiplier[, freeze, procedure]) and its seed."""

    model: str
    dataset: str
    lr_mult: float
    freeze: str = "none"
    procedure: str = "standard"
    seed: int = 0

    def validate(self) -> "RunSpec":
        parse_model(self.model)
        if not (isinstance(self.lr_mult, (int, float)) and self.lr_mult > 0 and math.isfinite(self.lr_mult)):
            raise ValueError(f"lr_mult must be a positive number, got {self.lr_mult!r}")
        if self.freeze not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {self.freeze!r}")
        if self.procedure not in PROCEDURES:
            raise ValueError(f"procedure must be one of {', '.join(PROCEDURES)}, got {self.procedure!r}")
        return self


@dataclass
class TrainingState:
    """What a checkpoint holds: net, optimizer, data order, RNG and the bookkeeping fields a subclass names."""

    net: torch.nn.Module
    optimizer: BatchManhattan
    data_rng: torch.Generator
    epoch: int = 0                      # last completed epoch (0: only the untrained net evaluated)
    BOOKKEEPING: ClassVar[tuple[str, ...]] = ("epoch",)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "data_rng": self.data_rng.get_state(), "torch_rng": torch.get_rng_state(),
                **{k: getattr(self, k) for k in self.BOOKKEEPING}}

    def load_state_dict(self, d: dict) -> None:
        self.net.load_state_dict(d["net"])
        self.optimizer.load_state_dict(d["optimizer"])
        self.data_rng.set_state(d["data_rng"])
        torch.set_rng_state(d["torch_rng"])
        for k in self.BOOKKEEPING:
            setattr(self, k, d[k])

    def resume_from(self, path: Path, device) -> int | None:
        """Load the checkpoint at ``path`` if there is one; the epoch it resumes from, else None."""
        if not path.exists():
            return None
        self.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return self.epoch

    def save(self, path: Path) -> None:
        write_atomic(path, lambda p: torch.save(self.state_dict(), p))


@dataclass
class RunState(TrainingState):
    """Everything that must survive a kill: saved to ``checkpoint.pt`` after every epoch."""

    history: list[dict] = field(default_factory=list)
    status: str = "running"
    BOOKKEEPING: ClassVar[tuple[str, ...]] = ("epoch", "history", "status")


def new_state(run: RunSpec, proto: Protocol, data: TensorData, device) -> RunState:
    spec = parse_model(run.model)
    in_features = data.x_train.shape[1] if data.x_train.dim() == 2 else None
    net = build_network(data.arch, data.num_classes, spec, run.freeze, run.seed, in_features).to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = BatchManhattan(params, lr=proto.lr(1, run.lr_mult), momentum=proto.momentum,
                         weight_decay=proto.weight_decay, setting=spec.setting)
    rng = torch.Generator().manual_seed(run.seed)
    return RunState(net, opt, rng)


def train_step(net, optimizer, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """One mini-batch: forward, backward of the batch-mean loss, update. Returns (loss sum, errors)."""
    out = net(x)
    loss = F.cross_entropy(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach() * len(y), (out.argmax(1) != y).sum()


@torch.no_grad()
def calibrate_batchnorm(net, x_train, rng: torch.Generator, proto: Protocol) -> None:
    """GUIDE item 4: forward ``bn_batches`` training batches, EMA of batch mean/std from the first."""
    bns = batchnorm_layers(net)
    if not bns:
        return
    net.eval()  # eval: batchwise feedback must not redraw; the BN layers use batch statistics
    for bn in bns:
        bn.reset_statistics()
        bn.alpha, bn.calibrating = proto.bn_alpha, True
    order = torch.randperm(len(x_train), generator=rng).to(x_train.device)
    for i in range(proto.bn_batches):
        idx = order[i * proto.batch_size:(i + 1) * proto.batch_size]
        if len(idx) == 0:
            break
        net(x_train[idx])
    for bn in bns:
        bn.calibrating = False


@torch.no_grad()
def evaluate(net, x, y) -> float:
    """Error in percent on (x, y)."""
    net.eval()
    wrong = sum(int((net(x[i:i + EVAL_BATCH]).argmax(1) != y[i:i + EVAL_BATCH]).sum())
                for i in range(0, len(y), EVAL_BATCH))
    return 100.0 * wrong / len(y)


def run_epoch(state: RunState, data: TensorData, run: RunSpec, proto: Protocol) -> dict:
    """Train one epoch and measure it; does not touch the disk."""
    epoch = state.epoch + 1
    lr = proto.lr(epoch, run.lr_mult)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    bs = proto.batch_size_at(epoch, run.procedure)
    n = len(data.y_train)
    order = torch.randperm(n, generator=state.data_rng).to(data.x_train.device)
    state.net.train()
    loss_sum = torch.zeros((), device=data.x_train.device)
    wrong = torch.zeros((), dtype=torch.long, device=data.x_train.device)
    for i in range(0, n, bs):
        idx = order[i:i + bs]
        l, w = train_step(state.net, state.optimizer, data.x_train[idx], data.y_train[idx])
        loss_sum += l
        wrong += w
    train_loss = float(loss_sum) / n  # one device sync per epoch
    record = {"epoch": epoch, "train_loss": train_loss, "train_error": 100.0 * int(wrong) / n, "lr": lr,
              "batch_size": bs}
    if not math.isfinite(train_loss):
        record["val_error"] = None
        return record
    calibrate_batchnorm(state.net, data.x_train, state.data_rng, proto)
    record["val_error"] = evaluate(state.net, data.x_test, data.y_test)
    return record


def best_of(history: list[dict]) -> tuple[float | None, int | None]:
    scored = [(h["val_error"], h["epoch"]) for h in history if h.get("val_error") is not None]
    return min(scored) if scored else (None, None)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except Exception:
        return None


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(obj, indent=1, default=str)))


def make_result(run: RunSpec, proto: Protocol, state_history: list[dict], status: str, timings: dict,
                config: dict | None = None, error: str | None = None) -> dict:
    best, best_epoch = best_of(state_history)
    return {"run": asdict(run), "protocol": asdict(proto), "config": config or {}, "status": status,
            "best_val_error": best, "best_epoch": best_epoch, "epochs": state_history, "timings": timings,
            "error": error, "version": __version__, "git_commit": git_commit()}


class Progress:
    """A tqdm bar over epochs in an interactive terminal, plain log lines otherwise."""

    def __init__(self, total: int, start: int, title: str):
        self.bar = None
        self.title = title
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, desc=title, unit="ep", leave=False)

    def update(self, record: dict) -> None:
        msg = f"val {record['val_error']:.2f}%" if record.get("val_error") is not None else "diverged"
        if self.bar is not None:
            self.bar.set_postfix_str(msg)
            self.bar.update(1)
        else:
            print(f"[{self.title}] epoch {record['epoch']}: loss {record['train_loss']:.4g}, {msg}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train_run(run: RunSpec, data: TensorData, out_dir: str | Path, proto: Protocol | None = None,
              device: str | torch.device = "cpu", on_epoch: Callable[[dict], None] | None = None,
              config: dict | None = None, title: str | None = None) -> dict:
    """Train ``run`` on ``data``, resuming from ``out_dir/checkpoint.pt`` if present.

    After every epoch: checkpoint (atomic), ``on_epoch(record)``. At the end: ``result.json`` (atomic)
    and the result dict. A non-finite loss stops the run with status ``diverged`` and the best-so-far.
    ``on_epoch`` sees each epoch once, also across a resume (records before the resume are replayed
    only if the caller needs them: see ``result["epochs"]``).
    """
    run.validate()
    proto = proto or Protocol()
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoint.pt"
    t0 = time.time()
    timings = {"started": t0, "resumed_from_epoch": None}
    state, progress = None, None
    try:  # any failure, from a bad device to a corrupt checkpoint, leaves a "failed" result.json
        device = torch.device(device)
        torch.manual_seed(run.seed)
        data = data.to(device)
        state = new_state(run, proto, data, device)
        timings["resumed_from_epoch"] = state.resume_from(ckpt, device)
        progress = Progress(proto.epochs, state.epoch, title or f"{run.dataset} · {run.model} · lr×{run.lr_mult:g}")
        if not state.history:  # epoch 0: the untrained net counts (GUIDE item 7)
            calibrate_batchnorm(state.net, data.x_train, state.data_rng, proto)
            rec = {"epoch": 0, "val_error": evaluate(state.net, data.x_test, data.y_test), "lr": proto.lr(1, run.lr_mult)}
            state.history.append(rec)
            state.save(ckpt)
            if on_epoch:
                on_epoch(rec)
        while state.status == "running" and state.epoch < proto.epochs:
            rec = run_epoch(state, data, run, proto)
            state.epoch += 1
            state.history.append(rec)
            if rec["val_error"] is None:
                state.status = "diverged"
            state.save(ckpt)
            progress.update(rec)
            if on_epoch:
                on_epoch(rec)
        if state.status == "running":
            state.status = "finished"
        timings["seconds"] = time.time() - t0
        result = make_result(run, proto, state.history, state.status, timings, config)
    except Exception as e:
        timings["seconds"] = time.time() - t0
        history = state.history if state is not None else []
        write_json(out_dir / "result.json",
                   make_result(run, proto, history, "failed", timings, config, f"{type(e).__name__}: {e}"))
        raise
    finally:
        if progress is not None:
            progress.close()
    write_json(out_dir / "result.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m asym.train MODEL DATASET LR_MULT OUT_DIR [--epochs N]``: one run without Hydra."""
    import argparse
    from . import data as datasets
    ap = argparse.ArgumentParser(description="Train one run of the paper's protocol.")
    ap.add_argument("model"); ap.add_argument("dataset"); ap.add_argument("lr_mult", type=float); ap.add_argument("out_dir")
    ap.add_argument("--epochs", type=int, default=65); ap.add_argument("--lr-steps", type=int, nargs="*", default=[50, 60])
    ap.add_argument("--freeze", default="none"); ap.add_argument("--procedure", default="standard")
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--root", default="data")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        run = RunSpec(a.model, a.dataset, a.lr_mult, a.freeze, a.procedure, a.seed).validate()
        data = datasets.load(a.dataset, a.root, seed=a.seed)
    except (ValueError, datasets.DatasetMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = train_run(run, data, a.out_dir, Protocol(epochs=a.epochs, lr_steps=a.lr_steps))
    print(json.dumps({k: result[k] for k in ("status", "best_val_error", "best_epoch")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
