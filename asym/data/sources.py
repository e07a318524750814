"""Readers: one function per on-disk layout, each returning uint8/float tensors (x_train, y_train, x_test, y_test).

torchvision's dataset classes read (and, with download=True, fetch) the datasets it knows; the others
read a documented folder layout. Random class/sample choices use the run's recorded seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
IMAGE_SIZE = 119  # folder images are decoded straight to the default119 input size


def _missing(meta, path: Path, missing):
    return missing(f"dataset {meta.name!r} not found at {path}: {meta.source}, or set data.root")


def _expected_path(meta, root: Path) -> Path:
    return {
        "mnist": root / "MNIST" / "raw", "cifar10": root / "cifar-10-batches-py",
        "cifar100": root / "cifar-100-python", "svhn": root / "train_32x32.mat", "stl10": root / "stl10_binary",
        "caltech101": root / "caltech101" / "101_ObjectCategories",
        "caltech256": root / "caltech256" / "256_ObjectCategories", "flowers102": root / "flowers-102",
        "timit": root / "timit80.npz", "user_npz": Path(meta.source), "user_folder": Path(meta.source),
    }.get(meta.reader, root / meta.name)


def check(meta, root: Path, missing) -> None:
    path = _expected_path(meta, root)
    if not path.exists():
        raise _missing(meta, path, missing)


def _tv(cls_name, meta, root, download, missing, **kw):
    import torchvision.datasets as tvd
    if not download:
        check(meta, root, missing)
    try:
        return getattr(tvd, cls_name)(str(root), download=download, **kw)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise missing(f"dataset {meta.name!r} unreadable under {root} ({e}): {meta.source}") from None


def _labels(v) -> torch.Tensor:
    return torch.as_tensor(np.asarray(v), dtype=torch.long)


def mnist(meta, root, seed, download, per_class, missing):
    tr, te = (_tv("MNIST", meta, root, download, missing, train=t) for t in (True, False))
    return tr.data[:, None], _labels(tr.targets), te.data[:, None], _labels(te.targets)


def _cifar(cls_name, meta, root, download, missing):
    tr, te = (_tv(cls_name, meta, root, download, missing, train=t) for t in (True, False))
    chw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    return chw(tr.data), _labels(tr.targets), chw(te.data), _labels(te.targets)


def cifar10(meta, root, seed, download, per_class, missing):
    return _cifar("CIFAR10", meta, root, download, missing)


def cifar100(meta, root, seed, download, per_class, missing):
    return _cifar("CIFAR100", meta, root, download, missing)


def svhn(meta, root, seed, download, per_class, missing):
    tr, te = (_tv("SVHN", meta, root, download, missing, split=s) for s in ("train", "test"))
    return torch.from_numpy(tr.data), _labels(tr.labels), torch.from_numpy(te.data), _labels(te.labels)


def stl10(meta, root, seed, download, per_class, missing):
    tr, te = (_tv("STL10", meta, root, download, missing, split=s) for s in ("train", "test"))
    return torch.from_numpy(tr.data), _labels(tr.labels), torch.from_numpy(te.data), _labels(te.labels)


def flowers102(meta, root, seed, download, per_class, missing):
    splits = [_tv("Flowers102", meta, root, download, missing, split=s) for s in ("train", "val", "test")]
    decoded = [_decode(ds._image_files) for ds in splits]
    labels = [_labels(ds._labels) for ds in splits]
    return torch.cat(decoded[:2]), torch.cat(labels[:2]), decoded[2], labels[2]


def _decode(files) -> torch.Tensor:
    """Images → uint8 N×3×119×119 (RGB, resized once here to keep the cache small)."""
    from PIL import Image
    out = torch.empty(len(files), 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            out[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    return out


def _class_files(folder: Path) -> dict[str, list[Path]]:
    classes = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            classes[d.name] = files
    return classes


def _sample_per_class(meta, folder: Path, seed: int, per_class, missing):
    """Sample ``n_classes`` classes, then ``n_train``/``n_test`` images of each, from a recorded seed."""
    n_classes, n_train, n_test = per_class
    if not folder.is_dir():
        raise _missing(meta, folder, missing)
    classes = _class_files(folder)
    eligible = [c for c, fs in classes.items() if len(fs) >= n_train + n_test]
    if len(eligible) < n_classes:
        raise missing(f"dataset {meta.name!r} at {folder}: {len(eligible)} classes have ≥{n_train + n_test} "
                      f"images, the protocol needs {n_classes}")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(eligible, n_classes, replace=False)) if len(eligible) > n_classes else eligible
    train, test, ytr, yte = [], [], [], []
    for label, c in enumerate(chosen):
        files = [classes[c][i] for i in rng.permutation(len(classes[c]))[: n_train + n_test]]
        train += files[:n_train]; test += files[n_train:]
        ytr += [label] * n_train; yte += [label] * n_test
    return _decode(train), torch.tensor(ytr), _decode(test), torch.tensor(yte)


def caltech101(meta, root, seed, download, per_class, missing):
    if download:
        _tv("Caltech101", meta, root, True, missing)
    return _sample_per_class(meta, root / "caltech101" / "101_ObjectCategories", seed, per_class, missing)


def caltech256(meta, root, seed, download, per_class, missing):
    if download:
        _tv("Caltech256", meta, root, True, missing)
    return _sample_per_class(meta, root / "caltech256" / "256_ObjectCategories", seed, per_class, missing)


def class_folders(meta, root, seed, download, per_class, missing):
    return _sample_per_class(meta, root / meta.name, seed, per_class, missing)


def _split_tree(meta, folder: Path, missing):
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        raise missing(f"dataset {meta.name!r} not found at {folder}/{{train,test}}: {meta.source}")
    train, test = _class_files(folder / "train"), _class_files(folder / "test")
    names = sorted(train)
    if sorted(test) != names:
        raise missing(f"dataset {meta.name!r} at {folder}: train/ and test/ hold different classes")
    ytr = [i for i, c in enumerate(names) for _ in train[c]]
    yte = [i for i, c in enumerate(names) for _ in test[c]]
    return (_decode([f for c in names for f in train[c]]), torch.tensor(ytr),
            _decode([f for c in names for f in test[c]]), torch.tensor(yte))


def split_folders(meta, root, seed, download, per_class, missing):
    return _split_tree(meta, root / meta.name, missing)


def user_folder(meta, root, seed, download, per_class, missing):
    return _split_tree(meta, Path(meta.source).expanduser(), missing)


def _npz(meta, path: Path, missing):
    if not path.exists():
        raise _missing(meta, path, missing)
    with np.load(path) as z:
        keys = {"x_train", "y_train", "x_test", "y_test"}
        if not keys <= set(z.files):
            raise missing(f"{path}: an .npz needs arrays {sorted(keys)}, found {sorted(z.files)}")
        return (torch.from_numpy(z["x_train"]).float().flatten(1), _labels(z["y_train"]),
                torch.from_numpy(z["x_test"]).float().flatten(1), _labels(z["y_test"]))


def timit(meta, root, seed, download, per_class, missing):
    return _npz(meta, root / "timit80.npz", missing)


def user_npz(meta, root, seed, download, per_class, missing):
    return _npz(meta, Path(meta.source).expanduser(), missing)


def digits(meta, root, seed, download, per_class, missing):
    """scikit-learn's bundled digits: real 8×8 scans, a fixed stratified 70/30 split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 16.0
    y = torch.from_numpy(d.target).long()
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=d.target, random_state=0)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]
