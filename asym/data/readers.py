"""Readers: one function per on-disk layout, decoding it into tensors (x_train, y_train, x_test, y_test).

torchvision's dataset classes read the datasets it knows; the others read a documented folder layout
(``asym.data.sources`` looks at the same layouts without decoding). Each reader is
``reader(meta, root, seed, per_class)`` → uint8 or float tensors, labels int64.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .sources import (DatasetIncomplete, _class_tree, _flowers102_files, _open_npz, _split_listing, inspect, locate,
                      split_per_class)

IMAGE_SIZE = 119  # folder images are decoded straight to the default119 input size
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


def mnist(meta, root, seed, per_class):
    tr, te = (_tv("MNIST", meta, root, train=t) for t in (True, False))
    return tr.data[:, None], _labels(tr.targets), te.data[:, None], _labels(te.targets)


def _cifar(cls_name, meta, root):
    tr, te = (_tv(cls_name, meta, root, train=t) for t in (True, False))
    chw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    return chw(tr.data), _labels(tr.targets), chw(te.data), _labels(te.targets)


def cifar10(meta, root, seed, per_class):
    return _cifar("CIFAR10", meta, root)


def cifar100(meta, root, seed, per_class):
    return _cifar("CIFAR100", meta, root)


def svhn(meta, root, seed, per_class):
    tr, te = (_tv("SVHN", meta, root, split=s) for s in ("train", "test"))
    return torch.from_numpy(tr.data), _labels(tr.labels), torch.from_numpy(te.data), _labels(te.labels)


def stl10(meta, root, seed, per_class):
    tr, te = (_tv("STL10", meta, root, split=s) for s in ("train", "test"))
    return torch.from_numpy(tr.data), _labels(tr.labels), torch.from_numpy(te.data), _labels(te.labels)


def flowers102(meta, root, seed, per_class):
    from scipy.io import loadmat
    _, folder = _flowers102_files(meta, locate(meta, root))
    labels = loadmat(folder / "imagelabels.mat", squeeze_me=True)["labels"]
    ids = loadmat(folder / "setid.mat", squeeze_me=True)
    files = lambda key: [folder / "jpg" / f"image_{int(i):05d}.jpg" for i in ids[key]]
    y = lambda key: _labels([int(labels[int(i) - 1]) - 1 for i in ids[key]])
    train = files("trnid") + files("valid")
    return _decode(train, meta), torch.cat([y("trnid"), y("valid")]), _decode(files("tstid"), meta), y("tstid")


def _decode(files, meta=None) -> torch.Tensor:
    """Images → uint8 N×3×119×119 (RGB, resized once here to keep the cache small).

    Raises DatasetIncomplete naming the first file that is missing or cannot be decoded. Shows a tqdm bar
    when ``DECODE_PROGRESS`` is set (``asym-data prepare`` in a terminal, one dataset at a time)."""
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm
    out = torch.empty(len(files), 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    bar = tqdm(files, desc=f"decode {meta.name if meta is not None else ''}", unit="img", leave=False,
               disable=not DECODE_PROGRESS)
    for i, f in enumerate(bar):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            name = f"dataset {meta.name!r}: " if meta is not None else ""
            raise DatasetIncomplete(f"{name}unreadable image {f} ({type(e).__name__}: {e})") from None
        out[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    return out


def _sample_per_class(meta, folder: Path, seed: int, per_class):
    train, ytr, test, yte = split_per_class(_class_tree(meta, folder), per_class, seed, meta.name, folder)
    return _decode(train, meta), torch.tensor(ytr), _decode(test, meta), torch.tensor(yte)


def caltech101(meta, root, seed, per_class):
    return _sample_per_class(meta, locate(meta, root), seed, per_class)


def caltech256(meta, root, seed, per_class):
    return _sample_per_class(meta, locate(meta, root), seed, per_class)


def class_folders(meta, root, seed, per_class):
    return _sample_per_class(meta, locate(meta, root), seed, per_class)


def _split_tree(meta, folder: Path):
    train, test, _ = _split_listing(meta, folder)
    return (_decode([f for f, _ in train], meta), torch.tensor([y for _, y in train]),
            _decode([f for f, _ in test], meta), torch.tensor([y for _, y in test]))


def split_folders(meta, root, seed, per_class):
    return _split_tree(meta, locate(meta, root))


def user_folder(meta, root, seed, per_class):
    return _split_tree(meta, locate(meta, root))


def _npz(meta, path: Path):
    import zipfile
    with _open_npz(meta, path) as z:
        try:
            return (torch.from_numpy(z["x_train"]).float().flatten(1), _labels(z["y_train"]),
                    torch.from_numpy(z["x_test"]).float().flatten(1), _labels(z["y_test"]))
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise DatasetIncomplete(f"dataset {meta.name!r}: {path} is damaged ({e})") from None


def timit(meta, root, seed, per_class):
    return _npz(meta, locate(meta, root))


def user_npz(meta, root, seed, per_class):
    return _npz(meta, locate(meta, root))


def digits(meta, root, seed, per_class):
    """scikit-learn's bundled digits: real 8×8 scans, a fixed stratified 70/30 split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 16.0
    y = torch.from_numpy(d.target).long()
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=d.target, random_state=0)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]
