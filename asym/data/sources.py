"""The datasets' on-disk layouts, looked at without decoding: where each lives, which files it needs, its splits.

Every reader of ``asym.data.readers`` (which decodes into tensors) has a cheap counterpart in ``inspect``
(file names, sizes and ``.mat``/``.npz`` keys, no decoding) that says whether the layout can satisfy its
protocol: ``asym-data status``, the sweep's preflight and ``load`` all ask the same question. Torch-free,
so those checks start in a fraction of a second. Random class/sample choices use the run's recorded seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
FLOWERS17_PER_CLASS = 80  # the VGG archive numbers images class by class, 80 each (image_0001 … image_1360)
# The files torchvision's dataset classes read (their ``resources``/``train_list``/``test_list``/``meta``/
# ``split_list``), named here so looking at a layout needs no torch; a test pins them on torchvision's own.
TORCHVISION_FILES = {
    "mnist": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "cifar10": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                "batches.meta"),
    "cifar100": ("train", "test", "meta"),
    "stl10": ("train_X.bin", "train_y.bin", "unlabeled_X.bin", "test_X.bin", "test_y.bin"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
}


class DatasetMissing(RuntimeError):
    """The files of a dataset are not where the loader looked; the message says where and how to get them."""


class DatasetIncomplete(DatasetMissing):
    """The files are there but cannot satisfy the protocol (too few classes or images, a bad file, a wrong key)."""


# ---------------------------------------------------------------- where a dataset lives

def locate(meta, root: Path) -> Path:
    """The first of the registry's candidate paths (``meta.paths``, relative to ``root``) that exists, else the first."""
    if meta.reader.startswith("user"):
        return Path(meta.source).expanduser()
    candidates = [root / p for p in meta.paths] or [root]
    return next((p for p in candidates if p.exists()), candidates[0])


def _missing(meta, path: Path) -> DatasetMissing:
    return DatasetMissing(f"dataset {meta.name!r} not found at {path}: {meta.source}, or set data.root")


def _need_files(meta, folder: Path, names) -> None:
    """Missing if none of ``names`` is in ``folder``, incomplete if only some are (or are empty)."""
    absent = [n for n in names if not (folder / n).is_file() or (folder / n).stat().st_size == 0]
    if len(absent) == len(names):
        raise _missing(meta, folder / names[0] if len(names) == 1 else folder)
    if absent:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: missing or empty {', '.join(absent)}; "
                                f"{meta.source}")


def _mat_keys(meta, path: Path, keys) -> None:
    """A MATLAB file must hold the variables the reader indexes (read from its header, not loaded)."""
    from scipy.io import whosmat
    try:
        found = {name for name, *_ in whosmat(str(path))}
    except Exception as e:  # scipy raises ValueError/TypeError/OSError on a damaged header
        raise DatasetIncomplete(f"dataset {meta.name!r}: {path} is not a readable .mat file ({e})") from None
    if not set(keys) <= found:
        raise DatasetIncomplete(f"dataset {meta.name!r}: {path} holds {sorted(found)}, the reader needs {sorted(keys)}")


# ---------------------------------------------------------------- the per-class split rule

