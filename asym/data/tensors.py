"""A dataset as tensors: decoded (``asym.data.readers``), resized, normalised, cached once (``load``).

``TensorData`` is what the trainer takes; ``holdout_split`` makes the ``train.select_on=val`` holdout.
"""
from __future__ import annotations

import hashlib
import logging
import math
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..archs import input_shape
from ..files import write_atomic, write_json
from . import CLASS_PROTOCOLS, DatasetMissing, cache_entries, cache_path, identity, info, readers

log = logging.getLogger("asym.data")


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
    record: Optional[dict] = None    # what ``load`` recorded: identity, files, key, test_in_train, duplicates…

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


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def prepare(x_train, x_test, arch: str):
    """Float, resized to the arch's input, per-channel mean/std of the train split (protocol decision 11 in
    docs/protocol.md)."""
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


def _read_cache(path: Path, name: str, mmap: bool = False, seed: int = 0) -> TensorData | None:
    try:
        d = torch.load(path, weights_only=True, mmap=mmap)
        return TensorData(name, d["arch"], d["num_classes"], d["x_train"], d["y_train"], d["x_test"], d["y_test"],
                          seed, record=dict(d.get("record", {})))
    except FileNotFoundError:
        return None
    except (RuntimeError, KeyError, EOFError, zipfile.BadZipFile, OSError) as e:  # damaged: rebuild it
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        return None


def load(name: str, root: str | Path = "data", seed: int = 0, download: bool = False,
         cache: str | Path | None = None) -> TensorData:
    """Decode, resize and normalise ``name`` once; later calls read the cached tensors.

    The cache is keyed by the dataset's content identity (``asym.data.identity``, protocol decision 18): a
    changed file is a new entry, decoded again, and one log line says so. Every file is decoded or the dataset
    is refused (protocol decisions 16–17). Raises DatasetMissing (nothing at ``root``) or DatasetIncomplete
    (its files cannot satisfy the protocol, or one cannot be decoded), each as one line. The cache file appears
    atomically: a concurrent reader sees all of it or none. ``TensorData.record`` says what was trained on:
    identity, files, test images also in training, duplicates collapsed (``asym.tracking`` logs it).
    """
    meta = info(name)
    root = Path(root).expanduser()
    if download and meta.fetch and meta.reader != "digits":  # fetches only what is not installed yet
        from . import remote
        try:
            remote.fetch(name, root)
        except remote.DownloadError as e:  # one line for asym-train, like a missing dataset
            raise DatasetMissing(f"dataset {name!r}: download failed: {e}") from None
    ident = identity(name, root)
    path = cache_path(name, root, seed, cache, ident)
    if path.exists() and (d := _read_cache(path, name, seed=seed)) is not None:
        log.info("dataset %s: identity %s (%d files), prepared cache %s", name, ident.short, ident.files, path)
        return d
    older = {short for p, short in cache_entries(name, cache).items() if p != path} - {ident.short}
    if older - {""}:
        log.info("dataset %s: its files changed since its cache was built (identity %s, cache built from %s): "
                 "decoding again", name, ident.short, ", ".join(sorted(older - {""})))
    elif older:
        log.info("dataset %s: its cache predates content identities (identity %s now): decoding again, once",
                 name, ident.short)
    reader = getattr(readers, meta.reader)
    per_class = CLASS_PROTOCOLS.get(name)
    xtr, ytr, xte, yte, notes = reader(meta, root, seed=seed, per_class=per_class)
    num_classes = per_class[0] if per_class else meta.num_classes or int(torch.cat([ytr, yte]).max()) + 1
    arch = meta.arch
    xtr, xte = prepare(xtr, xte, arch)
    record = {"identity": ident.digest, "files": ident.files, "key": path.stem, **notes}
    if notes.get("test_in_train"):
        log.warning("dataset %s: %d test images also occur in its training split (the dataset's own split; "
                    "recorded on every run)", name, notes["test_in_train"])
    if notes.get("duplicates_collapsed"):
        log.info("dataset %s: %d exact duplicate images collapsed before the split (%d across classes)", name,
                 notes["duplicates_collapsed"], notes.get("duplicates_across_classes", 0))
    d = dict(arch=arch, num_classes=num_classes, x_train=xtr, y_train=ytr.long(), x_test=xte, y_test=yte.long(),
             record=record)
    write_atomic(path, lambda tmp: torch.save(d, tmp))  # concurrent runs never read half a file
    write_json(path.with_suffix(".json"), {**record, "train": len(ytr), "test": len(yte), "classes": num_classes})
    log.info("dataset %s: identity %s (%d files) prepared into %s", name, ident.short, ident.files, path)
    return TensorData(name, arch, num_classes, xtr, ytr.long(), xte, yte.long(), seed, record=record)
