"""``asym-data``: see, fetch and prepare the datasets before a sweep.

    asym-data status   [NAME…] [--check]           what is there, its identity, whether the cache is current
    asym-data download NAME…|paper [--root R]      fetch what a public source serves (resumable, checksummed)
    asym-data prepare  NAME…|paper [--jobs N]      build the prepared tensor caches the runs read
    asym-data table                                docs/datasets.md's dataset table, from the registry

``--root`` is ``data.root`` of ``asym-train`` (default ``data``, relative to the current directory);
``--cache`` and ``--seed`` are ``data.cache`` and ``seed``. Exit codes: 0 every dataset asked for is usable
(status, download) or prepared (prepare); 1 some are not; 2 bad input, a dataset that cannot satisfy its
protocol (prepare refuses it before doing anything), or a file that cannot be decoded (prepare, status --check).
docs/data-checks.md says what "usable", the identity, the scan's skips and --check mean.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import PAPER_DATASETS, DatasetMissing, Survey, cache_path, info, registry_table, survey


class UsageError(ValueError):
    pass


def _names(given: list[str], default: list[str]) -> list[str]:
    """``paper`` → the paper's 15; every name must be in the registry or be ``folder:``/``npz:`` data."""
    out: list[str] = []
    for n in given or default:
        for m in (PAPER_DATASETS if n == "paper" else [n]):
            try:
                info(m)
            except ValueError as e:
                raise UsageError(str(e)) from None
            if m not in out:
                out.append(m)
    return out


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def _how(name: str) -> str:
    d = info(name)
    if d.reader.startswith("user"):
        return "your own data"
    if d.fetch and d.paths:
        return f"asym-data download {name} ({d.fetch})"
    return d.source + (f" — not downloadable: {d.manual}" if d.manual else "")


# ------------------------------------------------------------------ status

SHIPPED_SPLIT = ("mnist", "cifar10", "cifar100", "svhn", "stl10", "flowers102", "split_folders", "user_folder",
                 "timit", "user_npz")  # readers whose dataset ships its own train/test split (protocol decision 17)


def notes_lines(s: Survey) -> list[str]:
    """What status says under its table about one dataset: the scan's skips, duplicates, test∩train."""
    out = []
    if s.skipped:
        out.append(f"  {s.name}: scan {s.skipped} (protocol decision 15)")
    n = s.notes
    if "duplicates_collapsed" in n:
        out.append(f"  {s.name}: {n['duplicates_collapsed']} exact duplicate images collapsed before the split "
                   f"({n.get('duplicates_across_classes', 0)} across classes); no test image occurs in training")
    elif "test_in_train" in n:
        out.append(f"  {s.name}: {n['test_in_train']} test images also occur in training (the dataset's own split)")
    elif s.usable and info(s.name).reader in SHIPPED_SPLIT + ("caltech101", "caltech256", "class_folders"):
        out.append(f"  {s.name}: duplicates and test images also in training: counted when decoded "
                   f"(asym-data prepare {s.name}, or status --check)")
    return out


def status(args) -> int:
    names = _names(args.names, PAPER_DATASETS + ["digits"])
    surveys = [survey(n, args.root, args.seed, args.cache, check=args.check) for n in names]
    rows = [["dataset", "state", "cache", "identity", "looked at", "found", "split", "get it"]]
    for s in surveys:
        rows.append([s.name, s.state, s.cache, s.identity.short if s.identity else "—", str(s.path),
                     s.detail if s.state == "present" else "—", info(s.name).protocol, _how(s.name)])
    print(_table(rows))
    for s in surveys:
        for line in notes_lines(s):
            print(line)
    bad = [s for s in surveys if not s.usable]
    for s in bad:
        print(f"  {s.name}: {s.detail}")
    print(f"{len(surveys) - len(bad)} of {len(surveys)} datasets usable under {Path(args.root).expanduser().resolve()}"
          + (" (every file decoded)" if args.check else "")
          + (f"; not usable: {', '.join(s.name for s in bad)}" if bad else ""))
    refused = [s for s in surveys if s.refused]
    if refused:  # --check: a file that does not decode is refused as prepare refuses it
        print("error: " + " | ".join(s.detail for s in refused), file=sys.stderr)
        return 2
    return 1 if bad else 0


# ------------------------------------------------------------------ download

def download(args) -> int:
    from . import remote
    names = _names(args.names, [])
    root = Path(args.root).expanduser()
    failed = []
    for name in names:
        d = info(name)
        before = survey(name, root)
        if before.state == "present":
            print(f"{name}: present at {before.path}")
            continue
        if d.reader == "digits" or d.reader.startswith("user"):
            print(f"{name}: {before.state}, nothing to fetch ({_how(name)})")
            failed.append(name)
            continue
        try:
            remote.remotes(name)
        except KeyError:
            print(f"{name}: cannot fetch — {d.manual or 'no public source'}; {d.source}")
            failed.append(name)
            continue
        try:
            remote.fetch(name, root)
        except remote.DownloadError as e:
            print(f"{name}: download failed: {e}", file=sys.stderr)
            failed.append(name)
            continue
        after = survey(name, root)
        print(f"{name}: {after.state} at {after.path}" + (f" ({after.detail})" if after.state != "present" else ""))
        if after.state != "present":
            failed.append(name)
    if failed:
        print(f"not present: {', '.join(failed)} (see above; asym-data status --root {root} shows every dataset)")
    return 1 if failed else 0


# ------------------------------------------------------------------ prepare

