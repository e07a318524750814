"""Real datasets: the per-class split rule on each dataset's real shape, ``asym-data status | download | prepare``,
broken layouts, the cache's atomicity, the sweep preflight naming every missing dataset, docs/datasets.md's table.

Downloads talk only to an HTTP server on 127.0.0.1 that the test starts, serving archives in the real
sources' layouts; the URLs are pointed at it through torchvision's public class attributes (``CIFAR10.url``,
``MNIST.mirrors``…) or ``asym.data.remote``'s own constants.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from asym import data
from asym.data import cli, readers, remote, sources
from layouts import CALTECH101_COUNTS, REAL_SHAPES, distinct_png, tiny_jpeg, write_class_tree, write_real_shape
from test_data import fake_cifar, fake_mnist, no_md5  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[1]


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


# ---------------------------------------------------------------- the split rule on real shapes

@pytest.fixture(scope="module")
def real_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    for name in REAL_SHAPES:
        write_real_shape(root, name)
    return root


@pytest.mark.parametrize("name", sorted(data.CLASS_PROTOCOLS))
def test_every_class_protocol_works_on_its_real_shape(real_shapes, name):
    n_classes, n_train, n_test = data.CLASS_PROTOCOLS[name]
    s = data.survey(name, real_shapes)
    assert s.state == "present" and s.usable, s.detail
    classes = sources.class_files(sources.locate(data.info(name), real_shapes))
    train, ytr, test, yte = sources.split_per_class(classes, data.CLASS_PROTOCOLS[name], seed=0)
    assert len(set(ytr)) == n_classes and len(train) == n_classes * n_train
    assert not set(train) & set(test)
    for label in range(n_classes):
        cls = train[ytr.index(label)].parent.name
        assert yte.count(label) == min(n_test, len(classes[cls]) - n_train)  # 30, then up to 10
    if name == "caltech101":  # all 102 folders, and the 15 classes under 40 images give what they have
        assert len(classes) == 102 and len(test) == sum(min(10, n - 30) for n in CALTECH101_COUNTS.values())
    again = sources.split_per_class(classes, data.CLASS_PROTOCOLS[name], seed=0)
    assert again[0] == train and sources.split_per_class(classes, data.CLASS_PROTOCOLS[name], seed=1)[0] != train


def test_caltech101_small_classes_load(tmp_path, monkeypatch):
    """The real Caltech-101's smallest classes (31–39 images) load: 30 train, all that remain for test.
    (The old loader kept only classes with ≥ 40 images and refused the dataset.)"""
    small = {c: n for c, n in CALTECH101_COUNTS.items() if n < 40}
    counts = {**small, "accordion": 55}
    write_real_shape(tmp_path, "caltech101", distinct_png, counts)
    monkeypatch.setitem(data.CLASS_PROTOCOLS, "caltech101", (len(counts), 30, 10))
    d = data.load("caltech101", tmp_path)
    assert d.x_train.shape == (30 * len(counts), 3, 119, 119)
    per_class = torch.bincount(d.y_test, minlength=len(counts)).tolist()
    assert per_class == [min(10, counts[c] - 30) for c in sorted(counts)]  # labels in sorted class order


def test_a_face_set_short_of_identities_is_incomplete(tmp_path):
    """An 80-ID face set with 79 identities that have more than 10 images cannot satisfy LFW-ID's protocol."""
    counts = {f"p{i:03d}": (11 if i < 79 else 10) for i in range(300)}
    write_real_shape(tmp_path, "lfw", counts=counts)
    s = data.survey("lfw", tmp_path)
    assert s.state == "incomplete" and "79 of 300 classes" in s.detail and "needs 80" in s.detail
    with pytest.raises(data.DatasetIncomplete):
        data.check_available("lfw", tmp_path)


def test_lfw_as_torchvision_unpacks_it(tmp_path):
    write_class_tree(tmp_path / "lfw-py" / "lfw", {f"p{i:03d}": 15 for i in range(80)})
    s = data.survey("lfw", tmp_path)
    assert s.state == "present" and s.path == tmp_path / "lfw-py" / "lfw"


