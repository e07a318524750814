"""The one owner of the MLflow schema: tag/metric names, the config hash, run names, skip-done lookup.

The trainer writes through ``RunTracker``; the launcher, ``asym-sync`` and ``analysis`` read through
``find_runs``/``runs_frame``, so tables, status and sync never disagree with what runs log.
Tracking failures never fail a run: the run's ``result.json`` is its local record and ``sync`` uploads
whatever the tracking server missed, idempotently.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from .train import BEST_EPOCH, BEST_ERROR, FAILED, INTERRUPTED, RUNNING

log = logging.getLogger("asym.tracking")

DEFAULT_EXPERIMENT = "weight-symmetry"
DEFAULT_URI = "sqlite:///mlflow.db"
VAL_METRIC = "val_error"  # per epoch, on the split the paper reports
EPOCH_METRICS = (VAL_METRIC, "train_error", "train_loss", "lr")
RUN_TAGS = ("model", "dataset", "lr_mult", "freeze", "procedure", "seed")
STATUS_TAG, HASH_TAG, COMMIT_TAG = "status", "config_hash", "git_commit"
PROTOCOL_TAG = "protocol_hash"  # runs of one protocol (epochs, schedule, batch…) are the only ones a cell combines
DONE = ("finished", "diverged")  # a run in one of these states is never trained again
PREFERENCE = ("finished", "diverged", "running", INTERRUPTED, FAILED)  # which run stands for a hash (stands_for)
MLFLOW_STATUS = {FAILED: "FAILED", INTERRUPTED: "KILLED"}  # status tag → MLflow's run status (else FINISHED)
SUMMARY_METRICS = (BEST_ERROR, BEST_EPOCH)
RUN_DIR_FILE = "result.json"


def config_hash(run: dict, protocol: dict) -> str:
    """Stable hash of what defines a run's numbers (not device, threads, or where it is tracked)."""
    from .models import parse_model
    key = {**{k: run[k] for k in RUN_TAGS}, "model": parse_model(run["model"]).label,
           "lr_mult": float(run["lr_mult"]), "protocol": {k: protocol[k] for k in sorted(protocol)}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def protocol_hash(protocol: dict) -> str:
    """Stable hash of a training protocol (``asym.protocol.Protocol`` as a dict): part of ``config_hash``, and
    its own tag, so tables never mix a 5-epoch look with the 65-epoch protocol."""
    key = {k: protocol[k] for k in sorted(protocol)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def group_hash(member_hashes: list[str]) -> str:
    """Names a run group's checkpoint: the same members (in order) find the same checkpoint."""
    return hashlib.sha256(",".join(member_hashes).encode()).hexdigest()[:16]


def run_name(run: dict) -> str:
    """Readable name shown in the MLflow UI, e.g. ``CIFAR · uSF+BN+BM · lr×10``."""
    from .data import info
    from .models import parse_model
    parts = [info(run["dataset"]).title, parse_model(run["model"]).label, f"lr×{float(run['lr_mult']):g}"]
    if run.get("freeze", "none") != "none":
        parts.append(run["freeze"])
    if run.get("procedure", "standard") != "standard":
        parts.append(run["procedure"])
    if int(run.get("seed", 0)) != 0:  # runs that differ only in their seed must not share a name
        parts.append(f"seed {int(run['seed'])}")
    return " · ".join(parts)


def resolve_uri(uri: str | None) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else a SQLite file in the working directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def limit_http_retries(retries: int = 2, timeout_s: int = 20) -> None:
    """MLflow's HTTP client retries for minutes by default; tables and status should fail in seconds,
    and a run should not stall on a dead server (its result.json and asym-sync cover the outage).
    One policy for every entry point; the environment wins."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))


def client(uri: str | None = None):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=resolve_uri(uri))


def ensure_experiment(uri: str | None, name: str = DEFAULT_EXPERIMENT) -> str:
    """Create the experiment once (before workers start: concurrent creation misroutes runs)."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name)
    except Exception:  # another process won the race
        return c.get_experiment_by_name(name).experiment_id


def find_runs(c, experiment_id: str, config_hash_value: str | None = None) -> list:
    """MLflow runs of the experiment (with that config hash), newest first (MLflow's order)."""
    filt = f"tags.{HASH_TAG} = '{config_hash_value}'" if config_hash_value else ""
    return c.search_runs([experiment_id], filter_string=filt, max_results=50000)


def stands_for(statuses: list[str | None]) -> int | None:
    """Which of the runs carrying one config hash stands for it (skip-done, status, tables, the local pool):
    the index of the first finished one, else diverged, else running, else failed, else the first.
    ``statuses`` are their status tags in MLflow's order (newest first). None if there is no run."""
    rank = {s: i for i, s in enumerate(PREFERENCE)}
    return min(range(len(statuses)), key=lambda i: (rank.get(statuses[i], len(rank)), i)) if statuses else None


def runs_table(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
    """One row per config hash (the run that ``stands_for`` it), in plain columns: the run fields
    (``RUN_TAGS``), ``status``, ``config_hash``, ``protocol_hash``, the summary metrics, ``run_id``.
    None if there is no run."""
    df = runs_frame(uri, experiment)
    if df is None or df.empty:
        return None
    cols = {f"tags.{k}": k for k in (*RUN_TAGS, STATUS_TAG, HASH_TAG, PROTOCOL_TAG)}
    cols.update({f"metrics.{k}": k for k in SUMMARY_METRICS})
    out = df.reindex(columns=[*cols, "run_id"]).rename(columns=cols).reset_index(drop=True)
    keep = [idx[stands_for(list(group["status"]))] for idx, group in
            ((g.index, g) for _, g in out.groupby(out["config_hash"].fillna(out["run_id"]), sort=False))]
    return out.loc[sorted(keep)].reset_index(drop=True)


def mark_failed(uri: str, experiment: str, config_hash_value: str) -> None:
    """The run of ``config_hash_value`` died outside Python (a killed worker): end it FAILED unless done."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = find_runs(c, exp.experiment_id, config_hash_value) if exp else []
    i = stands_for([r.data.tags.get(STATUS_TAG) for r in runs])
    if i is not None and runs[i].data.tags.get(STATUS_TAG) not in (*DONE, INTERRUPTED):  # those ended themselves
        c.set_tag(runs[i].info.run_id, STATUS_TAG, "failed")
        c.set_terminated(runs[i].info.run_id, status="FAILED")


def status_of(run) -> str | None:
    """The status tag of an MLflow run (``None`` for no run)."""
    return run.data.tags.get(STATUS_TAG) if run is not None else None


def runs_frame(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
    """All runs of ``experiment`` as a pandas DataFrame (``mlflow.search_runs``), or None if none exist."""
    import mlflow
    uri = resolve_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return None  # reading must not create an empty database
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        return None
    return mlflow.search_runs(experiment_names=[experiment], max_results=100000)


def _metrics(records: list[dict], have: dict[str, set[int]] | None = None):
    """Per-epoch metrics of ``records``, leaving out the (metric, epoch) points in ``have``."""
    from mlflow.entities import Metric
    now, have = int(time.time() * 1000), have or {}
    return [Metric(k, float(r[k]), now, int(r["epoch"])) for r in records for k in EPOCH_METRICS
            if r.get(k) is not None and int(r["epoch"]) not in have.get(k, ())]


def _log_metrics(c, run_id: str, metrics: list) -> None:
    for i in range(0, len(metrics), 900):  # MLflow caps a batch at 1000 metrics
        c.log_batch(run_id, metrics=metrics[i:i + 900])


class RunTracker:
    """Logs one run. Any tracking error is logged once and switches the tracker off; the run goes on."""

    def __init__(self, uri: str | None, experiment: str, run: dict, protocol: dict, params: dict):
        self.uri, self.experiment = uri, experiment
        self.run, self.protocol, self.params = run, protocol, params
        self.hash = config_hash(run, protocol)
        self.run_id: str | None = None
        self.ok = True

    def _guard(self, what: str, fn, *args):
        if not self.ok:
            return None
        try:
            return fn(*args)
        except Exception as e:  # tracking must never fail a run: result.json + asym-sync cover it
            self.ok = False
            log.warning("MLflow unreachable while %s (%s); the run continues, run asym-sync later", what,
                        str(e).splitlines()[0][:200])
            return None

    def existing(self):
        """The MLflow run with this config hash, or None."""
        def look():
            c = client(self.uri)
            exp = c.get_experiment_by_name(self.experiment)
            runs = find_runs(c, exp.experiment_id, self.hash) if exp else []
            i = stands_for([status_of(r) for r in runs])
            return None if i is None else runs[i]
        return self._guard("looking up the run", look)

    def start(self, existing=None, git_commit: str | None = None) -> None:
        def start():
            c = client(self.uri)
            if existing is not None:
                self.run_id = existing.info.run_id
                c.update_run(self.run_id, status="RUNNING")
                c.set_tag(self.run_id, STATUS_TAG, RUNNING)  # resumed: no longer failed / interrupted
            else:
                exp_id = ensure_experiment(self.uri, self.experiment)
                tags = {k: str(self.run[k]) for k in RUN_TAGS}
                from .models import parse_model
                tags.update({"model": parse_model(self.run["model"]).label, HASH_TAG: self.hash,
                             PROTOCOL_TAG: protocol_hash(self.protocol),
                             STATUS_TAG: "running", COMMIT_TAG: git_commit or "unknown"})
                self.run_id = c.create_run(exp_id, run_name=run_name(self.run), tags=tags).info.run_id
                from mlflow.entities import Param
                c.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in self.params.items()])
        self._guard("starting the run", start)

    def log_epoch(self, record: dict) -> None:
        if self.run_id:
            self._guard("logging an epoch", lambda: _log_metrics(client(self.uri), self.run_id, _metrics([record])))

    def catch_up(self, history: list[dict]) -> None:
        """Log epochs the MLflow run misses (e.g. done before a crash, or while the server was down)."""
        if self.run_id:
            self._guard("catching up epochs", lambda: log_missing_epochs(client(self.uri), self.run_id, history))

    def finish(self, result: dict, out_dir: Path) -> bool:
        """Summary metrics, tags, artifacts, terminal status. Returns whether MLflow now has it all."""
        self.ok = True  # the server may be back after an outage: try once more
        if self.run_id is None:
            self.start(self.existing())
        if not self.run_id:
            return False
        return bool(self._guard("finishing the run", lambda: finish_run(client(self.uri), self.run_id, result, out_dir)))


def log_missing_epochs(c, run_id: str, history: list[dict]) -> None:
    """Log the (metric, epoch) points of ``history`` the run lacks, each metric checked on its own: a diverged
    epoch has a train_loss but no val_error, and must still be logged exactly once."""
    have = {k: {m.step for m in c.get_metric_history(run_id, k)} for k in EPOCH_METRICS}
    _log_metrics(c, run_id, _metrics(history, have))


def finish_run(c, run_id: str, result: dict, out_dir: Path) -> bool:
    from mlflow.entities import Metric
    log_missing_epochs(c, run_id, result["epochs"])
    now = int(time.time() * 1000)
    summary = [Metric(k, float(result[k]), now, 0) for k in SUMMARY_METRICS if result[k] is not None]
    _log_metrics(c, run_id, summary)
    for name in (RUN_DIR_FILE, "config.yaml"):
        if (Path(out_dir) / name).exists():
            c.log_artifact(run_id, str(Path(out_dir) / name))
    c.set_tag(run_id, STATUS_TAG, result["status"])
    c.set_terminated(run_id, status=MLFLOW_STATUS.get(result["status"], "FINISHED"))
    return True


def sync(output_root: str | Path, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> dict:
    """Upload every local ``result.json`` under ``output_root`` that MLflow lacks or holds incomplete.

    Idempotent: a run already complete in MLflow is left alone; syncing twice creates no duplicates.
    """
    counts = {"uploaded": 0, "already": 0}
    for path in sorted(Path(output_root).rglob(RUN_DIR_FILE)):
        result = json.loads(path.read_text())
        if result.get("status") not in (*DONE, FAILED, INTERRUPTED):
            continue
        tracker = RunTracker(uri, experiment, result["run"], result["protocol"], result.get("config", {}))
        found = tracker.existing()
        if not tracker.ok:
            raise RuntimeError(f"tracking server {resolve_uri(uri)} unreachable")
        if status_of(found) == result["status"]:
            counts["already"] += 1
            continue
        tracker.start(found, result.get("git_commit"))
        if not tracker.finish(result, path.parent):
            raise RuntimeError(f"could not upload {path}")
        counts["uploaded"] += 1
    return counts
