"""The paper's 15 datasets, the offline ``digits`` demo, and user data — as tensors ready to train on.

``load(name, root, ...)`` returns a ``TensorData``: the train and test splits decoded, resized to the
arch's input size and normalised per channel with train-split statistics (protocol decision 11 in
docs/protocol.md), cached on disk once (key: dataset, protocol version, seed, input size and the files'
content ``identity``, protocol decision 18). The trainer moves the tensors onto its device and slices batches
from a seeded ``randperm`` — no DataLoader. Those live in ``asym.data.tensors`` and load on first use (PEP 562):
this package itself is torch-free.

``DATASETS`` is the registry (the one owner of each dataset's name, row label, net, split rule, paths and
source; docs/datasets.md's table is ``registry_table()``). ``survey`` looks at the files without decoding them
(``check=True``: decodes them all, torch-free, writing nothing); ``check_available``/``check_all`` also decode
what a run will use, into the cache; ``labels`` names datasets apart in tables and run names; ``asym-data``
(``asym.data.cli``) puts status, download and prepare on the command line. The folder scan, the pixel
conversion and the duplicate rules are ``asym.data.scan`` and ``asym.data.images`` (protocol decisions 15–17).
"""
from __future__ import annotations

import glob
import hashlib
import importlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..archs import input_shape
from . import manifest
from . import sources
from .manifest import Identity
from .scan import describe_skipped

PROTOCOL_VERSION = 2  # bump when a split or preprocessing rule changes: old cache entries are ignored
# v2: per-class protocols take n_train, then up to n_test (all that remain) from every class with > n_train images

DatasetMissing = sources.DatasetMissing
DatasetIncomplete = sources.DatasetIncomplete


@dataclass(frozen=True)
class DatasetInfo:
    name: str          # registry key, used in configs
    title: str         # the row label in the paper's tables
    arch: str          # Table 1 family
    num_classes: int
    protocol: str      # the split rule (protocol decision 12 in docs/protocol.md)
    reader: str        # function name in asym.data.sources
    source: str        # how a user gets the files
    paths: tuple[str, ...] = ()  # where the reader looks, relative to data.root; the first that exists wins
    fetch: str = ""    # who `asym-data download` fetches it from ("" = it cannot; ``manual`` says why)
    manual: str = ""   # why it cannot be fetched (licence, registration, no stable URL)


