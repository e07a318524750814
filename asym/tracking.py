"""The one owner of the MLflow schema: tag/metric names, the config hash, run names, skip-done lookup.

The trainer writes through ``RunTracker``; the launcher, ``asym-sync`` and ``analysis`` read through
``find_runs``/``runs_frame``, so tables, status and sync never disagree with what runs log.
Tracking failures never fail a run: the run's ``result.json`` is its local record and ``sync`` uploads
whatever the tracking server missed, idempotently.

It knows neither the training loop nor the analysis: the names a run records come from ``asym.record`` and
which tables a run feeds from ``asym.study``, so importing it loads no torch. MLflow itself is imported inside
the functions that talk to it: it takes seconds to import, and config hashes, run names and ``asym-train``'s
error lines need none of it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import weakref
from pathlib import Path
from urllib.parse import urlsplit

from . import data
from .data import info, is_user, labels
from .labels import RNDF_STD, parse_model
from .protocol import identity
from .record import (BEST_EPOCH, BEST_ERROR, DONE, HOLDOUT_ERROR, PREFERENCE, RESULT_FILE, SELECTED_EPOCH,
                     SELECTED_ERROR, SELECTED_HOLDOUT_ERROR, RunStatus)
from .study import tables_of

log = logging.getLogger("asym.tracking")

DEFAULT_EXPERIMENT = "weight-symmetry"
DEFAULT_URI = "sqlite:///mlflow.db"
VAL_METRIC = "val_error"  # per epoch, on the split the paper reports
EPOCH_METRICS = (VAL_METRIC, "train_error", "train_loss", "lr", HOLDOUT_ERROR)  # holdout_error: select_on=val only
RUN_TAGS = ("model", "dataset", "lr_mult", "freeze", "procedure", "seed")
STATUS_TAG, HASH_TAG, COMMIT_TAG = "status", "config_hash", "git_commit"
TABLES_TAG = "tables"   # with PROTOCOL_TAG, "Table 3, 65-epoch protocol" is one UI filter
NOTE_TAG = "mlflow.note.content"   # MLflow's own run description (the UI's "Description")
SYSTEM_METRICS_PARAM = "tracking.system_metrics"   # the config key that turns MLflow's system metrics on
SELECT_ON_TAG = "select_on"  # test | val (train.select_on): how a run's number was chosen; tables never mix them
PROTOCOL_TAG = "protocol_hash"  # runs of one protocol (epochs, schedule, batch…) are the only ones a cell combines
# status tag (asym.record.RunStatus) → MLflow's run status (else FINISHED)
MLFLOW_STATUS = {RunStatus.FAILED: "FAILED", RunStatus.INTERRUPTED: "KILLED"}
# The sweep's own MLflow run (one per asym-train -m): its trained runs are its children (MLflow's parent tag), its
# artifacts the plan, the overrides and the regenerated tables. Tables and status never count it as a trained run.
KIND_TAG, SWEEP_KIND = "asym.kind", "sweep"
PARENT_TAG = "mlflow.parentRunId"   # mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID: the UI nests a child under it
SWEEP_RUN_ENV = "ASYM_SWEEP_RUN_ID"  # set by the sweeper for its jobs (inherited by local and SLURM processes alike)
# The experiment's kind and description. MLflow 3's UI opens an experiment in its GenAI view unless it is told
# otherwise; the kind is the experiment tag its "Model training" selector writes (custom_model_development), and
# ``workflowType=machine_learning`` the URL parameter of that view (pinned by tests/test_mlflow_ui.py).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_VIEW = "runs?workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where ``mlflow ui`` serves a local store
EXPERIMENT_NOTE = """\
Reproduction of Liao, Leibo & Poggio, *How Important Is Weight Symmetry in Backpropagation?* (AAAI 2016). \
A trained run is one (model, dataset, learning-rate multiplier[, clamp, procedure, seed]); a table cell is the \
best validation error of a (model, dataset) over its multipliers and epochs.

