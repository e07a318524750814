"""Readers: one function per on-disk layout, decoding it into tensors (x_train, y_train, x_test, y_test, notes).

torchvision's dataset classes read the datasets it knows; the others read a documented folder layout through
``asym.data.sources`` (the same listings ``asym-data status`` looks at) and ``asym.data.images`` (the one image
decoder: every file decoded or the dataset refused, naming the file). Each reader is
``reader(meta, root, seed, per_class)`` → uint8 or float tensors, labels int64, and the notes ``prepare``
records: ``test_in_train`` (test images that also occur in training) and, where this product draws the split,
``duplicates_collapsed``/``duplicates_across_classes`` (protocol decision 17, docs/protocol.md).
"""
from __future__ import annotations

import numpy as np
import torch

from . import images
from .sources import (IMAGE_SIZE, DatasetIncomplete, _flowers102_listing, _split_listing, inspect, leakage, locate,
                      npz_arrays, per_class_files)

DECODE_PROGRESS = False  # set by asym-data prepare when it decodes in the foreground of a terminal


def _tv(cls_name, meta, root, **kw):
    import torchvision.datasets as tvd
    inspect(meta, root)
    try:
        return getattr(tvd, cls_name)(str(root), download=False, **kw)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DatasetIncomplete(f"dataset {meta.name!r} unreadable under {root} ({e}): {meta.source}") from None


def _labels(v) -> torch.Tensor:
    return torch.as_tensor(np.asarray(v), dtype=torch.long)


def _shipped(xtr: torch.Tensor, ytr, xte: torch.Tensor, yte):
    """A dataset that ships its split: the count of test images that also occur in training, from the uint8
    images as stored (``images.row_digests``, the digests ``asym-data status --check`` computes)."""
    n = leakage(images.row_digests(xtr.numpy()), images.row_digests(xte.numpy()))
    return xtr, ytr, xte, yte, {"test_in_train": n}


def mnist(meta, root, seed, per_class):
    tr, te = (_tv("MNIST", meta, root, train=t) for t in (True, False))
    return _shipped(tr.data[:, None], _labels(tr.targets), te.data[:, None], _labels(te.targets))


def _cifar(cls_name, meta, root):
    tr, te = (_tv(cls_name, meta, root, train=t) for t in (True, False))
    chw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    return _shipped(chw(tr.data), _labels(tr.targets), chw(te.data), _labels(te.targets))


def cifar10(meta, root, seed, per_class):
    return _cifar("CIFAR10", meta, root)


def cifar100(meta, root, seed, per_class):
    return _cifar("CIFAR100", meta, root)


def svhn(meta, root, seed, per_class):
    tr, te = (_tv("SVHN", meta, root, split=s) for s in ("train", "test"))
    return _shipped(torch.from_numpy(tr.data), _labels(tr.labels), torch.from_numpy(te.data), _labels(te.labels))


def stl10(meta, root, seed, per_class):
    tr, te = (_tv("STL10", meta, root, split=s) for s in ("train", "test"))
    return _shipped(torch.from_numpy(tr.data), _labels(tr.labels), torch.from_numpy(te.data), _labels(te.labels))


def _decode(files, meta) -> tuple[torch.Tensor, list[str]]:
    """Images → uint8 N×3×119×119 RGB (``asym.data.images``: resized once here to keep the cache small) and
    each one's pixel digest. Every file is decoded; any failure refuses the dataset in one line naming it.
    Shows a tqdm bar when ``DECODE_PROGRESS`` is set (``asym-data prepare`` in a terminal)."""
    x, digests = images.decode(list(files), meta.name, IMAGE_SIZE, DECODE_PROGRESS)
    return torch.from_numpy(x), digests


def _listed(meta, train, test):
    """Decode a dataset whose split is given as (file, label) lists; count test images also in training."""
    x, digests = _decode([f for f, _ in train + test], meta)  # one pass: a refusal counts both splits' failures
    n = len(train)
    return (x[:n], _labels([y for _, y in train]), x[n:], _labels([y for _, y in test]),
            {"test_in_train": leakage(digests[:n], digests[n:])})


def flowers102(meta, root, seed, per_class):
    train, test, _ = _flowers102_listing(meta, locate(meta, root))
    return _listed(meta, train, test)


def _sample_per_class(meta, root, seed: int, per_class):
    train, ytr, test, yte, notes = per_class_files(meta, locate(meta, root), seed, per_class, DECODE_PROGRESS)
    return _decode(train, meta)[0], torch.tensor(ytr), _decode(test, meta)[0], torch.tensor(yte), notes


caltech101 = caltech256 = class_folders = _sample_per_class


def _split_tree(meta, root, seed, per_class):
    train, test = _split_listing(meta, locate(meta, root))[:2]
    return _listed(meta, train, test)


split_folders = user_folder = _split_tree


def _npz(meta, root, seed, per_class):
    xtr, ytr, xte, yte = npz_arrays(meta, locate(meta, root))
    n = leakage(images.row_digests(xtr), images.row_digests(xte))
    return (torch.from_numpy(xtr).float().flatten(1), _labels(ytr), torch.from_numpy(xte).float().flatten(1),
            _labels(yte), {"test_in_train": n})


timit = user_npz = _npz


def digits(meta, root, seed, per_class):
    """scikit-learn's bundled digits: real 8×8 scans, a fixed stratified 70/30 split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 16.0
    y = torch.from_numpy(d.target).long()
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=d.target, random_state=0)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test], {}