def split_per_class(classes: dict[str, list], per_class: tuple[int, int, int], seed: int,
                    name: str = "dataset", where: Path | str = "") -> tuple[list, list, list, list]:
    """Sample ``n_classes`` classes, then ``n_train`` training and up to ``n_test`` test items of each.

    ``classes`` maps a class name to its items (file paths). A class is eligible when it has more than
    ``n_train`` items; its test split is the next ``min(n_test, size − n_train)`` items of a seeded
    permutation (protocol decision 12 in docs/protocol.md: the paper's "30 training and 10 testing samples per
    class" on Caltech-101, whose smallest classes hold 31–39 images). Returns ``(train, y_train, test, y_test)``,
    labels numbered in sorted class-name order. Raises DatasetIncomplete when fewer than ``n_classes``
    classes are eligible.
    """
    n_classes, n_train, n_test = per_class
    eligible = [c for c in sorted(classes) if len(classes[c]) > n_train]
    if len(eligible) < n_classes:
        small = sorted((len(v), c) for c, v in classes.items() if len(v) <= n_train)[:3]
        shown = ", ".join(f"{c} {n}" for n, c in small)
        raise DatasetIncomplete(f"dataset {name!r} at {where}: {len(eligible)} of {len(classes)} classes have more "
                                f"than {n_train} images, the protocol needs {n_classes}"
                                + (f" (smallest: {shown})" if shown else ""))
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(eligible, n_classes, replace=False)) if len(eligible) > n_classes else eligible
    train, test, ytr, yte = [], [], [], []
    for label, c in enumerate(chosen):
        items = [classes[c][i] for i in rng.permutation(len(classes[c]))[: n_train + n_test]]
        train += items[:n_train]
        test += items[n_train:]
        ytr += [label] * n_train
        yte += [label] * len(items[n_train:])
    return train, ytr, test, yte


def class_files(folder: Path) -> dict[str, list[Path]]:
    """``folder/<class>/**/<image>`` → {class: sorted image paths}; classes without images are left out."""
    classes = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if files:
            classes[d.name] = files
    return classes


# ---------------------------------------------------------------- inspect: can the layout satisfy the protocol?

def inspect(meta, root: Path, per_class=None, seed: int = 0) -> str:
    """Raise DatasetMissing / DatasetIncomplete, or return a short description of what is there."""
    path = locate(meta, root)
    r = meta.reader
    if r == "digits":
        return "bundled with scikit-learn"
    if r == "mnist":
        _need_files(meta, path, list(TORCHVISION_FILES[r]))
        return "4 idx files"
    if r in ("cifar10", "cifar100", "stl10"):
        names = list(TORCHVISION_FILES[r])
        _need_files(meta, path, names)
        return f"{len(names)} files"
    if r == "svhn":
        names = list(TORCHVISION_FILES[r])
        _need_files(meta, root, names)
        for n in names:
            _mat_keys(meta, root / n, ("X", "y"))
        return "train/test .mat"
    if r == "flowers102":
        return _flowers102_files(meta, path)[0]
    if r in ("caltech101", "caltech256", "class_folders"):
        classes = _class_tree(meta, path)
        train, _, test, _ = split_per_class(classes, per_class, seed, meta.name, path)
        return f"{len(classes)} classes, {sum(map(len, classes.values()))} images → split {len(train)}/{len(test)}"
    if r in ("split_folders", "user_folder"):
        train, test, names = _split_listing(meta, path)
        return f"{len(names)} classes, {len(train)}/{len(test)} images"
    if r in ("timit", "user_npz"):
        with _open_npz(meta, path) as z:
            shapes = {k: _npy_shape(meta, z, k) for k in NPZ_KEYS}
            for split in ("train", "test"):
                if shapes[f"x_{split}"][:1] != shapes[f"y_{split}"][:1]:
                    raise DatasetIncomplete(f"dataset {meta.name!r}: {path}: x_{split} has {shapes[f'x_{split}'][:1]} "
                                            f"rows, y_{split} {shapes[f'y_{split}'][:1]}")
            if r == "timit":
                dims = int(np.prod(shapes["x_train"][1:]))
                n_classes = len(np.unique(z["y_train"]))
                if dims != TIMIT_FEATURES or n_classes < meta.num_classes:
                    raise DatasetIncomplete(f"dataset {meta.name!r}: {path} holds {n_classes} classes of {dims}-dim "
                                            f"features, the protocol needs {meta.num_classes} of {TIMIT_FEATURES}")
            return f"{shapes['y_train'][0]}/{shapes['y_test'][0]} samples"
    raise ValueError(f"no inspector for reader {r!r}")


def _class_tree(meta, folder: Path) -> dict[str, list[Path]]:
    if not folder.is_dir():
        raise _missing(meta, folder)
    classes = class_files(folder)
    if not classes:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: no class folder holds an image; {meta.source}")
    return classes


