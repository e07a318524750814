"""The paper's protocol loop (Section 5; protocol decisions 4–8 in docs/protocol.md): one job of N ≥ 1 runs, with
exact resume.

``train`` reads as the protocol: the untrained net is evaluated as epoch 0; each epoch sets every
member's learning rate, trains on one ``randperm`` of the training split in mini-batches (uSF+BM's
large-batch procedure switches batch size), calibrates the BN test statistics, evaluates, and saves a
checkpoint. A member whose loss is not finite stops alone with its best-so-far (``diverged``). Every
member gets a ``result.json``, also when the job fails. The network work is the ``Engine``'s.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
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
from . import data as datasets
from .data import TensorData
from .engine import Engine, calibrate_batchnorm  # noqa: F401  (calibrate_batchnorm: part of this module's API)
from .files import write_atomic, write_json
from .labels import parse_model
from .protocol import PROCEDURES, Protocol, RunSpec  # noqa: F401  (re-exported: the trainer's vocabulary)
from .protocol import batch_bounds, check_batch_sizes
# what a run records, by the names result.json and MLflow share (asym.record owns them)
from .record import (BEST_EPOCH, BEST_ERROR, HOLDOUT_ERROR, RESULT_FILE, SELECTED_EPOCH,  # noqa: F401
                     SELECTED_ERROR, SELECTED_HOLDOUT_ERROR, RunStatus)


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
    for start, stop in batch_bounds(size, bs):  # a last batch of one joins the one before (protocol decision 14)
        idx = order[start:stop]
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


def check_batches(runs: list[RunSpec], data: TensorData, proto: Protocol) -> None:
    """``check_batch_sizes`` on the training split ``train`` will use: ``data``'s, less the holdout under
    ``train.select_on=val``. ValueError (one line) if a batch size does not fit it (protocol decision 14)."""
    n = len(data.y_train)
    if proto.select_on == "val" and data.x_holdout is None:
        n -= len(datasets.holdout_split(data.y_train, proto.val_fraction, data.seed, data.name)[1])
    check_batch_sizes(proto, runs, n, data.name)


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


RESTART_CHOICE = "train.restart=true starts the run over; or move them away"  # what a refused checkpoint offers
CHECKPOINT_KEYS = ("net", "optimizer", "data_rng", "torch_rng", "epoch", "histories", "statuses")


class CheckpointError(Exception):
    """No checkpoint of a job can be trusted — every one is damaged, or one belongs to other runs or another
    protocol. The message is one line naming the files and the choice (``RESTART_CHOICE``); nothing was written."""


def run_identity(run: RunSpec) -> dict:
    """What makes a run this run (the fields its config hash covers; the model label in its canonical spelling)."""
    return {"model": parse_model(run.model).label, "dataset": run.dataset, "lr_mult": float(run.lr_mult),
            "freeze": run.freeze, "procedure": run.procedure, "seed": int(run.seed)}


def job_identity(runs: list[RunSpec], proto: Protocol) -> dict:
    """What a job's checkpoint must belong to: its protocol (``Protocol.identity``: what the protocol hash covers)
    and each member's run (``run_identity``: what the config hash covers), in member order."""
    return {"protocol": proto.identity(), "runs": [run_identity(r) for r in runs]}