Each sweep (`asym-train -m`) is a parent run (tag `asym.kind = sweep`, expand it for its runs) whose artifacts hold \
its plan and overrides and, once it ends, its tables (`tables.html`, `.csv`, `.md`) and `report.html`.
Regenerate the tables: `asym-tables --compare`, `asym-report --out report.html`; add `--log-to-mlflow` to log \
them to the newest sweep run. Useful columns: params `model`, `lr_mult`, `dataset`, metric `best_val_error`."""
SUMMARY_METRICS = (BEST_ERROR, BEST_EPOCH, SELECTED_EPOCH, SELECTED_HOLDOUT_ERROR, SELECTED_ERROR)
# A run started over from epoch 0 (its run directory deleted, output_root changed, train.restart=true) gets a new
# MLflow run, never the old one's metric history: the new run names the one it replaces, the old one its successor
RESTART_OF_TAG, RESTARTED_AS_TAG = "restart_of", "restarted_as"
# how each entry point lets the user choose another store or experiment (the store-state messages name them)
TRAIN_OPTIONS = {"uri": "tracking.uri=URI", "experiment": "tracking.experiment=NAME"}
TOOL_OPTIONS = {"uri": "--tracking-uri URI", "experiment": "--experiment NAME"}
DATASET_ID_TAG = "dataset_id"  # the content identity of the run's data (protocol decision 18, docs/protocol.md)


def config_hash(run: dict, protocol: dict) -> str:
    """Stable hash of what defines a run's numbers (not device, threads, or where it is tracked).

    A user dataset's (``npz:``/``folder:``) content identity is part of it (``dataset_id``): another file under
    the same name is another run. The registry's datasets keep the paper's hashes (their identity is recorded
    on each run's MLflow dataset input and in its result.json, protocol decision 18)."""
    key = {**{k: run[k] for k in RUN_TAGS}, "model": parse_model(run["model"]).label,
           "lr_mult": float(run["lr_mult"]), "protocol": dict(sorted(identity(protocol).items()))}
    data_id = dataset_id(run)
    if data_id is not None:
        key[DATASET_ID_TAG] = data_id
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def dataset_id(run: dict) -> str | None:
    """The content identity (``asym.data.identity``) that enters a run's config hash: the recorded one
    (``run["dataset_id"]``, e.g. from a result.json) or the files' as they are now, for user data only;
    None for the registry's datasets."""
    if not is_user(run["dataset"]):
        return None
    return run.get(DATASET_ID_TAG) or data.identity(run["dataset"]).digest


def protocol_hash(protocol: dict) -> str:
    """Stable hash of a training protocol (``asym.protocol.Protocol`` as a dict): part of ``config_hash``, and
    its own tag, so tables never mix a 5-epoch look with the 65-epoch protocol."""
    key = dict(sorted(identity(protocol).items()))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def group_hash(member_hashes: list[str]) -> str:
    """Names a run group's checkpoint: the same members (in order) find the same checkpoint."""
    return hashlib.sha256(",".join(member_hashes).encode()).hexdigest()[:16]


def run_name(run: dict, others=()) -> str:
    """Readable name in the MLflow UI, e.g. ``uSF+BN+BM ×10 · CIFAR``: what differs between the runs of one
    experiment first — the model and the lr multiplier, which a top-level row of the UI's Run Name column shows
    whole for every demo run (measured in Chromium, tests/test_mlflow_ui.py; docs/mlflow.md) — then the clamp, the
    procedure and the seed when not the default, and the dataset last (also the UI's Dataset column): its label
    (``asym.data.labels``) among ``others``, the (dataset, dataset_id) pairs it must be told apart from."""
    key = (run["dataset"], run.get(DATASET_ID_TAG))
    parts = [f"{parse_model(run['model']).label} ×{float(run['lr_mult']):g}"]
    if run.get("freeze", "none") != "none":
        parts.append(run["freeze"])
    if run.get("procedure", "standard") != "standard":
        parts.append(run["procedure"])
    if int(run.get("seed", 0)) != 0:  # runs that differ only in their seed must not share a name
        parts.append(f"seed {int(run['seed'])}")
    return " · ".join([*parts, labels([key, *others])[key]])


def run_params(run: dict) -> dict[str, str]:
    """The run's own fields as MLflow params (columns in the runs table and in Compare), from the run, not from the
    job's config: a run group's member logs its own ``lr_mult``, and ``model`` is the canonical label."""
    return {**{k: str(run[k]) for k in RUN_TAGS}, "model": parse_model(run["model"]).label,
            "lr_mult": f"{float(run['lr_mult']):g}"}


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
    """Create the experiment once (before workers start: concurrent creation misroutes runs), with its kind and
    description (``experiment_tags``); an existing experiment gets those it lacks (a description a user wrote stays).
    Raises ``ExperimentDeleted`` for an experiment of that name in MLflow's trash (no run can be created in it)."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name, tags=experiment_tags())
        except Exception:  # another process won the race
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise ExperimentDeleted(deleted_experiment(resolve_uri(uri), exp))
    for key, value in experiment_tags().items():
        if key not in exp.tags:
            c.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def experiment_tags() -> dict[str, str]:
    """What the experiment says about itself in the UI: its kind (model training, not GenAI) and description."""
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, NOTE_TAG: EXPERIMENT_NOTE}


def experiment_url(uri: str | None, experiment_id: str) -> str:
    """The UI address of the experiment's runs table: the tracking server itself, or for a local store the
    address ``mlflow ui`` serves (``LOCAL_UI``). Opens on the runs, not on MLflow 3's GenAI overview."""
    uri = resolve_uri(uri)
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}/{UI_VIEW}"


def is_sweep(run) -> bool:
    """An MLflow run that is a sweep's parent run, not a trained run."""
    return run.data.tags.get(KIND_TAG) == SWEEP_KIND


def find_runs(c, experiment_id: str, config_hash_value: str | None = None) -> list:
    """Trained MLflow runs of the experiment (with that config hash), newest first (MLflow's order); a sweep's own
    run is not one."""
    filt = f"tags.{HASH_TAG} = '{config_hash_value}'" if config_hash_value else ""
    return [r for r in c.search_runs([experiment_id], filter_string=filt, max_results=50000) if not is_sweep(r)]


