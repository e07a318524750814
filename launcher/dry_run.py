"""``hydra.sweeper.dry_run=true``: what a sweep would do and cost, with nothing queued, written or logged.

Any launcher (in-process, ``local``, ``slurm``) and with or without data on disk: the report lists the runs and
jobs, how the launcher would run them (SLURM: array tasks and job arrays fitted to the cluster's limits, and the
sbatch script), the runs the tracking store already has done (skip-done skips them), the datasets that are
missing (one line each), and the estimated CPU- and GPU-hours of the runs still to do (``asym.launcher.cost``).
``hydra.launcher.dry_run=true``, the SLURM launcher's older key, is an alias.
"""
from __future__ import annotations

from asym import tracking
from asym.record import DONE

from .cost import Estimate, estimate, read_costs
from .plan import protocol_of

HEADER = "dry run: nothing queued, written or logged"


def done_in_store(uri: str | None, experiment: str, entries: list[dict]) -> tuple[set[str] | None, str]:
    """Config hashes of the plan's runs that the store already has finished or diverged, or (None, why) when
    the store cannot be read. Reading only: a SQLite file that does not exist is not created."""
    try:
        df = tracking.runs_table(uri, experiment)
    except Exception as e:  # unreachable server, no credentials: the plan still stands
        return None, str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    done = set() if df is None else set(df.loc[df[tracking.STATUS_TAG].isin(DONE), tracking.HASH_TAG])
    return {e["config_hash"] for e in entries} & done, ""


def hours(h: float | None) -> str:
    return "unknown" if h is None else f"{h:,.1f}" if h < 100 else f"{h:,.0f}"


def cost_lines(est: Estimate, machines: dict[str, str], todo: int) -> list[str]:
    """The estimate as a small table per arch, then the totals."""
    lines = [f"estimated cost of the {todo} runs to do (per-step costs of benchmarks/bench_steps.py):",
             f"  {'net':<12}{'runs':>7}{'train steps':>14}{'CPU-hours':>12}{'GPU-hours':>12}"]
    for arch in sorted(est.runs):
        lines.append(f"  {arch:<12}{est.runs[arch]:>7}{est.steps[arch]:>14,}"
                     f"{hours(est.hours['cpu'].get(arch)):>12}{hours(est.hours['cuda'].get(arch)):>12}")
    lines.append(f"  {'total':<12}{sum(est.runs.values()):>7}{sum(est.steps.values()):>14,}"
                 f"{hours(est.total_hours('cpu')):>12}{hours(est.total_hours('cuda')):>12}")
    lines.append(f"  CPU: one core per run, measured on {machines.get('cpu', 'no machine')}")
    lines.append(f"  GPU: measured on {machines['cuda']}" if "cuda" in machines else
                 "  GPU: unknown — no GPU per-step costs measured yet (python benchmarks/bench_steps.py "
                 "--device cuda --write)")
    lines += [f"  {note}" for note in est.assumed]
    if est.unsized:
        lines.append(f"  not estimated (size unknown until read): {', '.join(est.unsized)}")
    return lines


def report(config, entries: list[dict], n_jobs: int, launcher_lines: list[str],
           missing: list[tuple[str, str, str]], protocols: dict | None = None) -> str:
    """The dry run's text: plan, launcher, store, datasets, cost. ``missing``: (dataset, state, one line) of the
    datasets not ready (``plan.missing_datasets``); ``protocols``: protocol hash → protocol of the entries (each
    run is priced under its own; without it, under the sweep's ``train`` config)."""
    tables = sorted({t for e in entries for t in e["tables"]})
    datasets = sorted({e["run"]["dataset"] for e in entries})
    unit = "jobs" if n_jobs == len(entries) else "jobs (run groups, engine=group)"
    lines = [HEADER,
             f"plan: {len(entries)} runs in {n_jobs} {unit}; {len(datasets)} datasets; "
             f"tables {', '.join(tables) or 'none'}", *launcher_lines]
    uri = tracking.resolve_uri(config.tracking.uri)
    done, why = done_in_store(config.tracking.uri, config.tracking.experiment, entries)
    where = f"{uri}, experiment {config.tracking.experiment!r}"
    lines.append(f"already done: unknown ({why})" if done is None else
                 f"already done: {len(done)} of {len(entries)} runs in {where} (skipped when launched)")
    absent = [(n, detail) for n, state, detail in missing if state != "unprepared"]
    unprepared = [n for n, state, _ in missing if state == "unprepared"]
    if absent:
        lines.append(f"missing datasets: {len(absent)} of {len(datasets)} (asym-data status --root "
                     f"{config.data.root} lists every dataset):")
        lines += [f"  {name}: {detail.removeprefix(f'dataset {name!r} ')}" for name, detail in absent]
    else:
        lines.append(f"datasets: all {len(datasets)} found")
    if unprepared:
        lines.append(f"not prepared yet: {', '.join(unprepared)} — decoded into the tensor cache before the sweep "
                     f"starts (asym-data prepare NAME --root {config.data.root} does it ahead)")
    todo = [e for e in entries if done is None or e["config_hash"] not in done]
    protocol = protocol_of(config.train)
    costs = read_costs()
    lines += cost_lines(estimate(todo, protocol, costs, protocols=protocols), costs.machines, len(todo))
    return "\n".join(lines)
