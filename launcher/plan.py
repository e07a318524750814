"""A sweep's plan: which runs exist, checked before anything is launched, written where ``asym-status`` reads it.

``runs.json`` in the sweep directory lists every run of the sweep (its overrides, run fields, config hash,
readable name and the paper tables it feeds) plus, once submitted, the scheduler's job id of each.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from asym import data, tracking
from asym.config import RUN_KEYS, TrainConf, check_config, check_seeds, run_spec
from asym.files import write_json

PLAN_FILE = "runs.json"


def _canonical(label: str) -> str:
    from asym.labels import parse_model
    try:
        return parse_model(label).label
    except ValueError:
        return label  # reported by plan(), as one line


@functools.lru_cache(maxsize=None)
def parse(override: str):
    """One override as Hydra parses it (cached: a sweep of thousands of jobs repeats a few dozen strings)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    return OverridesParser.create().parse_override(override)


def job_values(job: list[str]) -> dict[str, Any]:
    """What a job's overrides set, config key → value, read by Hydra's own parser, never by splitting strings:
    ``++lr_mult=10`` sets ``lr_mult``, a quoted value loses its quotes, ``\\,`` is a comma. ``~key`` (back to the
    default) and ``hydra.*`` are left out."""
    return {o.key_or_group: o.value() for o in map(parse, job) if not o.is_delete() and not o.is_hydra_override()}


def select_jobs(jobs: list[list[str]], only_for_models: dict[str, list[str]]) -> list[list[str]]:
    """Hydra's cartesian product minus combinations that do not exist and duplicates; order kept.

    ``only_for_models`` maps ``key=value`` to the models it applies to, e.g. ``procedure=large_batch``
    → ``[uSF+BM]``. Labels compare canonically (``BM1`` is ``BM``), so a run shared by tables is launched once.
    """
    allowed = {k: {_canonical(m) for m in v} for k, v in only_for_models.items()}
    seen, out = set(), []
    for job in jobs:
        kv = job_values(job)
        model = _canonical(str(kv.get("model", "")))
        if any(f"{k}={v}" in allowed and model not in allowed[f"{k}={v}"] for k, v in kv.items()):
            continue
        identity = tuple(sorted((k, repr(v)) for k, v in {**kv, "model": model}.items()))
        if identity not in seen:
            seen.add(identity)
            out.append(job)
    return out


def expand_seeds(jobs: list[list[str]], seeds: int) -> list[list[str]]:
    """``seeds=K``: every job K times, with ``seed=0`` … ``seed=K-1``, seed-major (all of seed 0 first, so a
    sweep cut short still has whole tables of its first seeds). K = 1 leaves the jobs as they are (their own
    ``seed``). ValueError if a job also sets ``seed``: two ways of choosing the seeds, one must go."""
    if check_seeds(seeds) == 1:
        return jobs
    for job in jobs:
        if "seed" in job_values(job):
            raise ValueError(f"seeds={seeds} runs seeds 0 … {seeds - 1} and seed={job_values(job)['seed']} chooses "
                             "one: use one of them (seeds=K, or seed=a,b,… for other seeds)")
    return [[*job, f"seed={k}"] for k in range(seeds) for job in jobs]


def _protocol(train_node) -> dict:
    return asdict(TrainConf(**OmegaConf.to_container(train_node, resolve=True)).protocol())


def plan(config, jobs: list[list[str]], job_config: Callable[[list[str]], object],
         missing: list | None = None) -> list[dict]:
    """Every run of the sweep, validated, with its datasets on disk. Raises ValueError, or DatasetMissing naming
    every dataset of the sweep that is missing or incomplete — unless ``missing`` is a list (the dry run):
    then the missing datasets are appended to it (``missing_datasets``) instead.

    ``job_config(overrides)`` composes one job's config. The run keys of a job are read from its overrides
    as Hydra parses them (``job_values``); everything else (the protocol, ``data.*``) from the composed
    config of the job, composed once per distinct set of the job's other overrides.
    """
    from asym.analysis.tables import tables_of
    base = {k: config[k] for k in RUN_KEYS}
    wanted, entries, composed = [], [], {}
    for num, job in enumerate(jobs):
        kv = job_values(job)
        rest = tuple(o for o in job if parse(o).key_or_group not in RUN_KEYS and not parse(o).is_hydra_override())
        if rest not in composed:
            cfg = job_config(list(rest)) if rest else config
            check_config(cfg)  # every train.* and other value, before anything runs
            composed[rest] = (_protocol(cfg.train), cfg.data.root, bool(cfg.data.download))
        proto, root, download = composed[rest]
        deleted = {parse(o).key_or_group for o in job if parse(o).is_delete()}
        run = run_spec(OmegaConf.create({**{k: v for k, v in base.items() if k not in deleted},
                                         **{k: kv[k] for k in RUN_KEYS if k in kv}}))
        wanted.append((run.dataset, str(root), download, run.seed))
        fields = asdict(run)
        entries.append({"num": num, "overrides": list(job), "run": fields, "name": tracking.run_name(fields),
                        "config_hash": tracking.config_hash(fields, proto),
                        "protocol_hash": tracking.protocol_hash(proto), "select_on": proto["select_on"],
                        "tables": tables_of(run.model, run.freeze)})
    if missing is not None:
        missing += missing_datasets(wanted, config.data.get("cache"))
        return entries
    # every missing or incomplete dataset of the sweep in one message, not the first one found
    data.check_all(wanted, cache=config.data.get("cache"))
    return entries