def stands_for(statuses: list[str | None]) -> int | None:
    """Which of the runs carrying one config hash stands for it (skip-done, status, tables, the local pool):
    the index of the first finished one, else diverged, else running, else interrupted, else failed, else the
    first (``PREFERENCE``). ``statuses`` are their status tags in MLflow's order (newest first). None if there is no run."""
    rank = {s: i for i, s in enumerate(PREFERENCE)}
    return min(range(len(statuses)), key=lambda i: (rank.get(statuses[i], len(rank)), i)) if statuses else None


def runs_table(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
    """One row per config hash (the run that ``stands_for`` it), in plain columns: the run fields
    (``RUN_TAGS``), ``status``, ``config_hash``, ``protocol_hash``, ``parent_run_id`` (its sweep's run), the summary
    metrics, ``run_id``. Sweep runs are not trained runs and never appear.
    None if there is no run."""
    df = runs_frame(uri, experiment)
    if df is None or df.empty:
        return None
    cols = {f"tags.{k}": k for k in (*RUN_TAGS, STATUS_TAG, HASH_TAG, PROTOCOL_TAG, SELECT_ON_TAG, DATASET_ID_TAG)}
    cols[f"tags.{PARENT_TAG}"] = "parent_run_id"
    cols.update({f"metrics.{k}": k for k in SUMMARY_METRICS})
    out = df.reindex(columns=[*cols, "run_id"]).rename(columns=cols).reset_index(drop=True)
    out[SELECT_ON_TAG] = out[SELECT_ON_TAG].fillna("test")  # runs from before the option: the paper's selection
    keep = [idx[stands_for(list(group["status"]))] for idx, group in
            ((g.index, g) for _, g in out.groupby(out["config_hash"].fillna(out["run_id"]), sort=False))]
    return out.loc[sorted(keep)].reset_index(drop=True)


def mark_failed(uri: str, experiment: str, config_hash_value: str) -> None:
    """The run of ``config_hash_value`` died outside Python (a killed worker): end it FAILED unless done."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = find_runs(c, exp.experiment_id, config_hash_value) if exp else []
    i = stands_for([r.data.tags.get(STATUS_TAG) for r in runs])
    if i is not None and runs[i].data.tags.get(STATUS_TAG) not in (*DONE, RunStatus.INTERRUPTED):  # ended themselves
        c.set_tag(runs[i].info.run_id, STATUS_TAG, str(RunStatus.FAILED))
        c.set_terminated(runs[i].info.run_id, status="FAILED")


NOT_SUBMITTED_TAG = "not_submitted"   # a sweep run's tag: how many jobs sbatch refused, and SLURM's reason


def note_not_submitted(uri: str | None, sweep_run_id: str, note: str) -> None:
    """``sbatch`` refused (part of) a sweep: its own MLflow run carries the tag ``not_submitted`` with ``note`` (how
    many jobs, SLURM's reason). No run is created for jobs that never ran."""
    client(uri).set_tag(sweep_run_id, NOT_SUBMITTED_TAG, note[:5000])


def status_of(run) -> str | None:
    """The status tag of an MLflow run (``None`` for no run)."""
    return run.data.tags.get(STATUS_TAG) if run is not None else None


def runs_frame(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
    """The trained runs of ``experiment`` as a pandas DataFrame (``mlflow.search_runs``; sweep runs left out), or
    None if there is no experiment."""
    import mlflow
    uri = resolve_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return None  # reading must not create an empty database
    check_access(uri, experiment)  # no credentials, or wrong ones: one line, not a REST trace
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return None
    if exp.lifecycle_stage == "deleted":  # its runs are in the trash with it: say so, not "no runs"
        raise ExperimentDeleted(deleted_experiment(uri, exp, TOOL_OPTIONS))
    df = mlflow.search_runs(experiment_names=[experiment], max_results=100000)
    kind = f"tags.{KIND_TAG}"
    return df[df[kind] != SWEEP_KIND].reset_index(drop=True) if kind in df else df


# ------------------------------------------------------------------------------------------------ sweep runs
def start_sweep_run(uri: str | None, experiment: str, name: str, tags: dict[str, str], files: list[Path]) -> str:
    """A sweep's own MLflow run (tag ``asym.kind = sweep``), with ``files`` (its plan, its overrides) as artifacts;
    its id. Its jobs make their new runs its children (``SWEEP_RUN_ENV``)."""
    c = client(uri)
    exp_id = ensure_experiment(uri, experiment)
    run_id = c.create_run(exp_id, run_name=name, tags={**tags, KIND_TAG: SWEEP_KIND, STATUS_TAG: str(RunStatus.RUNNING)}).info.run_id
    for f in files:
        c.log_artifact(run_id, str(f))
    return run_id


def end_sweep_run(uri: str | None, run_id: str, status: RunStatus) -> None:
    """The sweep's status tag (``finished``, ``failed``, ``interrupted``, ``queued``: submitted, not waited for)
    and MLflow's terminal status."""
    c = client(uri)
    c.set_tag(run_id, STATUS_TAG, str(status))
    c.set_terminated(run_id, status=MLFLOW_STATUS.get(status, "FINISHED"))


def sweep_runs(uri: str | None, experiment: str, protocol: str | None = None) -> list:
    """The sweep runs of ``experiment`` (of that ``protocol_hash``), newest first."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    filt = f"tags.`{KIND_TAG}` = '{SWEEP_KIND}'" + (f" AND tags.{PROTOCOL_TAG} = '{protocol}'" if protocol else "")
    return c.search_runs([exp.experiment_id], filter_string=filt, order_by=["attributes.start_time DESC"])


def log_artifacts(uri: str | None, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
    """Every file under ``folder`` as artifacts of ``run_id`` (under ``artifact_path``)."""
    client(uri).log_artifacts(run_id, str(folder), artifact_path)


def log_artifact(uri: str | None, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    client(uri).log_artifact(run_id, str(path), artifact_path)


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
    """Logs one run. Any tracking error is logged once — one line naming the store's state (``explain_failure``) —
    and switches the tracker off; the run goes on."""

    def __init__(self, uri: str | None, experiment: str, run: dict, protocol: dict, params: dict):
        self.uri, self.experiment = uri, experiment
        self.run, self.protocol, self.params = run, protocol, params
        data_id = dataset_id(run)  # computed once: a user dataset's identity costs a scan or a hash
        if data_id is not None:
            self.run = run = {**run, DATASET_ID_TAG: data_id}
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
            log.warning("%s; the run continues and keeps its result.json", explain_failure(
                self.uri, self.experiment, self.run_id, e, what))
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

    def start(self, existing=None, git_commit: str | None = None, replaces=None) -> None:
        """Reopen ``existing`` (a resumed run), else create the MLflow run. ``replaces``: the MLflow run of this
        config hash that a start from epoch 0 supersedes — the new run is tagged ``restart_of`` it, and it is
        tagged ``restarted_as`` the new one and, unless done, ended ``failed`` (so the new run stands for the hash)."""
        def start():
            c = client(self.uri)
            if existing is not None:
                self.run_id = existing.info.run_id
                c.update_run(self.run_id, status="RUNNING")
                c.set_tag(self.run_id, STATUS_TAG, str(RunStatus.RUNNING))  # resumed: no longer failed / interrupted
            else:
                exp_id = ensure_experiment(self.uri, self.experiment)
                tags = {k: str(self.run[k]) for k in RUN_TAGS}
                tags.update({"model": parse_model(self.run["model"]).label, HASH_TAG: self.hash,
                             STATUS_TAG: str(RunStatus.RUNNING), COMMIT_TAG: git_commit or "unknown"})
                tags.update(view_tags(self.run, self.protocol))  # the description, tables, protocol_hash
                if self.run.get(DATASET_ID_TAG):
                    tags[DATASET_ID_TAG] = self.run[DATASET_ID_TAG]
                if replaces is not None:
                    tags[RESTART_OF_TAG] = replaces.info.run_id
                parent = os.environ.get(SWEEP_RUN_ENV)
                if parent:  # the sweep that first trains a run is its parent, for good
                    tags[PARENT_TAG] = parent
                name = run_name(self.run, same_label_datasets(c, exp_id, self.run["dataset"]))
                self.run_id = c.create_run(exp_id, run_name=name, tags=tags).info.run_id
                from mlflow.entities import Param
                params = {**{k: str(v) for k, v in self.params.items()}, **run_params(self.run)}
                c.log_batch(self.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
                if replaces is not None:
                    supersede(c, replaces, self.run_id)
        self._guard("starting the run", start)
        if self.run_id and str(self.params.get(SYSTEM_METRICS_PARAM, False)).lower() == "true":
            self._guard("starting system metrics", lambda: self._start_system_metrics(existing is not None))

    def _start_system_metrics(self, resumed: bool) -> None:
        """MLflow's own CPU/memory/disk/network (and, with nvidia-ml-py, GPU) sampling for this run.

        ``SystemMetricsMonitor`` is what ``mlflow.start_run(log_system_metrics=True)`` runs; it is used
        directly because this tracker drives runs through ``MlflowClient`` (a run group has N runs in
        one process, which the fluent API's single active run cannot hold). Pinned by
        tests/test_mlflow_view.py::test_runs_carry_dataset_description_tables_and_system_metrics."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        self._system_metrics = SystemMetricsMonitor(self.run_id, resume_logging=resumed,
                                                    tracking_uri=resolve_uri(self.uri))
        self._system_metrics.start()

    def _stop_system_metrics(self) -> None:
        monitor, self._system_metrics = getattr(self, "_system_metrics", None), None
        if monitor is not None:
            self._guard("stopping system metrics", monitor.finish)

    def log_dataset(self, ds) -> None:
        """The run's dataset as an MLflow dataset input (the UI's Dataset column): name, digest, source, and its
        identity, duplicates and test∩train count as dataset tags (``dataset_input``); the identity also as the
        run's ``dataset_id`` tag. Call once the run is started, with the ``TensorData`` it trains on."""
        if self.run_id:
            root = str(Path(str(self.params.get("data.root", "data"))).resolve())

            def log():
                c = client(self.uri)
                c.log_inputs(self.run_id, datasets=[dataset_input(self.run["dataset"], ds, root)])
                if (ds.record or {}).get("identity"):
                    c.set_tag(self.run_id, DATASET_ID_TAG, ds.record["identity"])
            self._guard("logging the dataset", log)

    def log_epoch(self, record: dict) -> None:
        if self.run_id:
            self._guard("logging an epoch", lambda: _log_metrics(client(self.uri), self.run_id, _metrics([record])))

    def catch_up(self, history: list[dict]) -> None:
        """Log epochs the MLflow run misses (e.g. done before a crash, or while the server was down)."""
        if self.run_id:
            self._guard("catching up epochs", lambda: log_missing_epochs(client(self.uri), self.run_id, history))

    def finish(self, result: dict, out_dir: Path) -> bool:
        """Summary metrics, tags, artifacts, terminal status. Returns whether MLflow now has it all."""
        self._stop_system_metrics()
        self.ok = True  # the server may be back after an outage: try once more
        if self.run_id is None:
            found = self.existing()  # the run never reached MLflow while it trained
            if continues(found, result):
                self.start(found)
            else:
                self.start(None, replaces=found)
        if not self.run_id:
            return False
        return bool(self._guard("finishing the run", lambda: finish_run(client(self.uri), self.run_id, result, out_dir)))


def continues(found, result: dict) -> bool:
    """Whether the record ``result`` (a ``result.json``) continues the MLflow run ``found`` — it was logged there, or
    it resumed from a checkpoint whose earlier epochs may be there — rather than starting its config over from
    epoch 0 (then it gets a new MLflow run that replaces ``found``: never two attempts' points in one run)."""
    if found is None:
        return True
    resumed = (result.get("timings") or {}).get("resumed_from_epoch") is not None
    return resumed or result.get("mlflow_run_id") == found.info.run_id


def supersede(c, old, new_run_id: str) -> None:
    """``old`` (an MLflow run) is replaced by the run ``new_run_id``, which started its config over from epoch 0."""
    c.set_tag(old.info.run_id, RESTARTED_AS_TAG, new_run_id)
    if status_of(old) not in DONE:
        c.set_tag(old.info.run_id, STATUS_TAG, str(RunStatus.FAILED))
        if old.info.status == "RUNNING":
            c.set_terminated(old.info.run_id, status="FAILED")


def view_tags(run: dict, protocol: dict) -> dict:
    """What the MLflow UI shows about a run beyond its numbers: its description (MLflow's note), the paper
    tables it feeds (``asym.study.tables_of``) and its protocol's hash."""
    return {NOTE_TAG: describe_run(run, protocol), TABLES_TAG: ",".join(tables_of(run["model"], run.get("freeze", "none"))),
            PROTOCOL_TAG: protocol_hash(protocol), SELECT_ON_TAG: protocol.get("select_on", "test")}


def describe_model(label: str) -> str:
    """One line that explains a model label in words, from its parse, e.g. ``uSF+BN+BM: feedback V = sign(W);
    batch normalisation without affine; Batch Manhattan setting 1``."""
    spec = parse_model(label)
    every = "redrawn every mini-batch" if spec.feedback == "brsf" else "drawn once"
    if spec.feedback in ("brsf", "frsf") and spec.flip:
        feedback = (f"feedback V = M∘S∘sign(W), M ~ U[0,1] and S flipping each sign with probability "
                    f"{spec.flip:g}, {every}")
    else:
        feedback = {"bp": "feedback V = W (symmetric backprop)", "usf": "feedback V = sign(W)",
                    "nusf": "feedback V = sign(W) / fan-in", "brsf": f"feedback V = M∘sign(W), M ~ U[0,1] {every}",
                    "frsf": f"feedback V = M∘sign(W), M ~ U[0,1] {every}",
                    "rndf": f"fixed random feedback V ~ N(0, {RNDF_STD:g}²)"}[spec.feedback]
    norm = ("batch normalisation with learnable scale/shift" if spec.bn_affine else
            "batch normalisation without affine") if spec.batchnorm else "no batch normalisation"
    update = f"Batch Manhattan setting {spec.setting}" if spec.setting else "SGD with momentum (update setting 0)"
    return f"{spec.label}: {feedback}; {norm}; {update}"


def describe_run(run: dict, protocol: dict) -> str:
    """``describe_model`` plus the run's clamp (Exp. C2) and procedure when they are not the default."""
    text = describe_model(run["model"])
    if run.get("freeze", "none") == "bottom":
        text += "; clamped: last layer frozen at its random init"
    elif run.get("freeze", "none") == "top":
        text += "; clamped: every layer before the last frozen"
    if run.get("procedure", "standard") == "large_batch":
        text += (f"; batch {protocol.get('batch_size')} for {protocol.get('large_batch_after')} epochs, then "
                 f"{protocol.get('large_batch_size')}")
    return text


_DIGESTS: dict[int, tuple] = {}  # id(x_train) → (weak reference, digest): a run group hashes its tensors once


def dataset_digest(ds) -> str:
    """The MLflow dataset digest (8 hex digits, MLflow's length) of what a run trains on: from the data's
    prepared-cache key (its content identity, protocol version, seed, input size) and its holdout, for data
    ``asym.data.load`` prepared; else sha256 of the train/test tensors."""
    record = getattr(ds, "record", None) or {}
    if record.get("key"):
        holdout = (getattr(ds, "holdout", None) or {}).get("digest", "")
        return hashlib.sha256(f"{record['key']}|{holdout}".encode()).hexdigest()[:8]
    seen = _DIGESTS.get(id(ds.x_train))
    if seen is not None and seen[0]() is ds.x_train:
        return seen[1]
    h = hashlib.sha256()
    for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    _DIGESTS[id(ds.x_train)] = (weakref.ref(ds.x_train), h.hexdigest()[:8])
    return _DIGESTS[id(ds.x_train)][1]


def dataset_input(name: str, ds, root: str):
    """The ``mlflow.entities.DatasetInput`` of a run's dataset: the UI groups and filters runs by it."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    meta = info(name)
    if meta.reader == "digits":
        source_type, source = "code", {"tags": {"mlflow.source.name": "sklearn.datasets.load_digits"}}
    else:  # a registry dataset under data.root, or the user's own path (folder:/…, npz:/…)
        path = meta.source if meta.reader.startswith("user_") else root
        source_type, source = "local", {"uri": str(Path(path).resolve())}
    profile = {"train_examples": len(ds.y_train), "test_examples": len(ds.y_test), "classes": ds.num_classes,
               "input_shape": list(ds.x_train.shape[1:])}
    dataset = Dataset(name=name if ":" not in name else meta.title, digest=dataset_digest(ds), source_type=source_type,
                      source=json.dumps(source), profile=json.dumps(profile))
    record = getattr(ds, "record", None) or {}
    tags = [InputTag("mlflow.data.context", "train")]
    tags += [InputTag(k, str(record[k])) for k in DATASET_INPUT_TAGS if k in record]
    return DatasetInput(dataset, tags=tags)


# what asym.data.load records about the data (TensorData.record), as MLflow dataset-input tags: the content identity
# and its file count, test images also in training, exact duplicates collapsed (protocol decisions 17, 18)
DATASET_INPUT_TAGS = ("identity", "files", "test_in_train", "duplicates_collapsed", "duplicates_across_classes")


def same_label_datasets(c, experiment_id: str, dataset: str) -> list[tuple[str, str | None]]:
    """The (dataset, dataset_id) pairs of the experiment's runs on user data, so a new run's name tells its
    dataset apart from theirs (``run_name``'s ``others``). Empty for a registry dataset (the paper's rows)."""
    if not is_user(dataset):
        return []
    out = []
    for kind in ("npz", "folder"):
        for r in c.search_runs([experiment_id], filter_string=f"tags.dataset LIKE '{kind}:%'", max_results=50000):
            out.append((r.data.tags.get("dataset"), r.data.tags.get(DATASET_ID_TAG)))
    return out


# ------------------------------------------------------------------------------- who may read and write
class AccessError(RuntimeError):
    """The tracking server refuses these credentials, or this user may not do what is asked (one line)."""


# basic-auth's REST API (mlflow.server.auth.routes.GET_USER_PERMISSION: a user's effective permission, the one
# its request check uses) and the permissions that may write (``can_update`` in mlflow.server.auth.permissions).
# Spelled out rather than imported: importing mlflow.server.auth needs the server's extras (Flask-WTF), which a
# training node does not have. tests/test_auth.py::test_basic_auth_names_match_mlflow pins both on MLflow's own.
USER_PERMISSION_PATH = "/api/3.0/mlflow/users/permissions/get"
WRITE_PERMISSIONS = ("EDIT", "MANAGE")
CREDENTIALS_HELP = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or write ~/.mlflow/credentials"


def check_access(uri: str | None, experiment: str = DEFAULT_EXPERIMENT, write: bool = False) -> bool:
    """Ask the tracking server whether these credentials may read (``write``: write to) ``experiment``.

    Credentials are whatever MLflow's own client sends ($MLFLOW_TRACKING_USERNAME/PASSWORD or
    ~/.mlflow/credentials); nothing here stores or logs them. Raises ``AccessError`` (one line naming the
    server and what is wrong) on 401 and on a user without EDIT (basic-auth's effective permission, the one
    its request check uses). Returns False if the server cannot be reached (the caller decides), True
    otherwise. A local store (SQLite, files) and a server without the basic-auth app always pass.
    A missing experiment passes: any authenticated user may create one (MLflow's basic-auth rule).
    """
    uri = resolve_uri(uri)
    if not uri.startswith(("http://", "https://")):
        return True
    if "@" in urlsplit(uri).netloc:  # the URI is logged as a param and written to runs.json and config.yaml
        raise AccessError(f"tracking URI {urlsplit(uri)._replace(netloc=urlsplit(uri).netloc.rpartition('@')[2]).geturl()} "
                          f"carries credentials: take them out of the URI and {CREDENTIALS_HELP}")
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request
    creds = get_default_host_creds(uri)

    def get(path: str, **params):
        try:
            return http_request(creds, path, "GET", params=params)
        except Exception:
            return None
    r = get("/api/2.0/mlflow/experiments/get-by-name", experiment_name=experiment)
    if r is None or r.status_code >= 500:
        return False
    if r.status_code == 401:
        if creds.username and not creds.password:
            raise AccessError(f"tracking server {uri} needs a password for user '{creds.username}' (HTTP 401): "
                              f"{CREDENTIALS_HELP}")
        if creds.username:
            raise AccessError(f"tracking server {uri} rejected the password of user '{creds.username}' (HTTP 401); "
                              "check MLFLOW_TRACKING_PASSWORD or ~/.mlflow/credentials")
        raise AccessError(f"tracking server {uri} needs credentials (HTTP 401): {CREDENTIALS_HELP}")
    if r.status_code == 403:
        raise AccessError(f"tracking server {uri}: user '{creds.username}' may not read experiment "
                          f"'{experiment}' (HTTP 403)")
    if r.status_code != 200 or not write or not creds.username:
        return True  # 404: no such experiment yet; no username: a server that asked for none
    exp_id = r.json()["experiment"]["experiment_id"]
    p = get(USER_PERMISSION_PATH, username=creds.username, resource_type="experiment", resource_id=exp_id)
    if p is None or p.status_code != 200:
        return True  # a server without the basic-auth app: it ignores credentials, anyone may write
    permission = p.json()["permission"]
    if permission not in WRITE_PERMISSIONS:
        raise AccessError(f"tracking server {uri}: user '{creds.username}' has {permission} on experiment "
                          f"'{experiment}' and may not write to it (HTTP 403); an admin must grant EDIT")
    return True


def require_write_access(uri: str | None, experiment: str = DEFAULT_EXPERIMENT, options: dict = TRAIN_OPTIONS) -> None:
    """``asym-train``'s preflight, before anything trains or is queued: ``AccessError`` unless the server
    takes these credentials for writing to ``experiment``, ``ReadOnlyStore`` for a store that cannot be written,
    ``ExperimentDeleted`` for an experiment in MLflow's trash (the user chooses: restore it or name another).
    An unreachable server only warns (the runs keep their ``result.json``; ``asym-sync`` uploads them later,
    through this same check). ``options``: how the messages name the choice of another store or experiment."""
    limit_http_retries()
    if not check_access(uri, experiment, write=True):
        log.warning("tracking server %s unreachable: its credentials are not checked; runs keep their result.json "
                    "for asym-sync", resolve_uri(uri))
        return
    check_store(uri, experiment, options)


# ------------------------------------------------------------------------------- the store's states
class ExperimentDeleted(AccessError):
    """The experiment is in MLflow's trash: nothing can be logged to it until it is restored (one line)."""


class ReadOnlyStore(AccessError):
    """The tracking store cannot be written (a read-only SQLite file or folder, a ``mode=ro`` URI): one line."""


def deleted_experiment(uri: str, exp, options: dict = TRAIN_OPTIONS) -> str:
    """The one line every entry point prints for a deleted experiment ``exp`` (an ``mlflow.entities.Experiment``)."""
    return (f"MLflow experiment '{exp.name}' (id {exp.experiment_id}) at {uri} is deleted: restore it with "
            f"`MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id {exp.experiment_id}`, "
            f"or choose another experiment with {options['experiment']}")


def read_only_reason(uri: str) -> str | None:
    """Why a local store (SQLite, or a folder of runs) cannot be written, or None: the kernel's answer to
    ``access(W_OK)`` on the file and its folder (it honours read-only mounts and immutable files, also for
    root), and a SQLite URI's own ``mode=ro``/``immutable=1``. A server's store is the server's business."""
    from urllib.parse import parse_qs, urlsplit
    uri = resolve_uri(uri)
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    if uri.startswith("sqlite:///"):
        where, _, query = uri[len("sqlite:///"):].partition("?")
        params = parse_qs(query)
        if params.get("mode") == ["ro"] or params.get("immutable") == ["1"]:
            return f"its URI opens it read-only ({query})"
        path = Path(where.removeprefix("file:"))
    else:
        path = Path(urlsplit(uri).path if uri.startswith("file:") else uri)
    if path.exists():
        folder = path if path.is_dir() else path.parent
        if not os.access(path, os.W_OK):
            return f"{path} is not writable"
    else:
        folder = path.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is not writable"
    return None


def check_store(uri: str | None, experiment: str, options: dict = TRAIN_OPTIONS) -> None:
    """``ReadOnlyStore`` or ``ExperimentDeleted`` (one line each, naming the way out) if runs cannot be logged to
    ``experiment`` at ``uri`` for either reason; a store that cannot be asked is left to the caller."""
    uri = resolve_uri(uri)
    reason = read_only_reason(uri)
    if reason:
        raise ReadOnlyStore(f"MLflow store {uri} is read-only ({reason}): make it writable, or choose another store "
                            f"with {options['uri']}")
    if uri.startswith("sqlite:///") and not Path(uri[10:].partition("?")[0].removeprefix("file:")).exists():
        return  # no store yet, so no deleted experiment; asking would create it before the other checks pass
    try:
        exp = client(uri).get_experiment_by_name(experiment)
    except Exception:  # unreachable, or a server error: not a state to refuse the run for
        return
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise ExperimentDeleted(deleted_experiment(uri, exp, options))


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) is a failure to reach the server: no connection, or no answer in time.
    An answer — 4xx, 5xx, a database error — is not."""
    import requests
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                              TimeoutError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def explain_failure(uri: str | None, experiment: str, run_id: str | None, error: BaseException, what: str) -> str:
    """One line saying which state of the store made ``error`` happen while ``what``: the server unreachable, the
    experiment or the run deleted, the store read-only, else MLflow's own first line — each with its remedy.
    Asks the store (the experiment's and the run's lifecycle stage), never guesses from the message alone."""
    uri = resolve_uri(uri)
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    if unreachable(error):
        return f"MLflow at {uri} is unreachable while {what} ({detail}): run asym-sync once it is back"
    try:
        c = client(uri)
        exp = c.get_experiment_by_name(experiment)
        run = c.get_run(run_id) if run_id else None
    except Exception as probe:
        if unreachable(probe):
            return f"MLflow at {uri} is unreachable while {what} ({detail}): run asym-sync once it is back"
        exp = run = None
    if exp is not None and exp.lifecycle_stage == "deleted":
        return (f"MLflow experiment '{exp.name}' (id {exp.experiment_id}) was deleted while {what}: restore it with "
                f"`MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id {exp.experiment_id}`, "
                "then run asym-sync")
    if run is not None and run.info.lifecycle_stage == "deleted":
        return (f"MLflow run {run_id} was deleted while {what}: asym-sync uploads this run as a new MLflow run "
                f"(or restore it first with `MLFLOW_TRACKING_URI={uri} mlflow runs restore --run-id {run_id}`)")
    reason = read_only_reason(uri) or ("the database is read-only" if "readonly database" in str(error) else None)
    if reason or getattr(error, "error_code", None) == "PERMISSION_DENIED":
        return (f"MLflow store {uri} is read-only while {what} ({reason or detail}): make it writable, "
                "then run asym-sync")
    return f"MLflow at {uri} failed while {what} ({detail}): run asym-sync later"


def log_missing_epochs(c, run_id: str, history: list[dict]) -> None:
    """Log the (metric, epoch) points of ``history`` the run lacks, each metric checked on its own: a diverged
    epoch has a train_loss but no val_error, and must still be logged exactly once."""
    have = {k: {m.step for m in c.get_metric_history(run_id, k)} for k in EPOCH_METRICS}
    _log_metrics(c, run_id, _metrics(history, have))


def finish_run(c, run_id: str, result: dict, out_dir: Path) -> bool:
    from mlflow.entities import Metric
    log_missing_epochs(c, run_id, result["epochs"])
    now = int(time.time() * 1000)
    summary = [Metric(k, float(result[k]), now, 0) for k in SUMMARY_METRICS if result.get(k) is not None]
    _log_metrics(c, run_id, summary)
    for name in (RESULT_FILE, "config.yaml"):
        if (Path(out_dir) / name).exists():
            c.log_artifact(run_id, str(Path(out_dir) / name))
    c.set_tag(run_id, STATUS_TAG, str(result["status"]))  # a RunStatus, or its text read back from result.json
    c.set_terminated(run_id, status=MLFLOW_STATUS.get(result["status"], "FINISHED"))
    return True


def sync(output_root: str | Path, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> dict:
    """Upload every local ``result.json`` under ``output_root`` that MLflow lacks or holds incomplete.

    Idempotent: a run already complete in MLflow is left alone; syncing twice creates no duplicates.
    """
    counts = {"uploaded": 0, "already": 0}
    if not check_access(uri, experiment, write=True):
        raise RuntimeError(f"MLflow at {resolve_uri(uri)} is unreachable: nothing uploaded, run asym-sync again later")
    check_store(uri, experiment, TOOL_OPTIONS)  # read-only, or the experiment deleted: one line, nothing uploaded
    for path in sorted(Path(output_root).rglob(RESULT_FILE)):
        result = json.loads(path.read_text())
        if result.get("status") not in (*DONE, RunStatus.FAILED, RunStatus.INTERRUPTED):
            continue
        run = result["run"]
        if (result.get("dataset") or {}).get("identity"):  # the identity it trained on, not the files' today
            run = {**run, DATASET_ID_TAG: result["dataset"]["identity"]}
        tracker = RunTracker(uri, experiment, run, result["protocol"], result.get("config", {}))
        found = tracker.existing()
        if not tracker.ok:
            raise RuntimeError(f"MLflow at {resolve_uri(uri)} could not be read (see the warning above); "
                               f"{counts['uploaded']} uploaded before it")
        if status_of(found) == result["status"]:
            counts["already"] += 1
            continue
        if continues(found, result):
            tracker.start(found, result.get("git_commit"))
        else:  # a record that started over: its own MLflow run, linked to the one it replaces
            tracker.start(None, result.get("git_commit"), replaces=found)
        if not tracker.finish(result, path.parent):
            raise RuntimeError(f"could not upload {path}")
        counts["uploaded"] += 1
    return counts
