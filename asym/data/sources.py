"""The datasets' on-disk layouts: where each lives, which files its reader reads, its splits — and, torch-free,
every file decoded for ``asym-data status --check``.

``layout(meta, root, …)`` looks at a dataset without decoding it (file names, sizes, ``.mat``/``.npz`` keys, the
folder scan of ``asym.data.scan``) and says whether it can satisfy its protocol, which files the reader will
read (the manifest its identity is computed from) and what the scan skipped. ``asym-data status``, the sweep's
preflight and ``load`` all ask it the same question. ``check(meta, root, …)`` decodes every file the run will
use with Pillow/numpy/scipy, finds exact duplicates and counts test images that also occur in training — the
same work as preparing the cache, without torch and without writing anything.
"""
from __future__ import annotations

import os
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import images, manifest, scan
from .scan import IMAGE_SUFFIXES  # noqa: F401 (re-exported: the readers' image extensions)

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
IMAGE_SIZE = 119  # folder images are decoded straight to the default119 input size


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


def _need_files(meta, folder: Path, names) -> dict[str, os.stat_result]:
    """Missing if none of ``names`` is in ``folder``, incomplete if only some are (or are empty); their stats."""
    stats = {}
    for n in names:
        try:
            st = (folder / n).stat()
        except OSError:
            continue
        if st.st_size and (folder / n).is_file():
            stats[str(folder / n)] = st
    absent = [n for n in names if str(folder / n) not in stats]
    if len(absent) == len(names):
        raise _missing(meta, folder / names[0] if len(names) == 1 else folder)
    if absent:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: missing or empty {', '.join(absent)}; "
                                f"{meta.source}")
    return stats


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

    ``classes`` maps a class name to its items (file paths; exact duplicates already collapsed, protocol decision
    17 in docs/protocol.md). A class is eligible when it has more than ``n_train`` items; its test split is the
    next ``min(n_test, size − n_train)`` items of a seeded permutation (protocol decision 12: the paper's "30
    training and 10 testing samples per class" on Caltech-101, whose smallest classes hold 31–39 images).
    Returns ``(train, y_train, test, y_test)``, labels numbered in sorted class-name order. Raises
    DatasetIncomplete when fewer than ``n_classes`` classes are eligible.
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


def scan_classes(folder: Path, found: scan.Scan | None = None) -> tuple[dict[str, list[str]], scan.Scan]:
    """``folder/<class>/**/<image>`` under the scan policy (protocol decision 15) → ({class: sorted image paths
    as str},
    the scan: every file's stat, what was skipped). Classes without images are left out; one scan spans all
    classes, so a file linked into two class folders counts once (in the first)."""
    found = found if found is not None else scan.Scan()
    classes = {}
    for name, d in scan.class_folders(folder, found):
        files = scan.walk_new(d, found, claimed=True)
        if files:
            classes[name] = files
    return classes, found


def class_files(folder: Path) -> dict[str, list[Path]]:
    """``folder/<class>/**/<image>`` → {class: sorted image paths} (``scan_classes`` without the scan)."""
    return {c: [Path(f) for f in files] for c, files in scan_classes(folder)[0].items()}


# ---------------------------------------------------------------- layout: can the files satisfy the protocol?

@dataclass
class Layout:
    """What ``layout`` found: where, a one-line description, the files the reader reads (path → stat: the
    identity's manifest) with the folder their paths are relative to, and what the folder scan skipped."""

    where: Path
    detail: str
    files: dict[str, os.stat_result] = field(default_factory=dict)
    base: Path = Path(".")
    skipped: Counter = field(default_factory=Counter)


def layout(meta, root: Path, per_class=None, seed: int = 0) -> Layout:
    """Raise DatasetMissing / DatasetIncomplete, or return the dataset's ``Layout`` (nothing decoded).
    ``per_class`` (a per-class dataset's protocol, ``CLASS_PROTOCOLS``): check that its split can be drawn."""
    path = locate(meta, root)
    r = meta.reader
    if r == "digits":
        return Layout(path, "bundled with scikit-learn")
    if r == "mnist":
        return Layout(path, "4 idx files", _need_files(meta, path, list(TORCHVISION_FILES[r])), path)
    if r in ("cifar10", "cifar100", "stl10"):
        names = list(TORCHVISION_FILES[r])
        return Layout(path, f"{len(names)} files", _need_files(meta, path, names), path)
    if r == "svhn":
        names = list(TORCHVISION_FILES[r])
        files = _need_files(meta, root, names)
        for n in names:
            _mat_keys(meta, root / n, ("X", "y"))
        return Layout(root, "train/test .mat", files, root)
    if r == "flowers102":
        train, test, found = _flowers102_listing(meta, path)
        return Layout(path, f"{len(train) + len(test)} images of {len(found.files)} in jpg/", found.files, path,
                      found.skipped)
    if r in ("caltech101", "caltech256", "class_folders"):
        classes, found = _class_tree(meta, path)
        detail = f"{len(classes)} classes, {sum(map(len, classes.values()))} images"
        if per_class:  # the protocol's split can be drawn (before duplicates are collapsed: that needs decoding)
            train, _, test, _ = split_per_class(classes, per_class, seed, meta.name, path)
            detail += f" → split {len(train)}/{len(test)}"
        return Layout(path, detail, found.files, path, found.skipped)
    if r in ("split_folders", "user_folder"):
        train, test, names, found = _split_listing(meta, path)
        return Layout(path, f"{len(names)} classes, {len(train)}/{len(test)} images", found.files, path, found.skipped)
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
        return Layout(path, f"{shapes['y_train'][0]}/{shapes['y_test'][0]} samples", {str(path): path.stat()},
                      path.parent)
    raise ValueError(f"no inspector for reader {r!r}")


def inspect(meta, root: Path, per_class=None, seed: int = 0) -> str:
    """Raise DatasetMissing / DatasetIncomplete, or return a short description of what is there."""
    return layout(meta, root, per_class, seed).detail


def _class_tree(meta, folder: Path) -> tuple[dict[str, list[str]], scan.Scan]:
    if not folder.is_dir():
        raise _missing(meta, folder)
    classes, found = scan_classes(folder)
    if not classes:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: no class folder holds an image; {meta.source}")
    return classes, found


# ---------------------------------------------------------------- the layouts' listings (shared with the readers)


def _flowers102_listing(meta, folder: Path):
    """The VGG layout torchvision reads: jpg/image_NNNNN.jpg, imagelabels.mat (labels), setid.mat (trnid valid
    tstid). Returns (train, test) as (file, label) lists, and the scan of jpg/ with both .mat files added."""
    from scipy.io import loadmat
    if not folder.is_dir():
        raise _missing(meta, folder)
    mats = _need_files(meta, folder, ["imagelabels.mat", "setid.mat"])
    _mat_keys(meta, folder / "imagelabels.mat", ("labels",))
    _mat_keys(meta, folder / "setid.mat", ("trnid", "valid", "tstid"))
    if not (folder / "jpg").is_dir():
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: no jpg/ folder; {meta.source}")
    labels = loadmat(folder / "imagelabels.mat", squeeze_me=True)["labels"]
    ids = loadmat(folder / "setid.mat", squeeze_me=True)
    item = lambda i: (str(folder / "jpg" / f"image_{int(i):05d}.jpg"), int(labels[int(i) - 1]) - 1)
    train = [item(i) for key in ("trnid", "valid") for i in np.atleast_1d(ids[key])]
    test = [item(i) for i in np.atleast_1d(ids["tstid"])]
    found = scan.walk(folder / "jpg")
    _all_listed(meta, folder, train + test, found)
    found.files.update(mats)
    return train, test, found


def _all_listed(meta, folder: Path, items, found: scan.Scan) -> None:
    """Every image a split file names must be a file the scan kept."""
    absent = [f for f, _ in items if f not in found.files]
    if absent:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: {len(absent)} images its split names are "
                                f"missing (e.g. {os.path.relpath(absent[0], folder)}); {meta.source}")