def identity_mismatch(saved: dict | None, wanted: dict) -> str | None:
    """How a checkpoint's recorded identity differs from the job's, in words; None if it is the job's own (or if the
    checkpoint records none: written before checkpoints recorded it, in a run directory named by its config hash)."""
    if saved is None or saved == wanted:
        return None
    there, here = saved.get("protocol", {}), wanted["protocol"]
    keys = sorted(k for k in {*there, *here} if there.get(k) != here.get(k))
    if keys:
        return "it was written under another protocol (" + ", ".join(
            f"train.{k}: {there.get(k)!r} there, {here.get(k)!r} here" for k in keys[:3]) + ")"
    def name(r: dict) -> str:
        extra = [r["freeze"] if r["freeze"] != "none" else "", r["procedure"] if r["procedure"] != "standard" else "",
                 f"seed {r['seed']}" if r["seed"] else ""]
        return " ".join([f"{r['model']} on {r['dataset']} lr×{r['lr_mult']:g}", *filter(None, extra)])
    return (f"it belongs to other runs ({'; '.join(map(name, saved.get('runs', [])))} there, "
            f"{'; '.join(map(name, wanted['runs']))} here)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


class Checkpoint:
    """What survives a kill, saved after every epoch: the engine, each member's history and status, and the job's
    identity (``job_identity``). The last two good checkpoints are kept: ``path`` and ``previous``."""

    def __init__(self, engine: Engine, path: Path, identity: dict | None = None):
        self.engine, self.path, self.identity = engine, Path(path), identity
        self.epoch = 0                                   # last completed epoch (0: only the untrained net)
        self.histories: list[list[dict]] = [[] for _ in range(engine.n)]
        self.statuses = [RunStatus.RUNNING] * engine.n
        self.rotate = True  # False while ``path`` holds a checkpoint not to keep (damaged, or one to start over from)

    @property
    def previous(self) -> Path:
        return previous_checkpoint(self.path)

    def save(self) -> None:
        """Write the new checkpoint beside ``path``, make it durable, verify it loads, then rotate: ``path`` becomes
        ``previous`` and the new one ``path``. A crash at any point leaves a good checkpoint at one of the two."""
        state = {**self.engine.state_dict(), "epoch": self.epoch, "histories": self.histories,
                 "statuses": [str(s) for s in self.statuses],  # plain text: torch.load(weights_only=True)
                 "identity": self.identity}

        def write(tmp: Path) -> None:
            torch.save(state, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if self.read(tmp)["epoch"] != self.epoch:  # read back whole: a short write raises here, before any rename
                raise OSError(f"checkpoint {tmp} did not read back")
            if self.rotate and self.path.exists():
                os.replace(self.path, self.previous)
        write_atomic(self.path, write)
        self.rotate = True

    @staticmethod
    def read(path: Path) -> dict | None:
        """The checkpoint at ``path`` loaded to the CPU, or None if there is none. Raises whatever ``torch.load``
        raises for a damaged file, and KeyError for one that lacks a checkpoint's keys."""
        if not Path(path).exists():
            return None
        d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict):
            raise TypeError(f"not a checkpoint: a {type(d).__name__}")
        if "history" in d:  # a single run's checkpoint from asym 0.1.0 (before the one engine)
            d["histories"], d["statuses"] = [d.pop("history")], [d.pop("status")]
        missing = [k for k in CHECKPOINT_KEYS if k not in d]
        if missing:
            raise KeyError(f"not a checkpoint: no {', '.join(missing)}")
        return d

    @staticmethod
    def find(path: Path, identity: dict | None, warn: bool = True) -> tuple[Path, dict] | None:
        """The newest usable checkpoint of the job at ``path`` (``path``, else its ``previous``) and its state, or None
        if there is none. A damaged ``path`` is passed over with one ``warning:`` line on stderr naming it (``warn``).
        Raises ``CheckpointError`` if checkpoints exist and none is usable, or one belongs to other runs or another
        protocol than ``identity`` — before anything is written."""
        path = Path(path)
        damaged = []
        for candidate in (path, previous_checkpoint(path)):
            try:
                d = Checkpoint.read(candidate)
            except Exception as e:  # torch.load of a cut/empty/foreign file: RuntimeError, EOFError, UnpicklingError…
                damaged.append(f"{candidate} is damaged ({_first_line(e)})")
                continue
            if d is None:
                continue
            if identity is not None and (why := identity_mismatch(d.get("identity"), identity)):
                raise CheckpointError(f"checkpoint {candidate} cannot resume this job: {why}; {RESTART_CHOICE}")
            if identity is not None and len(d["histories"]) != len(identity["runs"]):
                raise CheckpointError(f"checkpoint {candidate} holds {len(d['histories'])} runs, this job "
                                      f"{len(identity['runs'])}; {RESTART_CHOICE}")
            if warn and (damaged or candidate != path):
                why = damaged[0] if damaged else f"{path} is missing"
                print(f"warning: checkpoint {why}; resuming from the previous one, {candidate} (epoch {d['epoch']})",
                      file=sys.stderr, flush=True)
            return candidate, d
        if damaged:
            raise CheckpointError("no usable checkpoint: " + "; ".join(damaged) + f"; {RESTART_CHOICE}")
        return None

    def resume(self, found: tuple[Path, dict] | None = None) -> int | None:
        """Load ``found`` (``Checkpoint.find``'s answer; default: find it now), if any; the epoch it resumes from,
        else None. Loaded to the CPU first: RNG states must be CPU byte tensors, whatever device wrote them.
        Raises ``CheckpointError`` for a checkpoint whose network does not fit this job's."""
        found = self.find(self.path, self.identity) if found is None else found
        if found is None:
            return None
        where, d = found
        try:
            self.engine.load_state_dict(d)
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint {where} does not fit this job's network ({_first_line(e)}); "
                                  f"{RESTART_CHOICE}") from None
        self.rotate = where == self.path  # resumed from the previous: the newest is not one to keep
        self.epoch, self.histories, self.statuses = d["epoch"], d["histories"], d["statuses"]
        return self.epoch

    def discard(self) -> None:
        """Remove this job's checkpoints (``train.restart=true``: the job starts over)."""
        for p in (self.path, self.previous):
            p.unlink(missing_ok=True)


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.pt`` → ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


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
        vals = ", ".join(f"{r['val_error']:.2f}%" if r.get("val_error") is not None else RunStatus.DIVERGED
                         for r in records)
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
          title: str | None = None, compile: bool = False, restart: bool = False) -> list[dict]:
    """Train ``runs`` (N ≥ 1, differing only in ``lr_mult``) as one job; their results in member order.

    Resumes from ``checkpoint`` (default ``out_dirs[0]/checkpoint.pt``, right for N = 1). After every epoch:
    the checkpoint (atomic), then ``on_epoch(k, record)`` for each member k that trained it (each epoch once,
    also across a resume). At the end, or when anything raises, each member's ``result.json`` (atomic) in
    ``out_dirs[k]``, with every epoch it finished. Raises ValueError for runs that cannot share a job.
    SIGINT/SIGTERM raise ``Interrupted`` (status ``interrupted``; the epoch in progress is dropped, the
    checkpoint of the last finished one is kept, and calling ``train`` again resumes from it).
    ``compile``: train through ``torch.compile`` (``Engine``; an execution option, not part of the protocol).

    Before anything is written: ValueError if a batch size does not fit the training split (``check_batch_sizes``,
    protocol decision 14), ``CheckpointError`` if the checkpoints there cannot resume this job (all damaged, or
    another job's: ``Checkpoint.find``). ``restart``: discard them and start over (``train.restart=true``).
    """
    for r in runs:
        r.validate()
    proto, n = proto or Protocol(), len(runs)
    out_dirs = [Path(d) for d in out_dirs]
    check_batches(runs, data, proto)
    if proto.select_on == "val" and data.x_holdout is None:  # held out once, before anything trains
        data = data.hold_out(proto.val_fraction)
    identity = job_identity(runs, proto)
    checkpoint = Path(checkpoint) if checkpoint else out_dirs[0] / "checkpoint.pt"
    found = None if restart else Checkpoint.find(checkpoint, identity)
    t0 = time.time()
    timings = {"started": t0, "resumed_from_epoch": None, **({"group_size": n} if n > 1 else {})}
    state = progress = None
    stop = StopSignals()
    try:
        stop.__enter__()
        device = torch.device(device)
        torch.manual_seed(runs[0].seed)
        data = data.to(device)
        engine = Engine(runs, proto, data, device, compile=compile)
        state = Checkpoint(engine, checkpoint, identity)
        if restart:
            state.discard()
        timings["resumed_from_epoch"] = state.resume(found) if found else None
        if title is None:
            r = runs[0]
            title = f"{r.model} ×{','.join(f'{x.lr_mult:g}' for x in runs)} · {r.dataset}"  # as run names read
        progress = Progress(proto.epochs, state.epoch, title)

        def commit(records: dict[int, dict]) -> None:
            """Members' records of one epoch: into their histories, checkpointed, then reported (a stop signal
            waits until this is done, so the checkpoint and the tracker agree)."""
            with stop.deferred():
                for k, rec in records.items():
                    state.histories[k].append(rec)
                    if rec["val_error"] is None:
                        state.statuses[k] = RunStatus.DIVERGED
                state.save()
                for k, rec in records.items():
                    if on_epoch:
                        on_epoch(k, rec)

        if not state.histories[0]:  # epoch 0: the untrained net counts (protocol decision 7 in docs/protocol.md)
            engine.calibrate_batchnorm(data.x_train, proto)
            measured = measure(engine, data)
            commit({k: {"epoch": 0, **{key: errors[k] for key, errors in measured.items()},
                        "lr": proto.lr(1, runs[k].lr_mult)} for k in range(n)})
        while RunStatus.RUNNING in state.statuses and state.epoch < proto.epochs:
            records = run_epoch(engine, data, runs, proto, state.epoch + 1)
            state.epoch += 1
            fresh = {k: records[k] for k in range(n) if state.statuses[k] == RunStatus.RUNNING}  # a diverged one stopped
            commit(fresh)
            progress.update(state.epoch, list(fresh.values()))
        statuses = [RunStatus.FINISHED if s == RunStatus.RUNNING else RunStatus(s) for s in state.statuses]
        timings["seconds"] = time.time() - t0
        results = [make_result(run, proto, state.histories[k], statuses[k], dict(timings), config,
                               holdout=data.holdout, dataset=getattr(data, "record", None))
                   for k, run in enumerate(runs)]
    except CheckpointError:  # nothing trained: the records of the run being resumed stay as they are
        raise
    except (Exception, Interrupted) as e:  # one failure path: every member keeps the epochs it finished
        stop.deferring = True  # a second Ctrl-C must not cut the records short
        timings["seconds"] = time.time() - t0
        # every member, a diverged one too, is left to rerun: the job resumes whole from its checkpoint,
        # which restores each member's own status
        status = RunStatus.FAILED if isinstance(e, Exception) else RunStatus.INTERRUPTED
        for k, run in enumerate(runs):
            history = state.histories[k] if state is not None else []
            write_json(out_dirs[k] / RESULT_FILE,
                       make_result(run, proto, history, status, dict(timings), config, f"{type(e).__name__}: {e}",
                                   holdout=data.holdout, dataset=getattr(data, "record", None)))
        raise
    finally:
        stop.__exit__()
        if progress is not None:
            progress.close()
    for out, result in zip(out_dirs, results):
        write_json(out / RESULT_FILE, result)
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
    defaults = Protocol()
    ap = argparse.ArgumentParser(description="Train one run (or one run group) of the paper's protocol.")
    ap.add_argument("model"); ap.add_argument("dataset"); ap.add_argument("lr_mults"); ap.add_argument("out_dir")
    ap.add_argument("--epochs", type=int, default=defaults.epochs)
    ap.add_argument("--lr-steps", type=int, nargs="*", default=defaults.lr_steps)
    ap.add_argument("--freeze", default="none"); ap.add_argument("--procedure", default="standard")
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--root", default="data")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--restart", action="store_true", help="discard the checkpoints in OUT_DIR and start over")
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
        results = train(runs, data, outs, Protocol(epochs=a.epochs, lr_steps=a.lr_steps),
                        checkpoint=out / "checkpoint.pt", restart=a.restart)
    except (ValueError, CheckpointError) as e:  # before anything trained: one line
        print(f"error: {e}".replace(RESTART_CHOICE, "--restart starts the run over; or move them away"),
              file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"{e}; resume with the same command", file=sys.stderr)
        return e.exit_code
    for result in results:
        print(json.dumps({k: result[k] for k in ("status", BEST_ERROR, BEST_EPOCH)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