# ---------------------------------------------------------------- the layouts' listings (shared with the readers)


def _flowers102_files(meta, folder: Path):
    """The VGG layout torchvision reads: jpg/image_NNNNN.jpg, imagelabels.mat (labels), setid.mat (trnid valid tstid)."""
    if not folder.is_dir():
        raise _missing(meta, folder)
    _need_files(meta, folder, ["imagelabels.mat", "setid.mat"])
    _mat_keys(meta, folder / "imagelabels.mat", ("labels",))
    _mat_keys(meta, folder / "setid.mat", ("trnid", "valid", "tstid"))
    if not (folder / "jpg").is_dir():
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: no jpg/ folder; {meta.source}")
    return f"{sum(1 for _ in (folder / 'jpg').iterdir())} images", folder


def _split_listing(meta, folder: Path):
    """(train files+labels, test files+labels, class names) of a {train,test}/<class>/* tree or the VGG Flowers17 layout."""
    if (folder / "datasplits.mat").exists() or (folder / "jpg").is_dir():
        return _flowers17_listing(meta, folder)
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        raise DatasetMissing(f"dataset {meta.name!r} not found at {folder} (train/ and test/ class folders): "
                             f"{meta.source}")
    train, test = class_files(folder / "train"), class_files(folder / "test")
    names = sorted(train)
    if sorted(test) != names:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: train/ and test/ hold different classes "
                                f"({len(names)} / {len(test)} with images)")
    if meta.num_classes and len(names) != meta.num_classes:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: {len(names)} classes, the protocol has "
                                f"{meta.num_classes}")
    return ([(f, i) for i, c in enumerate(names) for f in train[c]],
            [(f, i) for i, c in enumerate(names) for f in test[c]], names)


def _flowers17_listing(meta, folder: Path):
    """Oxford VGG's 17 Flowers as served: jpg/image_0001.jpg … and datasplits.mat (trn1, val1, tst1: 1-based ids)."""
    from scipy.io import loadmat
    _need_files(meta, folder, ["datasplits.mat"])
    _mat_keys(meta, folder / "datasplits.mat", ("trn1", "val1", "tst1"))
    splits = loadmat(folder / "datasplits.mat", squeeze_me=True)
    item = lambda i: (folder / "jpg" / f"image_{int(i):04d}.jpg", (int(i) - 1) // FLOWERS17_PER_CLASS)
    train = [item(i) for key in ("trn1", "val1") for i in np.atleast_1d(splits[key])]
    test = [item(i) for i in np.atleast_1d(splits["tst1"])]
    absent = [f.name for f, _ in train + test if not f.is_file()]
    if absent:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: {len(absent)} images of split 1 are missing "
                                f"(e.g. jpg/{absent[0]}); {meta.source}")
    return train, test, sorted({y for _, y in train})


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
TIMIT_FEATURES = 1845  # Section 5: 1845-dim features per frame window


def _npy_shape(meta, z, key: str) -> tuple[int, ...]:
    """An array's shape from its .npy header inside the .npz (``NpzFile.zip``), without reading the data."""
    try:
        with z.zip.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return tuple(read(f)[0])
    except Exception as e:  # a damaged member
        raise DatasetIncomplete(f"dataset {meta.name!r}: {key} in {z.zip.filename} is unreadable ({e})") from None


def _open_npz(meta, path: Path):
    """np.load of an .npz holding NPZ_KEYS; a truncated or foreign file is DatasetIncomplete."""
    import zipfile
    if not path.exists():
        raise _missing(meta, path)
    try:
        z = np.load(path)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DatasetIncomplete(f"dataset {meta.name!r}: {path} is not a readable .npz ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile) or not set(NPZ_KEYS) <= set(z.files):
        found = sorted(z.files) if hasattr(z, "files") else type(z).__name__
        raise DatasetIncomplete(f"dataset {meta.name!r}: {path} needs arrays {sorted(NPZ_KEYS)}, found {found}")
    return z