def missing_datasets(wanted, cache=None) -> list[tuple[str, str, str]]:
    """(dataset, state, one line) for each distinct ``(name, root, download, seed)`` of ``wanted`` that a sweep
    could not start on as it is: ``missing`` or ``incomplete`` (``asym.data.survey``: file names, sizes and keys,
    nothing decoded or written), or ``unprepared`` (present, but its tensor cache is not current: the sweep's
    preflight decodes it first). A dataset is listed once, at its first seed; ``download`` ones are fetched later."""
    out: dict[str, tuple[str, str, str]] = {}
    for name, root, download, seed in dict.fromkeys(tuple(w) for w in wanted):
        if name in out or download or data.info(name).reader == "digits":
            continue
        s = data.survey(name, root, seed, cache)
        if not s.usable:
            out[name] = (name, s.state, s.detail)
        elif s.cache != "current":
            out[name] = (name, "unprepared", f"present at {s.path}; its cache is {s.cache}")
    return list(out.values())


def _number(x: float) -> str:
    """``10``, ``0.01``: short where that is exact, else Python's round-trip repr."""
    short = f"{float(x):g}"
    return short if float(short) == float(x) else repr(float(x))


def group_jobs(jobs: list[list[str]], entries: list[dict], default_lr_mult: float) -> list[list[str]]:
    """``engine=group``: jobs that differ only in ``lr_mult`` become one job with ``lr_mults=[…]``.

    The plan's entries are renumbered to their group's job, so ``asym-status`` still finds each run.
    """
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(tuple(o for o in job if parse(o).key_or_group != "lr_mult"), []).append(i)
    out = []
    for num, (rest, members) in enumerate(groups.items()):
        mults = [_number(entries[i]["run"]["lr_mult"]) for i in members]  # the planned (parsed) values
        out.append([*rest, f"lr_mults=[{','.join(mults)}]"])
        for i in members:
            entries[i]["num"] = num
    return out


def write(sweep_dir: Path, entries: list[dict], config) -> None:
    doc = {"tracking_uri": tracking.resolve_uri(config.tracking.uri), "experiment": config.tracking.experiment,
           "output_root": str(Path(config.output_root).resolve()), "runs": entries, "jobs": {}}
    write_json(Path(sweep_dir) / PLAN_FILE, doc)  # atomic: a reader never sees half a plan


def record_jobs(sweep_dir: Path, scheduler: str, job_ids: dict[int, str], **fields: Any) -> None:
    """Remember which scheduler job runs which sweep entry (``asym-status`` asks the scheduler about them), and
    ``fields`` about the submission (e.g. ``submitit_folder``, where the jobs leave their results and logs)."""
    path = Path(sweep_dir) / PLAN_FILE
    doc = json.loads(path.read_text())
    doc["scheduler"] = scheduler
    doc.update(fields)
    doc["jobs"].update({str(k): v for k, v in job_ids.items()})
    write_json(path, doc)


def record_not_submitted(sweep_dir: Path, nums: list[int], reason: str) -> None:
    """``sbatch`` refused these jobs: the plan says so, with SLURM's reason (``asym-status``: "not submitted")."""
    path = Path(sweep_dir) / PLAN_FILE
    doc = json.loads(path.read_text())
    doc["not_submitted"] = {"reason": reason, "jobs": sorted({*doc.get("not_submitted", {}).get("jobs", []), *nums})}
    write_json(path, doc)


def read(sweep_dir: Path) -> dict:
    return json.loads((Path(sweep_dir) / PLAN_FILE).read_text())