def _prepare_one(name: str, root: str, seed: int, cache: str | None, threads: int) -> dict:
    """Build (or find) the cache of one dataset; the sizes ``prepare`` prints. Runs in a worker process."""
    import torch
    from . import load
    if threads:
        torch.set_num_threads(threads)
    t0 = time.monotonic()
    d = load(name, root, seed=seed, cache=cache)
    path = cache_path(name, root, seed, cache)
    return {"name": name, "classes": d.num_classes, "train": len(d.y_train), "test": len(d.y_test),
            "bytes": path.stat().st_size, "path": str(path), "seconds": time.monotonic() - t0, **(d.record or {})}


def _cached_sizes(name: str, root: str, seed: int, cache: str | None) -> dict:
    import torch
    path = cache_path(name, root, seed, cache)
    d = torch.load(path, weights_only=True, mmap=True)  # shapes only: nothing is read into memory
    return {"name": name, "classes": d["num_classes"], "train": len(d["y_train"]), "test": len(d["y_test"]),
            "bytes": path.stat().st_size, "path": str(path), "seconds": 0.0, **d.get("record", {})}


def _line(r: dict, verb: str) -> str:
    notes = ""
    if r.get("duplicates_collapsed"):
        notes += f", {r['duplicates_collapsed']} duplicates collapsed"
    if "test_in_train" in r:
        notes += f", {r['test_in_train']} test images also in training"
    ident = f"identity {r['identity'][:8]}, " if r.get("identity") else ""
    return (f"{r['name']}: {verb} — {r['classes']} classes, train {r['train']:,}, test {r['test']:,}{notes}, "
            f"{ident}cache {_fmt_bytes(r['bytes'])} ({r['path']})")


def prepare(args) -> int:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context
    from tqdm import tqdm
    if args.jobs < 1:
        raise UsageError(f"--jobs must be ≥ 1, got {args.jobs}")
    names = _names(args.names, [])
    surveys: dict[str, Survey] = {n: survey(n, args.root, args.seed, args.cache) for n in names}
    refused = [s for s in surveys.values() if not s.usable]
    if refused:  # before anything is done
        raise UsageError("cannot prepare " + " | ".join(s.detail for s in refused)
                         + f" (asym-data status --root {args.root})")
    todo = [n for n, s in surveys.items() if s.cache != "current"]
    for n in names:
        if n not in todo:
            print(_line(_cached_sizes(n, args.root, args.seed, args.cache), "already prepared"), flush=True)
    if not todo:
        return 0
    root = str(Path(args.root).expanduser().resolve())
    threads = max(1, (os.cpu_count() or 1) // min(args.jobs, len(todo)))
    failed: list[str] = []
    bar = tqdm(total=len(todo), unit="dataset", desc="prepare", disable=not sys.stderr.isatty())
    if args.jobs == 1 or len(todo) == 1:
        from . import readers  # decoding is the one subcommand that needs torch (status stays light)
        readers.DECODE_PROGRESS = sys.stderr.isatty()
        for n in todo:
            print(f"{n}: decoding…", flush=True)
            try:
                r = _prepare_one(n, root, args.seed, args.cache, 0)
            except DatasetMissing as e:
                failed.append(str(e))
            else:
                print(_line(r, f"prepared in {r['seconds']:.0f} s"), flush=True)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_prepare_one, n, root, args.seed, args.cache, threads): n for n in todo}
            for fut in as_completed(futures):
                try:
                    r = fut.result()
                except DatasetMissing as e:
                    failed.append(str(e))
                else:
                    tqdm.write(_line(r, f"prepared in {r['seconds']:.0f} s"), file=sys.stdout)  # above the bar
                bar.update(1)
    bar.close()
    if failed:
        print("error: " + " | ".join(failed), file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------ entry point

class _Parser(argparse.ArgumentParser):
    """Bad arguments: one ``error: …`` line and exit code 2, like every asym command."""

    def error(self, message):
        print(f"error: {message} (asym-data --help)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="asym-data", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p, seed=True):
        p.add_argument("--root", default="data", help="data.root of asym-train (default: ./data)")
        if seed:
            p.add_argument("--cache", default=None, help="data.cache (default: $ASYM_CACHE or ~/.cache/asym)")
            p.add_argument("--seed", type=int, default=0, help="the runs' seed (the random splits depend on it)")

    p = sub.add_parser("status", help="every dataset: present / missing / incomplete, its identity and cache")
    p.add_argument("names", nargs="*", metavar="NAME", help="registry names, paper, folder:/path or npz:/file "
                   "(default: the paper's 15 and digits)")
    p.add_argument("--check", action="store_true", help="decode every file a run will use, as prepare does, "
                   "writing nothing: an undecodable file is an error (exit 2); counts duplicates and test∩train")
    common(p)
    p = sub.add_parser("download", help="fetch what a public source serves")
    p.add_argument("names", nargs="+", metavar="NAME", help="registry names or paper")
    common(p, seed=False)
    p = sub.add_parser("prepare", help="build the prepared tensor caches the runs read")
    p.add_argument("names", nargs="+", metavar="NAME", help="registry names, paper, folder:/path or npz:/file")
    p.add_argument("--jobs", type=int, default=1, help="datasets prepared in parallel (processes)")
    common(p)
    sub.add_parser("table", help="print the dataset table of docs/datasets.md (markdown), generated from the registry")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        if args.command == "table":
            sys.stdout.write(registry_table())
            return 0
        return {"status": status, "download": download, "prepare": prepare}[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
