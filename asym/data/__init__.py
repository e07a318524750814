"""The paper's 15 datasets, the offline ``digits`` demo, and user data — as tensors ready to train on.

``load(name, root, ...)`` returns a ``TensorData``: the train and test splits decoded, resized to the
arch's input size and normalised per channel with train-split statistics (GUIDE item 11), cached on
disk once (key: dataset, protocol version, seed, input size). The trainer moves the tensors onto its
device and slices batches from a seeded ``randperm`` — no DataLoader.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models import input_shape
from . import sources

PROTOCOL_VERSION = 1  # bump when a split or preprocessing rule changes: old cache entries are ignored


class DatasetMissing(RuntimeError):
    """The files of a dataset are not where the loader looked; the message says where and how to get them."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str          # registry key, used in configs
    title: str         # the row label in the paper's tables
    arch: str          # Table 1 family
    num_classes: int
    protocol: str      # the split rule (GUIDE item 12)
    reader: str        # function name in asym.data.sources
    source: str        # where a user gets the files

    def describe(self) -> str:
        return f"{self.title}: {self.protocol}; {self.source}"


_TV = "torchvision downloads it with data.download=true"
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in [
    DatasetInfo("mnist", "MNIST", "mnist", 10, "standard 60k/10k split", "mnist",
                f"{_TV} (into ROOT/MNIST/raw)"),
    DatasetInfo("cifar10", "CIFAR", "cifar", 10, "standard 50k/10k split", "cifar10",
                f"{_TV} (ROOT/cifar-10-batches-py)"),
    DatasetInfo("cifar100", "CIFAR100", "cifar", 100, "standard 50k/10k split", "cifar100",
                f"{_TV} (ROOT/cifar-100-python)"),
    DatasetInfo("svhn", "SVHN", "svhn", 10, "standard train/test split (no extra)", "svhn",
                f"{_TV} (ROOT/train_32x32.mat, ROOT/test_32x32.mat)"),
    DatasetInfo("stl10", "STL10", "default119", 10, "standard 5k/8k split", "stl10",
                f"{_TV} (ROOT/stl10_binary)"),
    DatasetInfo("caltech101", "Cal101", "default119", 102, "102 classes, 30 train / 10 test per class",
                "caltech101", f"{_TV} (ROOT/caltech101/101_ObjectCategories/<class>/*.jpg)"),
    DatasetInfo("caltech256_101", "Cal256-101", "default119", 102,
                "102 random classes, 30 train / 10 test per class", "caltech256",
                f"{_TV} (ROOT/caltech256/256_ObjectCategories/<class>/*.jpg)"),
    DatasetInfo("icub", "iCub", "default119", 10, "iCubWorld categorisation protocol (its train/test folders)",
                "split_folders", "get it from the iCubWorld site, arranged as ROOT/icub/{train,test}/<class>/*"),
    DatasetInfo("flowers17", "Flowers17", "default119", 17, "standard split 1 (train+val / test)",
                "split_folders", "get it from the Oxford VGG site, arranged as ROOT/flowers17/{train,test}/<class>/*"),
    DatasetInfo("flowers102", "Flowers102", "default119", 102, "standard split (train+val / test)",
                "flowers102", f"{_TV} (ROOT/flowers-102)"),
    DatasetInfo("pubfig83", "PubFig83-ID", "default119", 80, "80 random IDs, 85 train / 15 test per ID",
                "class_folders", "get it from the PubFig83 site, as ROOT/pubfig83/<identity>/*"),
    DatasetInfo("sufrw", "SUFR-W-ID", "default119", 80, "80 random IDs, 10 train / 5 test per ID",
                "class_folders", "get it from the SUFR site (SUFR-W), as ROOT/sufrw/<identity>/*"),
    DatasetInfo("lfw", "LFW-ID", "default119", 80, "80 random IDs, 10 train / 5 test per ID",
                "class_folders", "get it from the LFW site (lfw/<identity>/*), as ROOT/lfw/<identity>/*"),
    DatasetInfo("scene67", "Scene67", "default119", 67, "67 classes, 80 train / 20 test per class",
                "class_folders", "get MIT Indoor-67 (its Images/ folder) as ROOT/scene67/<class>/*"),
    DatasetInfo("timit80", "TIMIT80", "timit", 80, "80 classes, 400 train / 100 test per class, 1845-dim",
                "timit", "extract the features from TIMIT (LDC) as ROOT/timit80.npz (x_train, y_train, x_test, y_test)"),
    DatasetInfo("digits", "Digits", "mnist", 10, "scikit-learn's 1,797 8×8 scans, stratified 70/30 split",
                "digits", "bundled with scikit-learn (offline)"),
]}
PAPER_DATASETS = [n for n in DATASETS if n != "digits"]  # the paper's row order

# per-class protocols: (classes sampled, train per class, test per class)
CLASS_PROTOCOLS = {"caltech101": (102, 30, 10), "caltech256_101": (102, 30, 10), "pubfig83": (80, 85, 15),
                   "sufrw": (80, 10, 5), "lfw": (80, 10, 5), "scene67": (67, 80, 20)}


@dataclass
class TensorData:
    """Normalised train/test tensors of one dataset (x: N×C×H×W or N×D float32, y: N int64)."""

    name: str
    arch: str
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device) -> "TensorData":
        return TensorData(self.name, self.arch, self.num_classes,
                          *(t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test)))


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


def prepare(x_train, x_test, arch: str, in_features: int | None = None):
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


def load(name: str, root: str | Path = "data", seed: int = 0, download: bool = False,
         cache: str | Path | None = None) -> TensorData:
    """Decode, resize and normalise ``name`` once; later calls read the cached tensors."""
    meta = info(name)
    root = Path(root).expanduser()
    key = f"{name}|v{PROTOCOL_VERSION}|seed{seed}|{input_shape(meta.arch)}|{root.resolve() if meta.reader.startswith('user') else ''}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    path = Path(cache or cache_dir()) / f"{name.replace('/', '_').replace(':', '-')}-{digest}.pt"
    if path.exists():
        d = torch.load(path, weights_only=True)
        return TensorData(name, d["arch"], d["num_classes"], d["x_train"], d["y_train"], d["x_test"], d["y_test"])
    reader = getattr(sources, meta.reader)
    xtr, ytr, xte, yte = reader(meta, root, seed=seed, download=download,
                                per_class=CLASS_PROTOCOLS.get(name), missing=DatasetMissing)
    num_classes = meta.num_classes or int(torch.cat([ytr, yte]).max()) + 1
    arch = meta.arch
    xtr, xte = prepare(xtr, xte, arch)
    d = dict(arch=arch, num_classes=num_classes, x_train=xtr, y_train=ytr.long(), x_test=xte, y_test=yte.long())
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
        torch.save(d, tmp)
    os.replace(tmp.name, path)  # atomic: concurrent runs never read half a file
    return TensorData(name, arch, num_classes, xtr, ytr.long(), xte, yte.long())


def check_available(name: str, root: str | Path = "data", download: bool = False) -> None:
    """Raise DatasetMissing (one line: the path looked at, how to get it) if ``name`` cannot be read."""
    meta = info(name)
    if download or meta.reader == "digits":
        return
    sources.check(meta, Path(root).expanduser(), DatasetMissing)