# ---------------------------------------------------------------- broken layouts

def _svhn(root, keys=("X", "y")):
    from scipy.io import savemat
    for split, n in (("train", 12), ("test", 6)):
        savemat(root / f"{split}_32x32.mat", {keys[0]: np.zeros((32, 32, 3, n), np.uint8),
                                              keys[1]: (np.arange(n) % 10 + 1)[:, None]})


def _timit(root, truncate=False, keys=("x_train", "y_train", "x_test", "y_test"), dims=1845, classes=80):
    arrays = [np.zeros((160, dims), np.float32), np.arange(160) % classes, np.zeros((8, dims), np.float32), np.arange(8)]
    np.savez(root / "timit80.npz", **dict(zip(keys, arrays)))
    if truncate:
        b = (root / "timit80.npz").read_bytes()
        (root / "timit80.npz").write_bytes(b[: len(b) // 2])


def _flowers102(root, setid_keys=("trnid", "valid", "tstid")):
    from scipy.io import savemat
    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    for i in range(1, 7):
        (folder / "jpg" / f"image_{i:05d}.jpg").write_bytes(tiny_jpeg(i))
    savemat(folder / "imagelabels.mat", {"labels": np.array([[1, 2, 1, 2, 1, 2]])})
    savemat(folder / "setid.mat", dict(zip(setid_keys, (np.array([[1, 2]]), np.array([[3, 4]]), np.array([[5, 6]])))))


BROKEN = {
    "svhn wrong .mat key": ("svhn", lambda r: _svhn(r, keys=("images", "y")), "needs ['X', 'y']"),
    "flowers102 wrong .mat key": ("flowers102", lambda r: _flowers102(r, ("trnid", "valid", "test")), "tstid"),
    "truncated .npz": ("timit80", lambda r: _timit(r, truncate=True), "not a readable .npz"),
    "npz without y_test": ("timit80", lambda r: _timit(r, keys=("x_train", "y_train", "x_test", "labels")), "y_test"),
    "timit with 1844-dim features": ("timit80", lambda r: _timit(r, dims=1844), "80 of 1845"),
    "timit with 79 classes": ("timit80", lambda r: _timit(r, classes=79), "79 classes of 1845-dim"),
    "cifar10 without a batch": ("cifar10", lambda r: (fake_cifar(r), (r / "cifar-10-batches-py" / "data_batch_3").unlink()),
                                "data_batch_3"),
    "mnist without test labels": ("mnist", lambda r: (fake_mnist(r), (r / "MNIST/raw/t10k-labels-idx1-ubyte").unlink()),
                                  "t10k-labels"),
    "class folder with too few images": ("scene67", lambda r: write_real_shape(
        r, "scene67", counts={**{f"s{i}": 100 for i in range(66)}, "corridor": 80}), "corridor 80"),
    "flowers17 train/test disagree": ("flowers17", lambda r: (write_class_tree(r / "flowers17" / "train", {"a": 2, "b": 2}),
                                                              write_class_tree(r / "flowers17" / "test", {"a": 2})),
                                      "different classes"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_layouts_are_incomplete_in_one_line(tmp_path, capsys, case):
    name, build, words = BROKEN[case]
    build(tmp_path)
    s = data.survey(name, tmp_path)
    assert s.state == "incomplete" and not s.usable and words in s.detail and "\n" not in s.detail
    assert cli.main(["status", name, "--root", str(tmp_path)]) == 1
    assert f"{name}: {s.detail}" in capsys.readouterr().out
    assert cli.main(["prepare", name, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]
    assert not list((tmp_path / "cache").glob("*"))  # refused before anything was done


def test_unreadable_image_stops_prepare_and_writes_no_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(data.CLASS_PROTOCOLS, "lfw", (2, 2, 1))
    write_class_tree(tmp_path / "lfw", {"ann": 3, "bob": 3}, distinct_png)
    (tmp_path / "lfw" / "bob" / "image_0002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert data.survey("lfw", tmp_path).state == "present"  # status lists files; only decoding finds this
    assert cli.main(["prepare", "lfw", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot decode" in err[0] and "bob/image_0002.jpg" in err[0]
    assert not list((tmp_path / "cache").glob("*")) and data.cache_state("lfw", tmp_path) == "none"


# ---------------------------------------------------------------- status

def test_status_exit_codes_and_table(tmp_path, capsys):
    assert cli.main(["status", "digits", "--root", str(tmp_path)]) == 0
    assert cli.main(["status", "mnist", "digits", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^mnist\s+missing\s+none\s+—\s+\S*MNIST/raw\s+—\s+standard 60k/10k", out, re.M)
    assert "asym-data download mnist" in out and "1 of 2 datasets usable" in out
    fake_mnist(tmp_path)
    _timit(tmp_path)
    assert cli.main(["status", "mnist", "digits", "timit80", "--root", str(tmp_path)]) == 0
    mine = tmp_path / "mine"
    for split in ("train", "test"):
        write_class_tree(mine / split, {"a": 2, "b": 2}, tiny_jpeg())
    assert cli.main(["status", "mnist", f"folder:{mine}", f"npz:{tmp_path / 'none.npz'}", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    ident = data.identity(f"folder:{mine}").short
    assert re.search(rf"^folder:{re.escape(str(mine))}\s+present\s+none\s+{ident}\s+\S+\s+2 classes, 4/4 images",
                     out, re.M) and re.search(r"^npz:\S+\s+missing", out, re.M)
    # every dataset of the registry by default
    assert cli.main(["status", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert all(re.search(rf"^{n}\s", out, re.M) for n in data.DATASETS)


def test_status_bad_input_is_one_line(tmp_path, capsys):
    assert cli.main(["status", "imagenet", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown dataset 'imagenet'")
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_a_cache_never_makes_a_dataset_usable_without_its_files(tmp_path, capsys):
    """A cache answers only for the files it was built from: with those files gone (or another root's cache left
    in the cache folder), the dataset is not usable, and no run trains on the cached tensors.
    (The old key left data.root out: a cache in ~/.cache/asym made a built-in dataset "usable" with no files.)"""
    fake_mnist(tmp_path / "a")
    data.load("mnist", tmp_path / "a")
    assert data.cache_state("mnist", tmp_path / "a") == "current"
    s = data.survey("mnist", tmp_path / "b")  # another root: nothing there, the cache folder holds a's tensors
    assert not s.usable and s.state == "missing" and s.cache == "stale"
    with pytest.raises(data.DatasetMissing, match="not found"):
        data.check_available("mnist", tmp_path / "b")
    assert cli.main(["status", "mnist", "--root", str(tmp_path / "b")]) == 1
    assert "0 of 1 datasets usable" in capsys.readouterr().out
    for f in (tmp_path / "a" / "MNIST" / "raw").iterdir():  # its own files gone
        f.unlink()
    s = data.survey("mnist", tmp_path / "a")
    assert s.state == "missing" and s.cache == "stale" and not s.usable
    with pytest.raises(data.DatasetMissing):
        data.load("mnist", tmp_path / "a")
    assert data.cache_state("mnist", tmp_path / "a", seed=1) == "stale"  # another seed's split is not this one


# ---------------------------------------------------------------- prepare

def test_prepare_twice_is_a_noop_the_second_time(tmp_path, capsys, monkeypatch):
    fake_mnist(tmp_path)
    monkeypatch.setitem(data.CLASS_PROTOCOLS, "lfw", (3, 4, 2))
    write_class_tree(tmp_path / "lfw", {"ann": 5, "bob": 7, "cy": 6, "dee": 4}, distinct_png)
    args = ["prepare", "mnist", "lfw", "digits", "--root", str(tmp_path)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "lfw: prepared" in out and "3 classes, train 12, test 5" in out  # 4 each; 1 + 2 + 2 left for test
    assert "mnist: prepared" in out and "10 classes, train 30, test 10" in out
    caches = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.pt")}
    assert len(caches) == 3

    def fail(*a, **k):
        raise AssertionError("decoded again")
    monkeypatch.setattr(readers, "_decode", fail)
    monkeypatch.setattr(readers, "mnist", fail)
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("already prepared") == 3 and "3 classes, train 12, test 5" in out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.pt")} == caches


def test_prepare_refuses_before_doing_anything(tmp_path, capsys):
    fake_mnist(tmp_path)
    assert cli.main(["prepare", "mnist", "cifar10", "timit80", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'cifar10' not found" in err[0] and "'timit80' not found" in err[0]
    assert not (tmp_path / "cache").exists()  # mnist was usable, but nothing was prepared
    assert cli.main(["prepare", "mnist", "--jobs", "0", "--root", str(tmp_path)]) == 2


def test_cache_is_written_atomically(tmp_path, monkeypatch):
    """The cache appears by rename: while torch.save writes, the cache path holds nothing; a failed write leaves nothing."""
    seen = []
    real_save = torch.save
    target = data.cache_path("digits", cache=tmp_path)

    def save(obj, f):
        seen.append((Path(f).parent == target.parent, Path(f) != target, target.exists()))
        real_save(obj, f)
    monkeypatch.setattr(torch, "save", save)
    data.load("digits", cache=tmp_path)
    assert seen == [(True, True, False)] and data.cache_state("digits", cache=tmp_path) == "current"

    target.unlink()
    target.with_suffix(".json").unlink()  # what prepare recorded beside it

    def broken(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a file")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        data.load("digits", cache=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_cache_is_rebuilt(tmp_path):
    d = data.load("digits", cache=tmp_path)
    path = data.cache_path("digits", cache=tmp_path)
    path.write_bytes(path.read_bytes()[:1000])  # e.g. copied by hand and cut short
    assert data.cache_state("digits", cache=tmp_path) == "damaged"
    assert torch.equal(data.load("digits", cache=tmp_path).x_train, d.x_train)
    assert data.cache_state("digits", cache=tmp_path) == "current"


@pytest.mark.slow
def test_prepare_in_parallel_while_runs_read_the_cache(tmp_path):
    """``asym-data prepare --jobs 2`` (two processes) while another process keeps reading the cache path:
    the reader sees no file or a whole one, never a partial one."""
    fake_mnist(tmp_path, n_train=2000, n_test=500)
    write_class_tree(tmp_path / "mine" / "train", {"a": 3, "b": 3}, tiny_jpeg())
    write_class_tree(tmp_path / "mine" / "test", {"a": 2, "b": 2}, tiny_jpeg())
    env = {**os.environ, "ASYM_CACHE": str(tmp_path / "cache")}
    reader = subprocess.Popen([sys.executable, "-c", f"""
import sys, time, torch
from asym import data
path = data.cache_path("mnist", {str(tmp_path)!r})
whole = 0
t0 = time.time()
while time.time() - t0 < 120:
    if path.exists():
        d = torch.load(path, weights_only=True)  # raises on a partial file
        whole += 1
        if whole > 3: break
print(whole)
"""], env=env, stdout=subprocess.PIPE, text=True)
    res = subprocess.run([str(Path(sys.executable).parent / "asym-data"), "prepare", "mnist", f"folder:{tmp_path / 'mine'}", "--jobs", "2",
                          "--root", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "mnist: prepared" in res.stdout and "mine: prepared" in res.stdout and "2 classes, train 6, test 4" in res.stdout
    out, _ = reader.communicate(timeout=150)
    assert reader.returncode == 0 and int(out) > 3
    left = list((tmp_path / "cache").iterdir())
    assert not [p for p in left if p.suffix not in (".pt", ".json")]  # no temporary left behind
    assert {p.stem for p in left if p.suffix == ".json"} == {p.stem for p in left if p.suffix == ".pt"}  # + what it recorded


# ---------------------------------------------------------------- download, against a local server

class Server:
    """HTTP on 127.0.0.1 serving ``files`` (path → bytes) with Range support; ``cut[path] = n`` sends n bytes
    of the next response then closes the connection (its Content-Length still announces the whole file)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                n = server.cut.pop(self.path, None)
                self.wfile.write(body[start:] if n is None else body[start:start + n])
                if n is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.url + path


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def tar_of(folder: Path, arcname: str, mode="w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        t.add(folder, arcname=arcname)
    return buf.getvalue()


@pytest.fixture
def cifar_archive(tmp_path, server, monkeypatch):
    """cifar-10-python.tar.gz as the Toronto site serves it; torchvision's CIFAR10.url pointed at the local server."""
    import torchvision.datasets as tvd
    fake_cifar(tmp_path / "src")
    body = tar_of(tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py")
    monkeypatch.setattr(tvd.CIFAR10, "url", server.serve("/kriz/cifar-10-python.tar.gz", body))
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", md5(body))
    return body


def test_download_cifar10_installs_what_the_reader_reads(tmp_path, server, cifar_archive, no_md5, capsys):
    root = tmp_path / "data"
    assert cli.main(["download", "cifar10", "--root", str(root)]) == 0
    assert "cifar10: present" in capsys.readouterr().out
    assert data.survey("cifar10", root).state == "present" and not (root / remote.STAGING).exists()
    assert data.load("cifar10", root).x_train.shape == (100, 3, 32, 32)
    n = len(server.requests)
    assert cli.main(["download", "cifar10", "--root", str(root)]) == 0 and len(server.requests) == n  # nothing refetched
    # asym-train's data.download=true goes through the same fetch
    assert data.load("cifar10", tmp_path / "other", download=True, cache=tmp_path / "c2").x_test.shape == (20, 3, 32, 32)
    assert len(server.requests) == n + 1 and data.survey("cifar10", tmp_path / "other").state == "present"


def test_download_checksum_mismatch_leaves_nothing(tmp_path, server, cifar_archive, monkeypatch, capsys):
    import torchvision.datasets as tvd
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", "0" * 32)
    root = tmp_path / "data"
    assert cli.main(["download", "cifar10", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and md5(cifar_archive) in err
    assert not (root / "cifar-10-batches-py").exists() and not list((root / remote.STAGING).iterdir())
    assert data.survey("cifar10", root).state == "missing"
    with pytest.raises(data.DatasetMissing, match="download failed: .*checksum mismatch"):  # asym-train data.download=true
        data.load("cifar10", root, download=True)


def test_download_resumes_an_interrupted_transfer(tmp_path, server, cifar_archive, no_md5, capsys):
    root = tmp_path / "data"
    server.cut["/kriz/cifar-10-python.tar.gz"] = half = len(cifar_archive) // 2
    assert cli.main(["download", "cifar10", "--root", str(root)]) == 1
    assert "interrupted" in capsys.readouterr().err
    part = root / remote.STAGING / "cifar-10-python.tar.gz.part"
    assert part.stat().st_size == half and not (root / "cifar-10-batches-py").exists()
    assert data.survey("cifar10", root).state == "missing"  # half a file is never present
    assert cli.main(["download", "cifar10", "--root", str(root)]) == 0
    assert server.requests[-1] == ("/kriz/cifar-10-python.tar.gz", f"bytes={half}-")
    assert data.survey("cifar10", root).state == "present" and not part.exists()


def test_download_mnist_tries_the_next_mirror(tmp_path, server, monkeypatch):
    import torchvision.datasets as tvd
    src = tmp_path / "src"
    fake_mnist(src)
    resources = []
    for f in sorted((src / "MNIST" / "raw").iterdir()):
        body = gzip.compress(f.read_bytes())
        server.serve(f"/good/{f.name}.gz", body)
        resources.append((f"{f.name}.gz", md5(body)))
    monkeypatch.setattr(tvd.MNIST, "mirrors", [server.url + "/dead/", server.url + "/good/"])
    monkeypatch.setattr(tvd.MNIST, "resources", resources)
    root = tmp_path / "data"
    assert cli.main(["download", "mnist", "--root", str(root)]) == 0
    assert {p for p, _ in server.requests if p.startswith("/dead/")}  # the first mirror was asked first
    assert torch.equal(data.load("mnist", root).y_train, data.load("mnist", src, cache=tmp_path / "c2").y_train)


def test_download_caltech101_nested_archive(tmp_path, server, monkeypatch, capsys):
    """caltech-101.zip as CaltechDATA serves it: caltech-101/101_ObjectCategories.tar.gz (+ Annotations.tar) inside."""
    src = tmp_path / "src"
    write_class_tree(src / "101_ObjectCategories", {"BACKGROUND_Google": 12, "inline_skate": 11, "okapi": 14})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("caltech-101/101_ObjectCategories.tar.gz", tar_of(src / "101_ObjectCategories", "101_ObjectCategories"))
        z.writestr("caltech-101/Annotations.tar", b"")
        z.writestr("caltech-101/show_annotation.m", b"%")
    body = buf.getvalue()
    monkeypatch.setattr(remote, "CALTECH101", (server.serve("/records/caltech-101.zip", body), "caltech-101.zip", md5(body)))
    monkeypatch.setitem(data.CLASS_PROTOCOLS, "caltech101", (3, 10, 10))
    root = tmp_path / "data"
    assert cli.main(["download", "caltech101", "--root", str(root)]) == 0
    s = data.survey("caltech101", root)
    assert s.state == "present" and s.path == root / "caltech101" / "101_ObjectCategories"
    assert sorted(os.listdir(root)) == ["caltech101"] and os.listdir(root / "caltech101") == ["101_ObjectCategories"]


def test_download_flowers17_with_its_split_file(tmp_path, server, monkeypatch):
    """17flowers.tgz (jpg/image_0001.jpg … image_1360.jpg, 80 per class) and datasplits.mat, as Oxford VGG serves them."""
    from scipy.io import savemat
    src = tmp_path / "src" / "jpg"
    src.mkdir(parents=True)
    jpeg = tiny_jpeg()
    for i in range(1, 17 * 80 + 1):
        (src / f"image_{i:04d}.jpg").write_bytes(jpeg)
    picks = lambda k: np.array([[c * 80 + k for c in range(17)]])  # k-th image of every class
    savemat(tmp_path / "src" / "datasplits.mat", {"trn1": picks(1), "val1": picks(2), "tst1": picks(3),
                                                   "trn2": picks(4), "val2": picks(5), "tst2": picks(6)})
    monkeypatch.setattr(remote, "FLOWERS17_URL", server.url + "/vgg/flowers/17/")
    server.serve("/vgg/flowers/17/17flowers.tgz", tar_of(src, "jpg"))
    server.serve("/vgg/flowers/17/datasplits.mat", (tmp_path / "src" / "datasplits.mat").read_bytes())
    root = tmp_path / "data"
    assert cli.main(["download", "flowers17", "--root", str(root)]) == 0
    d = data.load("flowers17", root)
    assert d.num_classes == 17 and len(d.y_train) == 34 and d.y_test.tolist() == list(range(17))


def test_download_says_what_it_cannot_fetch(tmp_path, capsys):
    assert cli.main(["download", "timit80", "pubfig83", "--root", str(tmp_path / "data")]) == 1
    out = capsys.readouterr().out
    assert "timit80: cannot fetch — licence" in out and "pubfig83: cannot fetch — no stable URL" in out
    assert not (tmp_path / "data").exists()
    assert cli.main(["download", "mnist", "nope", "--root", str(tmp_path / "data")]) == 2  # bad input: nothing done
    assert capsys.readouterr().err.startswith("error: unknown dataset 'nope'") and not (tmp_path / "data").exists()


def test_remotes_come_from_torchvision_public_attributes():
    """The URLs and checksums of the torchvision-backed datasets are torchvision's own."""
    import torchvision.datasets as tvd
    assert remote.remotes("cifar100")[0].urls == (tvd.CIFAR100.url,) and remote.remotes("cifar100")[0].md5 == tvd.CIFAR100.tgz_md5
    assert [r.md5 for r in remote.remotes("svhn")] == [tvd.SVHN.split_list[s][2] for s in ("train", "test")]
    assert remote.remotes("lfw")[0].target == "lfw-py/lfw" and "lfw-py/lfw" in data.info("lfw").paths
    for name in data.DATASETS:
        meta = data.info(name)
        if meta.fetch and meta.paths:
            targets = [r.target for r in remote.remotes(name)]
            assert any(t.startswith(p) or p.startswith(t) for t in targets for p in meta.paths), name
        elif meta.paths:
            assert meta.manual, f"{name} is neither downloadable nor says why"
            with pytest.raises(KeyError):
                remote.remotes(name)


# ---------------------------------------------------------------- the sweep preflight, docs/datasets.md

def test_preflight_names_every_missing_or_incomplete_dataset(tmp_path):
    write_real_shape(tmp_path, "lfw", counts={f"p{i}": 11 for i in range(10)})
    wanted = [("digits", tmp_path, False), ("mnist", tmp_path, False), ("lfw", tmp_path, False),
              ("mnist", tmp_path, False), ("cifar10", tmp_path, True)]  # download=true is not checked
    with pytest.raises(data.DatasetMissing) as e:
        data.check_all(wanted)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("2 datasets of the sweep cannot be used")
    assert "'mnist' not found" in msg and "'lfw'" in msg and "needs 80" in msg and "cifar10" not in msg
    assert f"asym-data status --root {tmp_path}" in msg
    data.check_all([("digits", tmp_path, False)])
    fake_mnist(tmp_path)
    data.load("mnist", tmp_path, seed=3)
    data.check_all([("mnist", tmp_path, False, 3)])
    for f in (tmp_path / "MNIST" / "raw").iterdir():
        f.unlink()
    with pytest.raises(data.DatasetMissing, match="'mnist' not found"):  # its cache does not stand in for its files
        data.check_all([("mnist", tmp_path, False, 3)])


def test_docs_dataset_table_is_the_registry():
    page = (REPO / "docs" / "datasets.md").read_text()
    table = re.search(r"<!-- datasets:begin.*?-->\n(.*?)<!-- datasets:end -->", page, re.S)
    assert table, "docs/datasets.md lacks the generated dataset table markers"
    assert table.group(1) == data.registry_table(), "docs/datasets.md's table differs from asym-data table: regenerate it"
    readme = (REPO / "README.md").read_text()
    run = readme.split("## Run the paper", 1)[1]
    first = [l for l in run.splitlines() if l.startswith("asym-")][:3]
    assert [l.split()[:2] for l in first] == [["asym-data", "status"], ["asym-data", "download"], ["asym-data", "prepare"]]


@pytest.mark.slow
def test_console_script(tmp_path):
    exe = str(Path(sys.executable).parent / "asym-data")
    res = subprocess.run([exe, "status", "digits", "mnist", "--root", str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "ASYM_CACHE": str(tmp_path / "c")}, timeout=120)
    assert res.returncode == 1 and "mnist" in res.stdout
    res = subprocess.run([exe, "table"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout == data.registry_table()


def test_the_layout_checks_name_the_files_torchvisions_readers_read():
    """``sources.TORCHVISION_FILES`` spells out torchvision's file lists so ``asym-data status`` needs no torch;
    they must stay the ones torchvision's dataset classes actually read."""
    import torchvision.datasets as tvd
    theirs = {
        "mnist": tuple(Path(f).name.removesuffix(".gz") for f, _ in tvd.MNIST.resources),
        "cifar10": tuple(f for f, _ in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list) + (tvd.CIFAR10.meta["filename"],),
        "cifar100": tuple(f for f, _ in tvd.CIFAR100.train_list + tvd.CIFAR100.test_list) + (tvd.CIFAR100.meta["filename"],),
        "stl10": tuple(f for f, _ in tvd.STL10.train_list + tvd.STL10.test_list),
        "svhn": tuple(tvd.SVHN.split_list[s][1] for s in ("train", "test")),
    }
    assert sources.TORCHVISION_FILES == theirs