_TV = "torchvision"
_DL = "`asym-data download {}`"
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in [
    DatasetInfo("mnist", "MNIST", "mnist", 10, "standard 60k/10k split", "mnist",
                _DL.format("mnist"), ("MNIST/raw",), _TV),
    DatasetInfo("cifar10", "CIFAR", "cifar", 10, "standard 50k/10k split", "cifar10",
                _DL.format("cifar10"), ("cifar-10-batches-py",), _TV),
    DatasetInfo("cifar100", "CIFAR100", "cifar", 100, "standard 50k/10k split", "cifar100",
                _DL.format("cifar100"), ("cifar-100-python",), _TV),
    DatasetInfo("svhn", "SVHN", "svhn", 10, "standard train/test split (no extra)", "svhn",
                _DL.format("svhn"), ("train_32x32.mat", "test_32x32.mat"), _TV),
    DatasetInfo("stl10", "STL10", "default119", 10, "standard 5k/8k split", "stl10",
                _DL.format("stl10"), ("stl10_binary",), _TV),
    DatasetInfo("caltech101", "Cal101", "default119", 102,
                "102 classes (101 + background), 30 train / up to 10 test per class", "caltech101",
                _DL.format("caltech101"), ("caltech101/101_ObjectCategories",), _TV),
    DatasetInfo("caltech256_101", "Cal256-101", "default119", 102,
                "102 random classes, 30 train / up to 10 test per class", "caltech256",
                _DL.format("caltech256_101"), ("caltech256/256_ObjectCategories",), _TV),
    DatasetInfo("icub", "iCub", "default119", 10, "iCubWorld categorisation protocol (its train/test folders)",
                "split_folders", "get it from the iCubWorld site, arranged as ROOT/icub/{train,test}/<class>/*",
                ("icub",), "", "no stable URL for the categorisation protocol's layout"),
    DatasetInfo("flowers17", "Flowers17", "default119", 17, "standard split 1 (train+val / test)",
                "split_folders", _DL.format("flowers17") + " (Oxford VGG: 17flowers.tgz + datasplits.mat)",
                ("flowers17",), "Oxford VGG"),
    DatasetInfo("flowers102", "Flowers102", "default119", 102, "standard split (train+val / test)",
                "flowers102", _DL.format("flowers102"), ("flowers-102",), "Oxford VGG, torchvision's checksums"),
    DatasetInfo("pubfig83", "PubFig83-ID", "default119", 80, "80 random IDs, 85 train / up to 15 test per ID",
                "class_folders", "get it from the PubFig83 site, as ROOT/pubfig83/<identity>/*", ("pubfig83",), "",
                "no stable URL (PubFig is distributed as a list of image URLs)"),
    DatasetInfo("sufrw", "SUFR-W-ID", "default119", 80, "80 random IDs, 10 train / up to 5 test per ID",
                "class_folders", "get it from the SUFR site (SUFR-W), as ROOT/sufrw/<identity>/*", ("sufrw",), "",
                "no stable URL"),
    DatasetInfo("lfw", "LFW-ID", "default119", 80, "80 random IDs, 10 train / up to 5 test per ID",
                "class_folders", _DL.format("lfw") + " (torchvision's LFWPeople), or your own ROOT/lfw/<identity>/*",
                ("lfw", "lfw-py/lfw"), _TV),
    DatasetInfo("scene67", "Scene67", "default119", 67, "67 classes, 80 train / up to 20 test per class",
                "class_folders", "get MIT Indoor-67 (its Images/ folder) as ROOT/scene67/<class>/*", ("scene67",), "",
                "no published checksum or versioned URL (indoorCVPR_09.tar from the MIT page)"),
    DatasetInfo("timit80", "TIMIT80", "timit", 80, "80 classes, 400 train / 100 test per class, 1845-dim",
                "timit", "extract the features from TIMIT (LDC) as ROOT/timit80.npz (x_train, y_train, x_test, y_test)",
                ("timit80.npz",), "", "licence (TIMIT is sold by the LDC, LDC93S1)"),
    DatasetInfo("digits", "Digits", "mnist", 10, "scikit-learn's 1,797 8×8 scans, stratified 70/30 split",
                "digits", "bundled with scikit-learn (offline)", (), "scikit-learn"),
]}
PAPER_DATASETS = [n for n in DATASETS if n != "digits"]  # the paper's row order

# per-class protocols: (classes sampled, train per class, test per class at most) — see sources.split_per_class
CLASS_PROTOCOLS = {"caltech101": (102, 30, 10), "caltech256_101": (102, 30, 10), "pubfig83": (80, 85, 15),
                   "sufrw": (80, 10, 5), "lfw": (80, 10, 5), "scene67": (67, 80, 20)}
# the standard splits' test and training sets as the readers take them (examples; TIMIT80: frames). The per-class
# protocols' follow from CLASS_PROTOCOLS (test counts as upper bounds, decision 12) and the Flowers sets' training
# sets from their split files (sources.FLOWERS_TRAIN); iCub's folders fix none. asym.study reads them all.
STANDARD_TEST = {"mnist": 10000, "cifar10": 10000, "cifar100": 10000, "svhn": 26032, "stl10": 8000,
                 "flowers17": 17 * 20, "flowers102": 6149, "timit80": 80 * 100, "digits": 540}  # digits: 30 %
STANDARD_TRAIN = {"mnist": 60000, "cifar10": 50000, "cifar100": 50000, "svhn": 73257, "stl10": 5000,
                  "timit80": 80 * 400, "digits": 1797 - STANDARD_TEST["digits"]}  # scikit-learn has 1,797 digits


def info(name: str) -> DatasetInfo:
    if name in DATASETS:
        return DATASETS[name]
    if name.startswith(("folder:", "npz:")):
        return user_dataset_info(name)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}, "
                     "or folder:/path (an ImageFolder tree with train/ and test/) or npz:/path.npz")


def user_dataset_info(name: str) -> DatasetInfo:
    kind, _, path = name.partition(":")
    if kind == "npz":
        return DatasetInfo(name, Path(path).stem, "timit", 0, "the file's own train/test arrays", "user_npz", path)
    return DatasetInfo(name, Path(path).name, "default119", 0, "the tree's train/ and test/ folders",
                       "user_folder", path)


