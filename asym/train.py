"""The paper's protocol loop (Section 5; protocol decisions 4–8 in docs/protocol.md): one job of N ≥ 1 runs, with
exact resume.

``train`` reads as the protocol: the untrained net is evaluated as epoch 0; each epoch sets every
member's learning rate, trains on one ``randperm`` of the training split in mini-batches (uSF+BM's
large-batch procedure switches batch size), calibrates the BN test statistics, evaluates, and saves a
checkpoint. A member whose loss is not finite stops alone with its best-so-far (``diverged``). Every
member gets a ``result.json``, also when the job fails. The network work is the ``Engine``'s.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from . import __version__
from .data import TensorData
from .engine import Engine, calibrate_batchnorm  # noqa: F401  (calibrate_batchnorm: part of this module's API)
from .files import write_atomic, write_json
from .protocol import PROCEDURES, Protocol, RunSpec  # noqa: F401  (re-exported: the trainer's vocabulary)

RUNNING, FINISHED, DIVERGED, FAILED = "running", "finished", "diverged", "failed"
INTERRUPTED = "interrupted"  # stopped by SIGINT/SIGTERM; the checkpoint of its last finished epoch resumes it
BEST_ERROR, BEST_EPOCH = "best_val_error", "best_epoch"  # a run's number (protocol decision 7), in result.json, MLflow
# With train.select_on=val: the per-epoch error on the held-out part of the training split, and the run's number
# chosen on it (the epoch of least holdout error, that error, and the test error at that epoch)
HOLDOUT_ERROR = "holdout_error"
SELECTED_EPOCH, SELECTED_HOLDOUT_ERROR, SELECTED_ERROR = "selected_epoch", "selected_holdout_error", "selected_error"


def run_epoch(engine: Engine, data: TensorData, runs: list[RunSpec], proto: Protocol, epoch: int) -> list[dict]:
    """Train 1-based ``epoch`` and measure it; one record per member (``val_error`` None where the loss is not
    finite). Does not touch the disk."""
    lrs = [proto.lr(epoch, r.lr_mult) for r in runs]
    engine.set_lrs(lrs)
    bs = proto.batch_size_at(epoch, runs[0].procedure)
    size = len(data.y_train)
    order = torch.randperm(size, generator=engine.data_rng).to(data.x_train.device)
    engine.net.train()
    loss_sum = torch.zeros(engine.n, device=data.x_train.device, dtype=data.x_train.dtype)
    wrong = torch.zeros(engine.n, dtype=torch.long, device=data.x_train.device)
    for i in range(0, size, bs):
        idx = order[i:i + bs]
        loss, err = engine.train_step(data.x_train[idx], data.y_train[idx])
        loss_sum += loss
        wrong += err
    train_loss, train_wrong = loss_sum.tolist(), wrong.tolist()  # one device sync per epoch
    records = [{"epoch": epoch, "train_loss": train_loss[k] / size, "train_error": 100.0 * train_wrong[k] / size,
                "lr": lrs[k], "batch_size": bs} for k in range(engine.n)]
    finite = [math.isfinite(r["train_loss"]) for r in records]
    measured = {}
    if any(finite):
        engine.calibrate_batchnorm(data.x_train, proto)
        measured = measure(engine, data)
    for k, rec in enumerate(records):
        rec["val_error"] = None  # diverged: no error (a member whose loss is not finite)
        if finite[k]:
            rec.update({key: errors[k] for key, errors in measured.items()})
    return records


def measure(engine: Engine, data: TensorData) -> dict[str, list[float]]:
    """Every member's error (%) on the test split (``val_error``, the number the paper reports) and, when the
    data has a holdout (``train.select_on=val``), on the holdout (``holdout_error``, the one selection reads)."""
    out = {"val_error": engine.evaluate(data.x_test, data.y_test)}
    if data.x_holdout is not None:
        out[HOLDOUT_ERROR] = engine.evaluate(data.x_holdout, data.y_holdout)
    return out


def best_of(history: list[dict]) -> tuple[float | None, int | None]:
    """(best val_error, its epoch) over ``history``: the paper's number for a run (protocol decision 7 in
    docs/protocol.md)."""
    scored = [(h["val_error"], h["epoch"]) for h in history if h.get("val_error") is not None]
    return min(scored) if scored else (None, None)


def selected_of(history: list[dict], select_on: str) -> dict:
    """The run's number as chosen by ``select_on`` (``train.select_on``), as ``result.json`` keys.

    ``val``: the epoch of least ``holdout_error`` (epoch 0 included, the earliest on a tie), that error, and
    the test error (``val_error``) at that epoch — the test split chooses nothing. ``test`` (the paper): the
    epoch of least test error, ``best_epoch``/``best_val_error`` again, and no holdout error."""
    if select_on == "test":
        best, epoch = best_of(history)
        return {SELECTED_EPOCH: epoch, SELECTED_HOLDOUT_ERROR: None, SELECTED_ERROR: best}
    scored = [(h[HOLDOUT_ERROR], h["epoch"]) for h in history if h.get(HOLDOUT_ERROR) is not None]
    if not scored:
        return {SELECTED_EPOCH: None, SELECTED_HOLDOUT_ERROR: None, SELECTED_ERROR: None}
    held, epoch = min(scored)
    test = next(h["val_error"] for h in history if h["epoch"] == epoch)
    return {SELECTED_EPOCH: epoch, SELECTED_HOLDOUT_ERROR: held, SELECTED_ERROR: test}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except Exception:
        return None


def make_result(run: RunSpec, proto: Protocol, history: list[dict], status: str, timings: dict,
                config: dict | None = None, error: str | None = None, holdout: dict | None = None,
                dataset: dict | None = None) -> dict:
    """A run's record, as written to its ``result.json``; ``holdout``: what ``TensorData.hold_out`` recorded;
    ``dataset``: what ``asym.data.load`` recorded (``TensorData.record``: identity, test∩train, duplicates)."""
    best, best_epoch = best_of(history)
    return {"run": asdict(run), "protocol": asdict(proto), "config": config or {}, "status": status,
            BEST_ERROR: best, BEST_EPOCH: best_epoch, "select_on": proto.select_on,
            **selected_of(history, proto.select_on), **({"holdout": holdout} if holdout else {}),
            **({"dataset": dataset} if dataset else {}),
            "epochs": history, "timings": timings, "error": error, "version": __version__, "git_commit": git_commit()}


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM (``scancel``, a time limit) arrived during a job: stop, keep the last epoch.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` records it as a failure."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # SIGUSR2 (preemption) stays submitit's: it requeues the job


class StopSignals:
    """While active, SIGINT/SIGTERM raise ``Interrupted`` in the main thread — at once, except inside
    ``deferred()`` (an epoch being committed: checkpoint and tracking), where they wait for its end."""

    def __init__(self):
        self.deferring, self.pending, self.previous = False, None, {}

    def _handle(self, signum, frame):
        if self.deferring:
            self.pending = signum
        else:
            raise Interrupted(signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def deferred(self):
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending is not None:
            raise Interrupted(self.pending)


class Checkpoint:
    """What survives a kill, saved after every epoch: the engine and each member's history and status."""

    def __init__(self, engine: Engine, path: Path):
        self.engine, self.path = engine, path
        self.epoch = 0                                   # last completed epoch (0: only the untrained net)
        self.histories: list[list[dict]] = [[] for _ in range(engine.n)]
        self.statuses = [RUNNING] * engine.n

    def save(self) -> None:
        state = {**self.engine.state_dict(), "epoch": self.epoch, "histories": self.histories,
                 "statuses": self.statuses}
        write_atomic(self.path, lambda p: torch.save(state, p))

    @staticmethod
    def read(path: Path) -> dict | None:
        """The checkpoint at ``path`` loaded to the CPU, or None if there is none."""
        if not path.exists():
            return None
        d = torch.load(path, map_location="cpu", weights_only=True)
        if "history" in d:  # a single run's checkpoint from asym 0.1.0 (before the one engine)
            d["histories"], d["statuses"] = [d.pop("history")], [d.pop("status")]
        return d

    def resume(self) -> int | None:
        """Load the checkpoint if there is one; the epoch it resumes from, else None.

        Loaded to the CPU first: RNG states must be CPU byte tensors, whatever device wrote them.
        """
        d = self.read(self.path)
        if d is None:
            return None
        self.engine.load_state_dict(d)
        self.epoch, self.histories, self.statuses = d["epoch"], d["histories"], d["statuses"]
        return self.epoch


