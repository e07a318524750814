"""The paper's 15 datasets, the offline ``digits`` demo, and user data — as tensors ready to train on.

``load(name, root, ...)`` returns a ``TensorData``: the train and test splits decoded, resized to the
arch's input size and normalised per channel with train-split statistics (GUIDE item 11), cached on
disk once (key: dataset, protocol version, seed, input size). The trainer moves the tensors onto its
device and slices batches from a seeded ``randperm`` — no DataLoader.

``DATASETS`` is the registry (the one owner of each dataset's name, row label, net, split rule, paths and
source; the README's table is ``registry_table()``). ``survey``/``check_available``/``check_all`` look at
the files without decoding them; ``asym-data`` (``asym.data.cli``) puts status, download and prepare on
the command line.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import math
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..files import write_atomic
from ..models import input_shape
from . import sources

log = logging.getLogger(__name__)

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
    protocol: str      # the split rule (GUIDE item 12)
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


@dataclass
class TensorData:
    """Normalised train/test tensors of one dataset (x: N×C×H×W or N×D float32, y: N int64).

    ``seed`` is the data seed that drew its random splits (``load``'s; the Caltech/PubFig class and image
    choices); ``x_holdout``/``y_holdout`` are the part of the training split ``hold_out`` set aside (None: none).
    """

    name: str
    arch: str
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    seed: int = 0
    x_holdout: Optional[torch.Tensor] = None
    y_holdout: Optional[torch.Tensor] = None
    holdout: Optional[dict] = None   # what ``hold_out`` recorded: size, fraction, data_seed, digest

    def to(self, device) -> "TensorData":
        move = (lambda t: None if t is None else t.to(device))
        return replace(self, **{k: move(getattr(self, k)) for k in ("x_train", "y_train", "x_test", "y_test",
                                                                    "x_holdout", "y_holdout")})

    def hold_out(self, fraction: float) -> "TensorData":
        """This data with a stratified ``fraction`` of the training split moved to ``x_holdout``/``y_holdout``
        (``holdout_split`` from this data's ``seed``): trained on by nobody, used to choose the epoch and the
        learning rate under ``train.select_on=val``. ValueError if a class would keep no training image."""
        if self.x_holdout is not None:
            raise ValueError(f"dataset {self.name!r} already has a holdout")
        train_idx, holdout_idx = holdout_split(self.y_train, fraction, self.seed, self.name)
        record = {"size": len(holdout_idx), "fraction": fraction, "data_seed": self.seed,
                  "digest": index_digest(holdout_idx)}
        return replace(self, x_train=self.x_train[train_idx], y_train=self.y_train[train_idx],
                       x_holdout=self.x_train[holdout_idx], y_holdout=self.y_train[holdout_idx], holdout=record)


def holdout_split(y: torch.Tensor, fraction: float, seed: int, name: str = "dataset") -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, holdout_idx): a stratified holdout of the labels ``y`` (shape (N,)), both sorted, disjoint,
    together ``range(N)``.

    Class c of n_c images gives round(fraction·n_c) of them (half up) to the holdout, chosen by a generator
    seeded with the data ``seed`` alone — every run of that data seed (any model, multiplier or run) holds out
    the same images. So each class's share is within half an image of ``fraction``. ValueError (one line,
    naming ``name``) if a class would keep no training image or the holdout would be empty.
    """
    gen = torch.Generator().manual_seed(int(seed))
    y = y.cpu()
    train, held = [], []
    for c in torch.unique(y).tolist():  # sorted classes: the draw does not depend on the images' order of classes
        idx = (y == c).nonzero().flatten()
        k = math.floor(fraction * len(idx) + 0.5)
        if k >= len(idx):
            raise ValueError(f"train.val_fraction={fraction:g} leaves class {c} of {name} ({len(idx)} training "
                             "images) nothing to train on; use a smaller train.val_fraction")
        perm = idx[torch.randperm(len(idx), generator=gen)]
        held.append(perm[:k])
        train.append(perm[k:])
    holdout_idx, train_idx = torch.cat(held).sort().values, torch.cat(train).sort().values
    if len(holdout_idx) == 0:
        raise ValueError(f"train.val_fraction={fraction:g} holds out no image of {name}; use a larger one")
    return train_idx, holdout_idx


def index_digest(idx: torch.Tensor) -> str:
    """A short digest of a set of indices (which images a holdout took), for ``result.json``."""
    return hashlib.sha256(idx.cpu().to(torch.int64).numpy().tobytes()).hexdigest()[:16]


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


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def prepare(x_train, x_test, arch: str):
    """Float, resized to the arch's input, per-channel mean/std of the train split (GUIDE item 11)."""
    shape = input_shape(arch)
    x_train, x_test = x_train.float(), x_test.float()
    if len(shape) == 3:
        channels, h, w = shape
        x_train, x_test = (_resize(x, (h, w)) for x in (x_train, x_test))
        if x_train.shape[1] != channels:  # grey ↔ colour
            x_train, x_test = ((x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1))
                               for x in (x_train, x_test))
        dims = (0, 2, 3)
    else:
        dims = (0,)
    mean = x_train.mean(dims, keepdim=True)
    std = x_train.std(dims, keepdim=True).clamp_min(1e-6)
    return ((x_train - mean) / std).contiguous(), ((x_test - mean) / std).contiguous()


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


