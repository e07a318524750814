"""The paper's 15 datasets, the offline ``digits`` demo, and user data — as tensors ready to train on.

``load(name, root, ...)`` returns a ``TensorData``: the train and test splits decoded, resized to the
arch's input size and normalised per channel with train-split statistics (protocol decision 11 in
docs/protocol.md), cached on disk once (key: dataset, protocol version, seed, input size). The trainer moves the
tensors onto its device and slices batches from a seeded ``randperm`` — no DataLoader. Those live in
``asym.data.tensors`` and load on first use (PEP 562): this package itself is torch-free.

``DATASETS`` is the registry (the one owner of each dataset's name, row label, net, split rule, paths and
source; docs/datasets.md's table is ``registry_table()``). ``survey``/``check_available``/``check_all`` look at
the files without decoding them; ``asym-data`` (``asym.data.cli``) puts status, download and prepare on
the command line.
"""
from __future__ import annotations

import glob
import hashlib
import importlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..archs import input_shape
from . import sources

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


def cache_dir() -> Path:
    return Path(os.environ.get("ASYM_CACHE", Path.home() / ".cache" / "asym"))


def _cache_stem(name: str) -> str:
    return name.replace("/", "_").replace(":", "-")


def cache_path(name: str, root: str | Path = "data", seed: int = 0, cache: str | Path | None = None) -> Path:
    """Where ``load`` keeps the prepared tensors of ``name`` (key: dataset, protocol version, seed, input size,
    and for ``folder:``/``npz:`` data the resolved path)."""
    meta = info(name)
    root = Path(root).expanduser()
    key = f"{name}|v{PROTOCOL_VERSION}|seed{seed}|{input_shape(meta.arch)}|{root.resolve() if meta.reader.startswith('user') else ''}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(cache or cache_dir()).expanduser() / f"{_cache_stem(name)}-{digest}.pt"


def cache_state(name: str, root: str | Path = "data", seed: int = 0, cache: str | Path | None = None) -> str:
    """``current`` (a complete cache file for today's key), ``damaged`` (a file there that is not whole: ``load``
    rebuilds it), ``stale`` (only entries of another protocol version, seed or size) or ``none``. torch.save
    writes a zip, so a whole file ends with its central directory."""
    path = cache_path(name, root, seed, cache)
    if path.is_file():
        return "current" if zipfile.is_zipfile(path) else "damaged"
    stem = _cache_stem(name)
    others = [p for p in path.parent.glob(f"{glob.escape(stem)}-*.pt") if p.stem.rpartition("-")[0] == stem]
    return "stale" if others else "none"


@dataclass
class Survey:
    """What ``asym-data status`` reports for one dataset."""

    name: str
    state: str         # present | missing | incomplete
    path: Path         # where the reader looked
    detail: str        # what is there, or why it cannot be used (one line)
    cache: str         # current | stale | none (see cache_state)

    @property
    def usable(self) -> bool:
        """A run can train on it: its files satisfy the protocol, or its prepared cache is current."""
        return self.state == "present" or self.cache == "current"


def survey(name: str, root: str | Path = "data", seed: int = 0, cache: str | Path | None = None) -> Survey:
    """Look at ``name`` under ``root`` without decoding anything: file names, sizes, .mat/.npz keys, class sizes."""
    meta = info(name)
    root = Path(root).expanduser()
    where = sources.locate(meta, root)
    state, detail = "present", ""
    try:
        detail = sources.inspect(meta, root, CLASS_PROTOCOLS.get(name), seed)
    except DatasetIncomplete as e:
        state, detail = "incomplete", str(e)
    except DatasetMissing as e:
        state, detail = "missing", str(e)
    return Survey(name, state, where, detail, cache_state(name, root, seed, cache))


def check_available(name: str, root: str | Path = "data", download: bool = False, seed: int = 0,
                    cache: str | Path | None = None) -> None:
    """Raise DatasetMissing / DatasetIncomplete (one line: the path looked at, how to get it) unless ``name``
    can be trained on: its files satisfy the protocol, or its prepared cache (seed, cache dir) is current."""
    meta = info(name)
    if download or meta.reader == "digits":
        return
    if cache_state(name, root, seed, cache) == "current":
        return
    sources.inspect(meta, Path(root).expanduser(), CLASS_PROTOCOLS.get(name), seed)


def check_all(wanted, seed: int = 0, cache: str | Path | None = None) -> None:
    """Check every ``(name, root, download[, seed])`` of ``wanted`` and raise ONE DatasetMissing naming all that
    fail (one line). The sweep preflight calls this, so a user learns every missing or incomplete dataset at once."""
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