class Progress:
    """A tqdm bar over a job's epochs in an interactive terminal, one plain line per epoch otherwise."""

    def __init__(self, total: int, start: int, title: str):
        self.bar, self.title = None, title
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, desc=title, unit="ep", leave=False)
        if start:
            print(f"[{title}] resuming after epoch {start} of {total} (its checkpoint)", flush=True)

    def update(self, epoch: int, records: list[dict]) -> None:
        vals = ", ".join(f"{r['val_error']:.2f}%" if r.get("val_error") is not None else "diverged" for r in records)
        if self.bar is not None:
            self.bar.set_postfix_str(f"val {vals}")
            self.bar.update(1)
        else:
            losses = ", ".join(f"{r['train_loss']:.4g}" for r in records)
            print(f"[{self.title}] epoch {epoch}: loss {losses}, val {vals}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(runs: list[RunSpec], data: TensorData, out_dirs: list[str | Path], proto: Protocol | None = None,
          device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
          on_epoch: Callable[[int, dict], None] | None = None, config: dict | None = None,
          title: str | None = None, compile: bool = False) -> list[dict]:
    """Train ``runs`` (N ≥ 1, differing only in ``lr_mult``) as one job; their results in member order.

    Resumes from ``checkpoint`` (default ``out_dirs[0]/checkpoint.pt``, right for N = 1). After every epoch:
    the checkpoint (atomic), then ``on_epoch(k, record)`` for each member k that trained it (each epoch once,
    also across a resume). At the end, or when anything raises, each member's ``result.json`` (atomic) in
    ``out_dirs[k]``, with every epoch it finished. Raises ValueError for runs that cannot share a job.
    SIGINT/SIGTERM raise ``Interrupted`` (status ``interrupted``; the epoch in progress is dropped, the
    checkpoint of the last finished one is kept, and calling ``train`` again resumes from it).
    ``compile``: train through ``torch.compile`` (``Engine``; an execution option, not part of the protocol).
    """
    for r in runs:
        r.validate()
    proto, n = proto or Protocol(), len(runs)
    out_dirs = [Path(d) for d in out_dirs]
    t0 = time.time()
    timings = {"started": t0, "resumed_from_epoch": None, **({"group_size": n} if n > 1 else {})}
    state = progress = None
    stop = StopSignals()
    try:
        stop.__enter__()
        device = torch.device(device)
        torch.manual_seed(runs[0].seed)
        if proto.select_on == "val" and data.x_holdout is None:  # held out once, before anything trains
            data = data.hold_out(proto.val_fraction)
        data = data.to(device)
        engine = Engine(runs, proto, data, device, compile=compile)
        state = Checkpoint(engine, Path(checkpoint) if checkpoint else out_dirs[0] / "checkpoint.pt")
        timings["resumed_from_epoch"] = state.resume()
        if title is None:
            r = runs[0]
            title = f"{r.dataset} · {r.model} · lr×{','.join(f'{x.lr_mult:g}' for x in runs)}"
        progress = Progress(proto.epochs, state.epoch, title)

        def commit(records: dict[int, dict]) -> None:
            """Members' records of one epoch: into their histories, checkpointed, then reported (a stop signal
            waits until this is done, so the checkpoint and the tracker agree)."""
            with stop.deferred():
                for k, rec in records.items():
                    state.histories[k].append(rec)
                    if rec["val_error"] is None:
                        state.statuses[k] = DIVERGED
                state.save()
                for k, rec in records.items():
                    if on_epoch:
                        on_epoch(k, rec)

        if not state.histories[0]:  # epoch 0: the untrained net counts (protocol decision 7 in docs/protocol.md)
            engine.calibrate_batchnorm(data.x_train, proto)
            measured = measure(engine, data)
            commit({k: {"epoch": 0, **{key: errors[k] for key, errors in measured.items()},
                        "lr": proto.lr(1, runs[k].lr_mult)} for k in range(n)})
        while RUNNING in state.statuses and state.epoch < proto.epochs:
            records = run_epoch(engine, data, runs, proto, state.epoch + 1)
            state.epoch += 1
            fresh = {k: records[k] for k in range(n) if state.statuses[k] == RUNNING}  # a diverged member stopped
            commit(fresh)
            progress.update(state.epoch, list(fresh.values()))
        statuses = [FINISHED if s == RUNNING else s for s in state.statuses]
        timings["seconds"] = time.time() - t0
        results = [make_result(run, proto, state.histories[k], statuses[k], dict(timings), config,
                               holdout=data.holdout, dataset=getattr(data, "record", None))
                   for k, run in enumerate(runs)]
    except (Exception, Interrupted) as e:  # one failure path: every member keeps the epochs it finished
        stop.deferring = True  # a second Ctrl-C must not cut the records short
        timings["seconds"] = time.time() - t0
        # every member, a diverged one too, is left to rerun: the job resumes whole from its checkpoint,
        # which restores each member's own status
        status = FAILED if isinstance(e, Exception) else INTERRUPTED
        for k, run in enumerate(runs):
            history = state.histories[k] if state is not None else []
            write_json(out_dirs[k] / "result.json",
                       make_result(run, proto, history, status, dict(timings), config, f"{type(e).__name__}: {e}",
                                   holdout=data.holdout, dataset=getattr(data, "record", None)))
        raise
    finally:
        stop.__exit__()
        if progress is not None:
            progress.close()
    for out, result in zip(out_dirs, results):
        write_json(out / "result.json", result)
    return results