def is_user(name: str) -> bool:
    """A user's own data (``npz:/file.npz``, ``folder:/tree``) rather than a registry dataset."""
    return str(name).startswith(("folder:", "npz:"))


def identity(name: str, root: str | Path = "data", found: sources.Layout | None = None) -> Identity:
    """What ``name`` under ``root`` is, by content (protocol decision 18, docs/protocol.md; ``asym.data.manifest``).

    ``npz:`` data: the file's sha256; ``folder:`` data: the manifest of the files the scan selects; a registry
    dataset: its resolved folder and the manifest of the files its reader reads (``found``: a ``layout`` already
    made). Data that is missing or cannot satisfy its layout has the identity of no files (``files == 0``)."""
    meta = info(name)
    root = Path(root).expanduser()
    if meta.reader == "digits":
        return manifest.constant("sklearn.datasets.load_digits")
    where = sources.locate(meta, root)
    location = None if meta.reader.startswith("user") else str(where.resolve())
    if meta.reader == "user_npz":
        files = {str(where): where.stat()} if where.is_file() else {}
        return manifest.of_files(files, where.parent, by_content=True)
    try:
        found = found or sources.layout(meta, root)
    except DatasetMissing:
        return manifest.of_files({}, where, location)
    return manifest.of_files(found.files, found.base, location)


def cache_dir() -> Path:
    return Path(os.environ.get("ASYM_CACHE", Path.home() / ".cache" / "asym"))


def _cache_stem(name: str) -> str:
    return name.replace("/", "_").replace(":", "-")


def cache_path(name: str, root: str | Path = "data", seed: int = 0, cache: str | Path | None = None,
               ident: Identity | None = None) -> Path:
    """Where ``load`` keeps the prepared tensors of ``name``: ``<stem>-<identity>-<key>.pt``, the key being the
    dataset, protocol version, seed, input size and its content identity (``identity``; ``ident`` if already
    computed) — so a changed file is a new cache entry, and another root's files never answer for these."""
    meta = info(name)
    ident = ident or identity(name, root)
    key = f"{name}|v{PROTOCOL_VERSION}|seed{seed}|{input_shape(meta.arch)}|{ident.digest}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(cache or cache_dir()).expanduser() / f"{_cache_stem(name)}-{ident.short}-{digest}.pt"


def cache_entries(name: str, cache: str | Path | None = None) -> dict[Path, str]:
    """Every prepared cache file of ``name`` in the cache folder → the short identity it was built from
    ("" for a file of the format before identities, ``<stem>-<key>.pt``: never read, safe to delete)."""
    stem = _cache_stem(name)
    folder = Path(cache or cache_dir()).expanduser()
    out = {}
    for p in folder.glob(f"{glob.escape(stem)}-*.pt"):
        rest = p.stem[len(stem) + 1:].split("-")
        if len(rest) == 2 and len(rest[0]) == 8:
            out[p] = rest[0]
        elif len(rest) == 1 and len(rest[0]) == 12:
            out[p] = ""
    return out


def cache_state(name: str, root: str | Path = "data", seed: int = 0, cache: str | Path | None = None,
                ident: Identity | None = None) -> str:
    """``current`` (a complete cache file for today's files and key), ``damaged`` (a file there that is not
    whole: ``load`` rebuilds it), ``stale`` (only entries for other files, another protocol version, seed or
    size: never used) or ``none``. torch.save writes a zip, so a whole file ends with its central directory."""
    ident = ident or identity(name, root)
    if ident.files or info(name).reader == "digits":
        path = cache_path(name, root, seed, cache, ident)
        if path.is_file():
            return "current" if zipfile.is_zipfile(path) else "damaged"
    return "stale" if cache_entries(name, cache) else "none"