def _split_listing(meta, folder: Path):
    """(train files+labels, test files+labels, class names, scan) of a {train,test}/<class>/* tree or the VGG
    Flowers17 layout. train/ and test/ are scanned on their own: an image in both is leakage, counted by
    ``check``/``prepare`` (protocol decision 17), not hidden by the scan."""
    if (folder / "datasplits.mat").exists() or (folder / "jpg").is_dir():
        return _flowers17_listing(meta, folder)
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        raise DatasetMissing(f"dataset {meta.name!r} not found at {folder} (train/ and test/ class folders): "
                             f"{meta.source}")
    (train, scan_tr), (test, scan_te) = scan_classes(folder / "train"), scan_classes(folder / "test")
    names = sorted(train)
    if sorted(test) != names:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: train/ and test/ hold different classes "
                                f"({len(names)} / {len(test)} with images)")
    if meta.num_classes and len(names) != meta.num_classes:
        raise DatasetIncomplete(f"dataset {meta.name!r} at {folder}: {len(names)} classes, the protocol has "
                                f"{meta.num_classes}")
    found = scan.Scan({**scan_tr.files, **scan_te.files}, scan_tr.skipped + scan_te.skipped)
    return ([(f, i) for i, c in enumerate(names) for f in train[c]],
            [(f, i) for i, c in enumerate(names) for f in test[c]], names, found)