def train_run(run: RunSpec, data: TensorData, out_dir: str | Path, proto: Protocol | None = None,
              device: str | torch.device = "cpu", **kw) -> dict:
    """One run (a job of N = 1) in ``out_dir``: ``train([run], data, [out_dir], …)[0]``."""
    return train([run], data, [out_dir], proto, device, **kw)[0]


def main(argv: list[str] | None = None) -> int:
    """``python -m asym.train MODEL DATASET LR_MULT[,LR_MULT…] OUT_DIR [--epochs N]``: one job without Hydra.

    Several multipliers train as one run group, member k in ``OUT_DIR/lr<mult>``; the checkpoint is
    ``OUT_DIR/checkpoint.pt`` either way. Prints each run's status and best error as a JSON line.
    """
    import argparse
    from . import data as datasets
    ap = argparse.ArgumentParser(description="Train one run (or one run group) of the paper's protocol.")
    ap.add_argument("model"); ap.add_argument("dataset"); ap.add_argument("lr_mults"); ap.add_argument("out_dir")
    ap.add_argument("--epochs", type=int, default=65); ap.add_argument("--lr-steps", type=int, nargs="*", default=[50, 60])
    ap.add_argument("--freeze", default="none"); ap.add_argument("--procedure", default="standard")
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--root", default="data")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        mults = [float(m) for m in a.lr_mults.split(",")]
        runs = [RunSpec(a.model, a.dataset, m, a.freeze, a.procedure, a.seed).validate() for m in mults]
        data = datasets.load(a.dataset, a.root, seed=a.seed)
    except (ValueError, datasets.DatasetMissing) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out_dir)
    outs = [out] if len(runs) == 1 else [out / f"lr{m:g}" for m in mults]
    try:
        results = train(runs, data, outs, Protocol(epochs=a.epochs, lr_steps=a.lr_steps), checkpoint=out / "checkpoint.pt")
    except Interrupted as e:
        print(f"{e}; resume with the same command", file=sys.stderr)
        return e.exit_code
    for result in results:
        print(json.dumps({k: result[k] for k in ("status", BEST_ERROR, BEST_EPOCH)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
