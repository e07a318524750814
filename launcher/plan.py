"""A sweep's plan: which runs exist, checked before anything is launched, written where ``asym-status`` reads it.

``runs.json`` in the sweep directory lists every run of the sweep (its overrides, run fields, config hash,
readable name and the paper tables it feeds) plus, once submitted, the scheduler's job id of each.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from omegaconf import OmegaConf

from asym import data, tracking
from asym.config import RUN_KEYS, TrainConf, check_config, check_seeds, deleted, run_spec
from asym.files import write_json
from asym.labels import parse_model
from asym.protocol import Protocol, check_batch_sizes
from asym.overrides import OverrideError, check_forms, explain, group_options
from asym.overrides import parse as parse_overrides
from asym.study import tables_of

PLAN_FILE = "runs.json"


def _canonical(label: str) -> str:
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


SWEEP_GROUP = "sweep"   # the config group of the sweep files (sweeps/*.yaml)


def sweep_jobs(config, arguments: list[str], loader) -> list[list[str]]:
    """The jobs of a sweep, each a list of overrides, as Hydra's ``BasicSweeper`` splits them (the sweep file's
    ``hydra.sweeper.params`` first, then the command line's ``arguments``; ``loader`` lets ``glob()`` list a
    config group), minus the combinations that do not exist and duplicates (``select_jobs``), then repeated per
    seed (``expand_seeds``).

    A sweep over sweep files (``+sweep=table2,table3``, ``+sweep=glob(table*)``) is the union of their grids,
    each composed with the rest of the command line (a run they share is planned once, by ``plan``).
    Raises OverrideError/ValueError with one line: an unparsable override, ``interval()`` (not a grid), a
    swept ``seeds``, ``seeds`` with ``seed``, a sweep with no runs."""
    jobs = _grid(config, list(arguments), loader)
    if not jobs:
        raise ValueError(f"this sweep has no runs ({' '.join(arguments) or 'no overrides'}): a sweep needs at "
                         "least one value per key, and only_for_models leaves out runs that do not exist")
    return expand_seeds(jobs, config.seeds)


def _grid(config, arguments: list[str], loader) -> list[list[str]]:
    # Hydra's own split of a sweep into jobs; its sweeper has no public import path (pinned by
    # test_private_apis_we_rely_on_still_exist)
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    sweeper = config.hydra.sweeper
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    parsed = parse_overrides(params + arguments, loader)
    check_forms(parsed)
    for o in parsed:
        if o.key_or_group == "seeds" and o.is_sweep_override():
            raise ValueError("seeds is a count, not a sweep axis: seeds=3 runs seeds 0, 1, 2 (or sweep seed=0,1,2)")
    files = [(i, o) for i, o in enumerate(parsed[len(params):]) if o.key_or_group == SWEEP_GROUP
             and o.is_sweep_override()]
    if files:
        i, o = files[0]
        names = list(o.sweep_string_iterator())
        if not names:
            options = group_options(loader.get_group_options(SWEEP_GROUP))
            raise OverrideError(f"{o.input_line} selects no sweep file; choose from {', '.join(options)}")
        union = []
        for name in names:
            mine = [*arguments[:i], f"{o.get_key_element()}={name}", *arguments[i + 1:]]
            union += _grid(compose_sweep(config, mine, loader), mine, loader)
        return union
    try:
        jobs = BasicSweeper.split_arguments(parsed, None)[0]
    except Exception as e:
        raise OverrideError(explain(e, params + arguments)) from None
    return select_jobs(jobs, dict(sweeper.get("only_for_models") or {}))


def compose_sweep(config, task_overrides: list[str], loader):
    """The sweep's primary config for these task overrides, composed as Hydra composes a multirun's."""
    from hydra.types import RunMode
    lines = [*config.hydra.overrides.hydra, *task_overrides]
    try:
        return loader.load_configuration(config.hydra.job.config_name, lines, RunMode.MULTIRUN)
    except Exception as e:
        raise OverrideError(explain(e, lines)) from None


def protocol_of(train_node) -> dict:
    """The protocol (``asym.protocol.Protocol`` as a dict) a ``train`` config node describes."""
    return asdict(TrainConf(**OmegaConf.to_container(train_node, resolve=True)).protocol())


def plan(config, jobs: list[list[str]], job_config: Callable[[list[str]], object], check_data: bool = True,
         missing: list | None = None, protocols: dict | None = None) -> list[dict]:
    """Every run of the sweep, validated, each planned once, with its datasets on disk (``check_data``). Raises
    OverrideError/ValueError with one line, or DatasetMissing naming every dataset of the sweep that is missing —
    unless ``missing`` is a list (the dry run): the datasets not ready are appended to it instead
    (``missing_datasets``: nothing decoded or written). ``protocols``, if a dict, gets each entry's protocol by its
    ``protocol_hash`` (the dry run prices each run under its own: a sweep may vary ``train.*``).

    Each job is checked on its config as Hydra composes it: ``job_config(overrides)`` composes the job's other
    overrides (the protocol, ``data.*``, sweep file…) once per distinct set, checked whole (``check_config``);
    on it, the job's overrides of the run keys are applied by Hydra's own override code (once per distinct
    override of each key: top-level scalars, so they commute; an interpolated run key composes the whole job).
    Two jobs whose configs differ only in ``tables`` (a run two tables share) are one run: the later is dropped.
    The entries' ``overrides`` are the jobs to launch, ``num`` their index.
    """
    tables = functools.lru_cache(maxsize=None)(tables_of)   # a few dozen (model, freeze) pairs in any sweep
    composed, fields_cache, entries, seen, wanted, fits = {}, {}, [], set(), [], {}
    for job in jobs:
        rest = tuple(o for o in job if parse(o).key_or_group not in RUN_KEYS and not parse(o).is_hydra_override())
        if rest not in composed:
            composed[rest] = _composed(job_config, list(rest))
        cfg, small, proto, signature = composed[rest]
        fields = _run_fields(job, rest, small, fields_cache)
        run = run_spec(fields if fields is not None else _composed(job_config, list(job))[0])
        fields = asdict(run)
        identity = (tracking.config_hash(fields, proto), signature)
        if identity in seen:
            continue
        seen.add(identity)
        wanted.append((run.dataset, str(cfg.data.root), bool(cfg.data.download), run.seed))
        proto_hash = tracking.protocol_hash(proto)
        fits.setdefault((run.dataset, str(cfg.data.root), run.seed, proto_hash), (proto, []))[1].append(run)
        if protocols is not None:
            protocols[proto_hash] = proto
        entries.append({"num": len(entries), "overrides": list(job), "run": fields, "name": tracking.run_name(fields),
                        "config_hash": identity[0], "protocol_hash": proto_hash,
                        "select_on": proto["select_on"], "tables": tables(run.model, run.freeze)})
    if missing is not None:
        missing += missing_datasets(wanted, config.data.get("cache"))
    elif check_data:  # every missing or incomplete dataset of the sweep in one message, not the first one found
        data.check_all(wanted, cache=config.data.get("cache"))
        check_batch_fit(fits, config.data.get("cache"))
    return entries


def check_batch_fit(fits: dict, cache=None) -> None:
    """Every batch size of the sweep fits its runs' training split (protocol decision 14), from the prepared
    caches' counts: ValueError with one line before anything runs. ``fits``: (dataset, root, seed, protocol hash)
    → (protocol, runs). The holdout of ``train.select_on=val`` is checked where the run loads its data."""
    for (name, root, seed, _), (proto, runs) in fits.items():
        n = data.train_count(name, root, seed, cache)
        if n is not None:
            check_batch_sizes(Protocol(**proto), runs, n, name)


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


def _composed(job_config, overrides: list[str]) -> tuple:
    """A job config composed by Hydra and checked whole; its run keys alone (to apply a job's run keys on);
    its protocol; what else defines its jobs (every key but the run keys, ``tables`` and ``hydra``)."""
    import copy
    import json

    from omegaconf import open_dict
    try:
        cfg = job_config(overrides)
    except Exception as e:
        raise OverrideError(explain(e, overrides)) from None
    check_config(cfg)  # every train.* and other value, before anything runs
    small = copy.deepcopy(cfg)
    with open_dict(small):
        for k in [k for k in small if k not in RUN_KEYS]:
            del small[k]
    rest = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in cfg if k not in RUN_KEYS and k not in ("hydra", "tables")}
    return cfg, small, protocol_of(cfg.train), json.dumps(rest, sort_keys=True, default=str)


_ABSENT, _INTERPOLATED = object(), object()


def _run_fields(job: list[str], rest: tuple, small, cache: dict):
    """The run keys of a job config: ``small`` (its other overrides' config, run keys only) with the job's
    overrides of each run key applied by Hydra (``ConfigLoaderImpl._apply_overrides_to_config``, private: Hydra
    has no public call that applies overrides to a config; pinned by test_private_apis_we_rely_on_still_exist).
    None when a run key is an interpolation (the whole job is composed instead)."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    fields = {}
    for key in RUN_KEYS:
        lines = tuple(o for o in job if parse(o).key_or_group == key)
        if (rest, key, lines) not in cache:
            cfg = copy.deepcopy(small)
            try:
                ConfigLoaderImpl._apply_overrides_to_config([parse(o) for o in lines], cfg)
            except Exception as e:
                raise OverrideError(explain(e, list(lines))) from None
            cache[rest, key, lines] = (_ABSENT if key not in cfg else _INTERPOLATED
                                       if OmegaConf.is_interpolation(cfg, key) else cfg[key])
        value = cache[rest, key, lines]
        if value is _ABSENT:
            raise deleted(key)
        if value is _INTERPOLATED:
            return None
        fields[key] = value
    return SimpleNamespace(**fields)


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