def _flowers17_listing(meta, folder: Path):
    """Oxford VGG's 17 Flowers as served: jpg/image_0001.jpg … and datasplits.mat (trn1, val1, tst1: 1-based ids)."""
    from scipy.io import loadmat
    mats = _need_files(meta, folder, ["datasplits.mat"])
    _mat_keys(meta, folder / "datasplits.mat", ("trn1", "val1", "tst1"))
    splits = loadmat(folder / "datasplits.mat", squeeze_me=True)
    item = lambda i: (str(folder / "jpg" / f"image_{int(i):04d}.jpg"), (int(i) - 1) // FLOWERS17_PER_CLASS)
    train = [item(i) for key in ("trn1", "val1") for i in np.atleast_1d(splits[key])]
    test = [item(i) for i in np.atleast_1d(splits["tst1"])]
    found = scan.walk(folder / "jpg")
    _all_listed(meta, folder, train + test, found)
    used = {f for f, _ in train + test}
    found.files = {**{f: st for f, st in found.files.items() if f in used}, **mats}  # split 1's images
    return train, test, sorted({y for _, y in train}), found


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


def npz_arrays(meta, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_test, y_test of an .npz (every member read whole: a damaged one is DatasetIncomplete)."""
    import zipfile
    with _open_npz(meta, path) as z:
        try:
            return tuple(np.asarray(z[k]) for k in NPZ_KEYS)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise DatasetIncomplete(f"dataset {meta.name!r}: {path} is damaged ({e})") from None


# ---------------------------------------------------------------- decoding the image folders (readers and check)

_PIXEL_DIGESTS: dict[tuple, dict[str, str]] = {}  # the last per-class dataset's pixel digests, by its manifest


def per_class_files(meta, folder: Path, seed: int, per_class, progress: bool = False):
    """The per-class protocol's split, drawn after exact duplicates are collapsed (protocol decision 17).

    Decodes every image of the dataset once (a file that cannot be decoded refuses the dataset, naming it); the
    digests are kept for the next seed in this process (the sweep preflight prepares every seed of a sweep).
    Returns (train, y_train, test, y_test, notes); notes: ``duplicates_collapsed``,
    ``duplicates_across_classes``, ``test_in_train`` (0 by construction)."""
    classes, found = _class_tree(meta, folder)
    files = [f for c in sorted(classes) for f in classes[c]]
    key = (meta.name, manifest.of_files(found.files, folder).digest)  # these very files (path, size, mtime)
    if key not in _PIXEL_DIGESTS:
        _PIXEL_DIGESTS.clear()  # one dataset's digests at a time (memory)
        _PIXEL_DIGESTS[key] = dict(zip(files, images.decode(files, meta.name, progress=progress)[1]))
    by_file = _PIXEL_DIGESTS[key]
    classes, notes = images.collapse(classes, by_file)
    train, ytr, test, yte = split_per_class(classes, per_class, seed, meta.name, folder)
    notes["test_in_train"] = leakage([by_file[f] for f in train], [by_file[f] for f in test])
    return train, ytr, test, yte, notes


def leakage(train_digests, test_digests) -> int:
    """How many test images also occur in training (equal pixel digests; protocol decision 17)."""
    seen = set(train_digests)
    return sum(d in seen for d in test_digests)


# ---------------------------------------------------------------- check: every file decoded, torch-free

def _idx(meta, path: Path) -> np.ndarray:
    """An MNIST idx file as numpy (the format torchvision's ``read_sn3_pascalvincent_tensor`` reads, uint8 only)."""
    raw = path.read_bytes()
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic % 256
    if magic // 256 != 8 or ndim not in (1, 3) or len(raw) < 4 + 4 * ndim:
        raise DatasetIncomplete(f"dataset {meta.name!r}: {path} is not a uint8 idx file (magic {magic})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise DatasetIncomplete(f"dataset {meta.name!r}: {path} holds {len(body)} bytes, its header says "
                                f"{int(np.prod(shape))} (truncated?)")
    return np.frombuffer(body, np.uint8).reshape(shape)


def _unpickle(meta, path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as e:  # a truncated or foreign pickle
        raise DatasetIncomplete(f"dataset {meta.name!r}: {path} is not a readable CIFAR batch ({e})") from None


def shipped_arrays(meta, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of MNIST, CIFAR-10/100, SVHN, STL-10 with numpy/scipy alone, as
    torchvision's readers decode them (a test pins them equal): what ``check`` decodes without torch."""
    path = locate(meta, root)
    r = meta.reader
    if r == "mnist":
        x = lambda p: _idx(meta, path / f"{p}-images-idx3-ubyte")[:, None]
        y = lambda p: _idx(meta, path / f"{p}-labels-idx1-ubyte").astype(np.int64)
        return x("train"), y("train"), x("t10k"), y("t10k")
    if r in ("cifar10", "cifar100"):
        names = TORCHVISION_FILES[r]
        train_names, test_names = (names[:5], names[5:6]) if r == "cifar10" else (names[:1], names[1:2])
        key = "labels" if r == "cifar10" else "fine_labels"

        def batches(ns):
            bs = [_unpickle(meta, path / n) for n in ns]
            try:
                x = np.vstack([b["data"] for b in bs]).reshape(-1, 3, 32, 32)
                return x, np.concatenate([np.asarray(b[key], np.int64) for b in bs])
            except (KeyError, ValueError) as e:
                raise DatasetIncomplete(f"dataset {meta.name!r}: a batch under {path} is malformed ({e})") from None
        return (*batches(train_names), *batches(test_names))
    if r == "svhn":
        from scipy.io import loadmat
        out = []
        for split in ("train", "test"):
            try:
                m = loadmat(root / f"{split}_32x32.mat")
                x, y = np.transpose(m["X"], (3, 2, 0, 1)), m["y"].astype(np.int64).squeeze(1)
            except Exception as e:
                raise DatasetIncomplete(f"dataset {meta.name!r}: {root / f'{split}_32x32.mat'} is unreadable "
                                        f"({e})") from None
            np.place(y, y == 10, 0)
            out += [x, y]
        return tuple(out)
    if r == "stl10":
        def split(s):
            raw = np.fromfile(path / f"{s}_X.bin", np.uint8)
            labels = np.fromfile(path / f"{s}_y.bin", np.uint8).astype(np.int64) - 1
            if raw.size != labels.size * 3 * 96 * 96:
                raise DatasetIncomplete(f"dataset {meta.name!r}: {path / f'{s}_X.bin'} holds {raw.size} bytes, "
                                        f"{labels.size} labels need {labels.size * 3 * 96 * 96} (truncated?)")
            return np.transpose(raw.reshape(-1, 3, 96, 96), (0, 1, 3, 2)), labels
        return (*split("train"), *split("test"))
    raise ValueError(f"no array reader for {r!r}")


def check(meta, root: Path, per_class=None, seed: int = 0) -> dict:
    """Decode every file a run on this dataset will use (``asym-data status --check``), torch-free, writing
    nothing. Raises DatasetMissing / DatasetIncomplete (one line: an undecodable file is named, with how many
    others fail) or returns the notes ``prepare`` records: ``test_in_train`` (and, where this product draws
    the split, ``duplicates_collapsed``/``duplicates_across_classes``)."""
    layout(meta, root, per_class, seed)
    r, path = meta.reader, locate(meta, root)
    if r == "digits":
        return {}
    if r in ("caltech101", "caltech256", "class_folders"):
        return per_class_files(meta, path, seed, per_class)[4]
    if r in ("split_folders", "user_folder", "flowers102"):
        train, test = (_flowers102_listing(meta, path) if r == "flowers102" else _split_listing(meta, path))[:2]
        files = [f for f, _ in train + test]
        _, digests = images.decode(files, meta.name)
        return {"test_in_train": leakage(digests[:len(train)], digests[len(train):])}
    if r in ("timit", "user_npz"):
        xtr, _, xte, _ = npz_arrays(meta, path)
    else:
        xtr, _, xte, _ = shipped_arrays(meta, root)
    return {"test_in_train": leakage(images.row_digests(xtr), images.row_digests(xte))}