def cache_notes(path: Path) -> dict:
    """What ``prepare`` recorded next to a cache file (``<cache>.json``: identity, duplicates, test∩train…)."""
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Survey:
    """What ``asym-data status`` reports for one dataset."""

    name: str
    state: str         # present | missing | incomplete (an undecodable file, under --check, is incomplete)
    path: Path         # where the reader looked
    detail: str        # what is there, or why it cannot be used (one line)
    cache: str         # current | damaged | stale | none (see cache_state)
    identity: Identity | None = None  # of the files there (None: not present)
    skipped: str = ""  # what the folder scan skipped and why (protocol decision 15), "" if nothing
    notes: dict = field(default_factory=dict)  # test_in_train, duplicates_collapsed…: from --check or the cache
    checked: bool = False  # every file was decoded (--check)
    refused: bool = False  # --check: a file the run would use does not decode (``detail`` names it)

    @property
    def usable(self) -> bool:
        """A run can train on it: its files are present and satisfy the protocol (a cache alone never counts:
        it answers only for the files it was built from, and those are not there to say so)."""
        return self.state == "present"


def survey(name: str, root: str | Path = "data", seed: int = 0, cache: str | Path | None = None,
           check: bool = False) -> Survey:
    """Look at ``name`` under ``root``: file names, sizes, .mat/.npz keys, class sizes, its identity (nothing
    decoded); ``check``: also decode every file a run will use (``sources.check``, torch-free, nothing written)."""
    meta = info(name)
    root = Path(root).expanduser()
    where = sources.locate(meta, root)
    per_class = CLASS_PROTOCOLS.get(name)
    state, detail, ident, skipped, notes = "present", "", None, "", {}
    try:
        found = sources.layout(meta, root, per_class, seed)
        detail, skipped = found.detail, describe_skipped(found.skipped)
        ident = identity(name, root, found)
    except DatasetIncomplete as e:
        state, detail = "incomplete", str(e)
    except DatasetMissing as e:
        state, detail = "missing", str(e)
    refused = False
    if check and state == "present":
        try:
            notes = sources.check(meta, root, per_class, seed)
        except DatasetMissing as e:  # a file that does not decode (or a damaged array file)
            state, detail, refused = "incomplete", str(e), True
    cached = cache_state(name, root, seed, cache, ident) if ident else cache_state_absent(name, cache)
    if cached == "current" and not check:
        notes = {k: v for k, v in cache_notes(cache_path(name, root, seed, cache, ident)).items() if k in NOTE_KEYS}
    return Survey(name, state, where, detail, cached, ident if state == "present" else None, skipped, notes,
                  check and state == "present", refused)


def train_count(name: str, root: str | Path = "data", seed: int = 0, cache: str | Path | None = None) -> int | None:
    """Training examples of ``name`` as prepared (its current cache's record), before any holdout; None when there
    is no current cache to say (not prepared yet, or fetched by the run itself). Torch-free: nothing is loaded."""
    if info(name).reader == "digits":
        return STANDARD_TRAIN[name]
    try:
        path = cache_path(name, Path(root).expanduser(), seed, cache)
    except DatasetMissing:
        return None
    count = cache_notes(path).get("train")
    return count if isinstance(count, int) else None


def cache_state_absent(name: str, cache: str | Path | None = None) -> str:
    """The cache column of a dataset whose files are not there: ``stale`` if entries of it exist (built from
    other files; they never make it usable), else ``none``."""
    return "stale" if cache_entries(name, cache) else "none"


NOTE_KEYS = ("test_in_train", "duplicates_collapsed", "duplicates_across_classes")


def check_available(name: str, root: str | Path = "data", download: bool = False, seed: int = 0,
                    cache: str | Path | None = None) -> None:
    """Raise DatasetMissing / DatasetIncomplete (one line: the path looked at, how to get it, or the file that
    cannot be decoded) unless ``name`` can be trained on: its files satisfy the protocol and every file the run
    will use decodes. The decode is preparing the cache (``load``): it happens once; a current cache of these
    very files (same identity) is that proof already. ``download``: checked when it is fetched."""
    meta = info(name)
    if download or meta.reader == "digits":
        return
    root = Path(root).expanduser()
    found = sources.layout(meta, root, CLASS_PROTOCOLS.get(name), seed)
    if cache_state(name, root, seed, cache, identity(name, root, found)) != "current":
        importlib.import_module(".tensors", __name__).load(name, root, seed=seed, cache=cache)


