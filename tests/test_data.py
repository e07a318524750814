"""Each loader on fake files in the exact on-disk layout the real loader reads; no network."""
import pickle
import struct

import numpy as np
import pytest
import torch

from asym import data

RNG = np.random.default_rng(0)


def write_idx(path, arr):
    magic = {3: 2051, 1: 2049}[arr.ndim]
    with open(path, "wb") as f:
        f.write(struct.pack(">II", magic, arr.shape[0]))
        if arr.ndim == 3:
            f.write(struct.pack(">II", *arr.shape[1:]))
        f.write(arr.astype(np.uint8).tobytes())


def fake_mnist(root, n_train=30, n_test=10):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", RNG.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks the real archives' md5 sums; fake files only need to exist."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn
    exists = lambda fpath, md5=None: __import__("os").path.isfile(fpath)
    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(svhn, "check_integrity", exists)


def fake_cifar(root, hundred=False, n=20):
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"
    classes = 100 if hundred else 10
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": RNG.integers(0, 256, (n, 3072)).astype(np.uint8), key: list(np.arange(n) % classes)}
        pickle.dump(batch, open(folder / name, "wb"))
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]} if hundred else {"label_names": [f"c{i}" for i in range(10)]}
    pickle.dump(meta, open(folder / ("meta" if hundred else "batches.meta"), "wb"))


def test_mnist_idx_files(tmp_path):
    fake_mnist(tmp_path)
    d = data.load("mnist", tmp_path)
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert d.y_train.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert abs(d.x_train.mean().item()) < 1e-5 and abs(d.x_train.std().item() - 1) < 1e-3


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_pickles(tmp_path, no_md5, hundred):
    fake_cifar(tmp_path, hundred)
    d = data.load("cifar100" if hundred else "cifar10", tmp_path)
    assert d.x_train.shape == ((20 if hundred else 100), 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    assert d.arch == "cifar" and d.num_classes == (100 if hundred else 10)
    per_channel = d.x_train.mean((0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-5)


def test_svhn_mat(tmp_path, no_md5):
    from scipy.io import savemat
    for split, n in (("train", 12), ("test", 6)):
        savemat(tmp_path / f"{split}_32x32.mat",
                {"X": RNG.integers(0, 256, (32, 32, 3, n)).astype(np.uint8), "y": (np.arange(n) % 10 + 1)[:, None]})
    d = data.load("svhn", tmp_path)
    assert d.x_train.shape == (12, 3, 32, 32) and d.y_train.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def write_images(folder, n, size=(40, 30)):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(RNG.integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)).save(folder / f"{i}.jpg")


def test_per_class_protocol_from_folder_tree(tmp_path, monkeypatch):
    monkeypatch.setitem(data.CLASS_PROTOCOLS, "lfw", (3, 2, 1))  # 3 IDs, 2 train / 1 test each
    for c in range(5):
        write_images(tmp_path / "lfw" / f"person{c}", 4 if c != 4 else 2)  # person4 has too few
    d = data.load("lfw", tmp_path, seed=1)
    assert d.x_train.shape == (6, 3, 119, 119) and d.x_test.shape == (3, 3, 119, 119)
    assert sorted(d.y_train.tolist()) == [0, 0, 1, 1, 2, 2]
    again = data.load("lfw", tmp_path, seed=1, cache=tmp_path / "other-cache")
    assert torch.equal(again.x_train, d.x_train)  # the recorded seed reproduces the sample


def test_split_folders_and_user_imagefolder(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c in ("a", "b"):
            write_images(tmp_path / "mine" / split / c, n)
    d = data.load(f"folder:{tmp_path / 'mine'}")
    assert d.num_classes == 2 and d.arch == "default119" and d.x_train.shape == (6, 3, 119, 119)


def test_timit_npz_and_user_npz(tmp_path):
    arrays = dict(x_train=RNG.normal(size=(16, 1845)), y_train=np.arange(16) % 80,
                  x_test=RNG.normal(size=(8, 1845)), y_test=np.arange(8))
    np.savez(tmp_path / "timit80.npz", **arrays)
    d = data.load("timit80", tmp_path)
    assert d.arch == "timit" and d.x_train.shape == (16, 1845) and d.num_classes == 80
    np.savez(tmp_path / "feat.npz", x_train=RNG.normal(size=(10, 7)), y_train=np.arange(10) % 3,
             x_test=RNG.normal(size=(4, 7)), y_test=np.arange(4) % 3)
    u = data.load(f"npz:{tmp_path / 'feat.npz'}")
    assert u.x_train.shape == (10, 7) and u.num_classes == 3


def test_digits_offline_demo_set():
    d = data.load("digits")
    assert d.x_train.shape == (1257, 1, 28, 28) and d.x_test.shape == (540, 1, 28, 28)
    totals = torch.bincount(d.y_test) + torch.bincount(d.y_train)
    assert torch.all((torch.bincount(d.y_test) - 0.3 * totals).abs() <= 1)  # stratified 70/30


def test_cache_is_reused(tmp_path):
    a = data.load("digits", cache=tmp_path)
    files = list(tmp_path.glob("digits-*.pt"))
    assert len(files) == 1
    b = data.load("digits", cache=tmp_path)
    assert torch.equal(a.x_train, b.x_train)


@pytest.mark.parametrize("name,where", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py"),
                                        ("timit80", "timit80.npz"), ("scene67", "scene67"), ("flowers17", "flowers17")])
def test_missing_dataset_one_line_error(tmp_path, name, where):
    with pytest.raises(data.DatasetMissing) as e:
        data.load(name, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and where in msg and data.info(name).source in msg
    with pytest.raises(data.DatasetMissing):
        data.check_available(name, tmp_path)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="choose from"):
        data.info("imagenet")