def _read_cache(path: Path, name: str, mmap: bool = False, seed: int = 0) -> TensorData | None:
    try:
        d = torch.load(path, weights_only=True, mmap=mmap)
        return TensorData(name, d["arch"], d["num_classes"], d["x_train"], d["y_train"], d["x_test"], d["y_test"],
                          seed)
    except FileNotFoundError:
        return None
    except (RuntimeError, KeyError, EOFError, zipfile.BadZipFile, OSError) as e:  # damaged: rebuild it
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        return None


def load(name: str, root: str | Path = "data", seed: int = 0, download: bool = False,
         cache: str | Path | None = None) -> TensorData:
    """Decode, resize and normalise ``name`` once; later calls read the cached tensors.

    Raises DatasetMissing (nothing at ``root``) or DatasetIncomplete (its files cannot satisfy the protocol),
    each as one line. The cache file appears atomically: a concurrent reader sees all of it or none.
    """
    meta = info(name)
    root = Path(root).expanduser()
    path = cache_path(name, root, seed, cache)
    if path.exists() and (d := _read_cache(path, name, seed=seed)) is not None:
        return d
    if download and meta.fetch and meta.reader != "digits":
        from . import remote
        try:
            remote.fetch(name, root)
        except remote.DownloadError as e:  # one line for asym-train, like a missing dataset
            raise DatasetMissing(f"dataset {name!r}: download failed: {e}") from None
    reader = getattr(sources, meta.reader)
    per_class = CLASS_PROTOCOLS.get(name)
    xtr, ytr, xte, yte = reader(meta, root, seed=seed, per_class=per_class)
    num_classes = per_class[0] if per_class else meta.num_classes or int(torch.cat([ytr, yte]).max()) + 1
    arch = meta.arch
    xtr, xte = prepare(xtr, xte, arch)
    d = dict(arch=arch, num_classes=num_classes, x_train=xtr, y_train=ytr.long(), x_test=xte, y_test=yte.long())
    write_atomic(path, lambda tmp: torch.save(d, tmp))  # concurrent runs never read half a file
    return TensorData(name, arch, num_classes, xtr, ytr.long(), xte, yte.long(), seed)


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
    """The README's dataset table, generated from DATASETS (a test keeps the README equal to it)."""
    esc = lambda s: s.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    rows = ["| name | row | net | split (GUIDE item 12) | files under `data.root` | get it |", "|---|---|---|---|---|---|"]
    for d in DATASETS.values():
        files = ", ".join(f"`{p}`" for p in d.paths) or "—"
        get = f"`asym-data download {d.name}` ({d.fetch})" if d.fetch and d.paths else (
            d.source if not d.manual else f"{esc(d.source)} — not downloadable: {d.manual}")
        rows.append(f"| `{d.name}` | {d.title} | {d.arch} | {esc(d.protocol)} | {files} | {get} |")
    return "\n".join(rows) + "\n"