def check_all(wanted, seed: int = 0, cache: str | Path | None = None) -> None:
    """Check every ``(name, root, download[, seed])`` of ``wanted`` (``check_available``: preparing each cache
    that is not current) and raise ONE DatasetMissing naming all that fail (one line). The sweep preflight
    calls this, so a user learns every missing, incomplete or undecodable dataset at once, before anything runs."""
    problems: list[tuple[DatasetMissing, str]] = []
    for name, root, download, *rest in dict.fromkeys(tuple(w) for w in wanted):
        try:
            check_available(name, root, download, int(rest[0]) if rest else seed, cache)
        except DatasetMissing as e:
            problems.append((e, str(root)))
    if not problems:
        return
    hint = f"(asym-data status --root {problems[0][1]} lists every dataset)"
    if len(problems) == 1:
        raise type(problems[0][0])(f"{problems[0][0]} {hint}")
    raise DatasetMissing(f"{len(problems)} datasets of the sweep cannot be used: "
                         + " | ".join(str(e) for e, _ in problems) + f" {hint}")


def labels(keys) -> dict[tuple[str, str | None], str]:
    """Readable, distinct labels of datasets that appear together (a store's table rows, run names).

    ``keys``: (dataset name, identity digest or None). A registry dataset is its paper row (``title``), whatever
    its identity. A user dataset is its file or folder stem — disambiguated only when another dataset among
    ``keys`` has the same label: by its parent folders (``v1/feat``, ``v2/feat``; as few as tell them apart),
    then by its kind (``feat (npz)``), then by its identity's first 8 digits (one path whose content changed
    between runs: ``feat (1a2b3c4d)``; ``unrecorded`` for runs that predate identities)."""
    given = list(keys)
    norm = {k: (str(k[0]), k[1] if is_user(k[0]) else None) for k in given}
    keys = list(dict.fromkeys(norm.values()))
    out = {k: info(k[0]).title for k in keys}
    groups: dict[str, list] = {}
    for k in keys:
        groups.setdefault(out[k], []).append(k)
    for label, group in groups.items():
        users = [k for k in group if is_user(k[0])]
        if len(group) < 2 or not users:
            continue
        paths = {k[0]: Path(k[0].partition(":")[2]) for k in users}
        distinct = sorted(set(paths.values()), key=str)
        for k in users:
            out[k] = _qualified(paths[k[0]], distinct, label, force=len(users) < len(group))
        if len({out[k] for k in group}) < len({k[0] for k in group}):  # same parents: the kind tells them apart
            for k in users:
                out[k] = f"{out[k]} ({k[0].partition(':')[0]})"
        for k in users:  # one path, several contents
            if sum(1 for j in users if j[0] == k[0]) > 1:
                out[k] = f"{out[k]} ({k[1][:8] if k[1] else 'unrecorded'})"
    return {**out, **{k: out[norm[k]] for k in given}}


def _qualified(path: Path, paths: list[Path], label: str, force: bool = False) -> str:
    """``label`` with as many of ``path``'s parent folders as tell it apart from the other ``paths`` in other
    folders (none if there are none, unless ``force``: a registry dataset has the same label)."""
    others = [p for p in paths if p.parent != path.parent]
    if not others and not force:
        return label
    parents = path.parent.parts
    for n in range(1, len(parents) + 1):
        if all(p.parent.parts[-n:] != parents[-n:] for p in others):
            return str(Path(*parents[-n:], label))
    return str(path.parent / label)


def registry_table() -> str:
    """docs/datasets.md's dataset table, generated from DATASETS (a test keeps the page equal to it)."""
    esc = lambda s: s.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    rows = ["| name | row | net | split (protocol decision 12) | files under `data.root` | get it |",
            "|---|---|---|---|---|---|"]
    for d in DATASETS.values():
        files = ", ".join(f"`{p}`" for p in d.paths) or "—"
        get = f"`asym-data download {d.name}` ({d.fetch})" if d.fetch and d.paths else (
            d.source if not d.manual else f"{esc(d.source)} — not downloadable: {d.manual}")
        rows.append(f"| `{d.name}` | {d.title} | {d.arch} | {esc(d.protocol)} | {files} | {get} |")
    return "\n".join(rows) + "\n"


_TENSORS = ("TensorData", "holdout_split", "index_digest", "prepare", "load")  # asym.data.tensors: needs torch


def __getattr__(name: str):
    if name in _TENSORS:
        return getattr(importlib.import_module(".tensors", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
