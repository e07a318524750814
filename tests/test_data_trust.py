"""Data you can trust (protocol decisions 15–18, docs/protocol.md): a dataset is identified by its content, every
folder is scanned by one policy, every file is decoded or refused by name before training, and no image sits on
both sides of a split. Each test builds the files in the shape real disks hold them (``tests/layouts.py``).
"""
from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from asym import data, tracking
from asym.data import cli, images, readers, scan, sources
from layouts import (LITTER, appledouble, bomb_png, distinct_png, messy_classes, odd_pixel_files, truncated_jpeg,
                     write_class_tree)
from test_data import fake_cifar, fake_mnist, no_md5, write_idx  # noqa: F401 (a fixture)


def feat_npz(path: Path, rows: int = 10, seed: int = 0, dims: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=rng.normal(size=(rows, dims)), y_train=np.arange(rows) % 3,
             x_test=rng.normal(size=(4, dims)), y_test=np.arange(4) % 3)
    return path


def rows_in(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many rows of ``a`` equal some row of ``b`` exactly (brute force: the check does not trust digests)."""
    a, b = a.flatten(1), b.flatten(1)
    return sum(bool((b == row).all(1).any()) for row in a)


# ------------------------------------------------------------------------- 1. identity by content

def test_a_rewritten_npz_is_decoded_again_and_said_so(tmp_path, caplog):
    """The stale npz: rewrite feat.npz with more rows and training sees the new rows (the old cache, keyed by
    the name, kept serving the old tensors while status reported the new count)."""
    f = feat_npz(tmp_path / "feat.npz", rows=10)
    name = f"npz:{f}"
    first = data.load(name)
    assert first.x_train.shape == (10, 7)
    feat_npz(f, rows=16, seed=1)
    with caplog.at_level(logging.INFO, logger="asym.data"):
        d = data.load(name)
    assert d.x_train.shape == (16, 7)
    s = data.survey(name)
    assert s.detail == "16/4 samples" and s.cache == "current" and d.record["identity"] == s.identity.digest
    old = first.record["identity"]
    assert old != s.identity.digest
    changed = [r.getMessage() for r in caplog.records if "changed since its cache was built" in r.getMessage()]
    assert len(changed) == 1 and old[:8] in changed[0] and s.identity.short in changed[0]
    feat_npz(f, rows=12, seed=2)
    assert data.survey(name).cache == "stale"  # entries only for files that are no longer there


def test_npz_identity_is_its_content_and_a_folders_its_manifest(tmp_path):
    a = feat_npz(tmp_path / "a" / "feat.npz")
    b = tmp_path / "b" / "copy.npz"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    os.utime(b, ns=(1, 1))  # another path and mtime, the same bytes
    assert data.identity(f"npz:{a}").digest == data.identity(f"npz:{b}").digest
    feat_npz(b, seed=5)
    assert data.identity(f"npz:{a}").digest != data.identity(f"npz:{b}").digest
    tree = tmp_path / "mine"
    for split in ("train", "test"):
        write_class_tree(tree / split, {"x": 2, "y": 2}, distinct_png)
    ident = data.identity(f"folder:{tree}")
    assert (ident.files, ident.bytes) == (8, sum(p.stat().st_size for p in tree.rglob("*.jpg")))
    img = tree / "train" / "x" / "image_0001.jpg"
    st = img.stat()
    img.write_bytes(distinct_png(99))
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime, whatever the clock's tick
    assert data.identity(f"folder:{tree}").digest != ident.digest  # another size or mtime: another identity
    (tree / "train" / "x" / ".DS_Store").write_bytes(LITTER[".DS_Store"])
    assert data.identity(f"folder:{tree}").files == 8  # litter is not part of the data


def test_identity_reads_small_metadata_files_and_only_stats_images(tmp_path, no_md5):
    """Registry datasets: the manifest is stat-based (a stat per image), small non-image files are also
    hashed: changing a label file's bytes with its size and mtime kept still changes the identity."""
    fake_cifar(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    before = data.identity("cifar10", tmp_path)
    st = meta.stat()
    body = bytearray(meta.read_bytes())
    body[-3] ^= 1
    meta.write_bytes(bytes(body))
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data.identity("cifar10", tmp_path).digest != before.digest
    tree = tmp_path / "lfw"
    write_class_tree(tree, {"a": 3}, distinct_png)
    opened = []
    real = open

    def spy(path, *a, **k):
        opened.append(str(path))
        return real(path, *a, **k)
    import builtins
    builtins.open = spy
    try:
        data.identity("lfw", tmp_path)
    finally:
        builtins.open = real
    assert not [p for p in opened if p.endswith(".jpg")]


def test_user_data_identity_enters_the_config_hash_and_the_papers_hashes_stay(tmp_path, monkeypatch):
    """The same ``npz:feat.npz`` in two projects (two working directories, other contents) is two runs; the
    registry's datasets keep the hashes they had (their key gained nothing)."""
    import hashlib
    import json
    from asym.protocol import Protocol, identity
    from dataclasses import asdict
    proto = asdict(Protocol())
    run = {"model": "SGD", "dataset": "npz:feat.npz", "lr_mult": 1.0, "freeze": "none", "procedure": "standard",
           "seed": 0}
    feat_npz(tmp_path / "a" / "feat.npz", seed=1)
    feat_npz(tmp_path / "b" / "feat.npz", seed=2)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "feat.npz").write_bytes((tmp_path / "a" / "feat.npz").read_bytes())
    hashes = {}
    for d in "abc":
        monkeypatch.chdir(tmp_path / d)
        hashes[d] = tracking.config_hash(run, proto)
    assert hashes["a"] != hashes["b"] and hashes["a"] == hashes["c"]  # by content
    mnist = {**run, "dataset": "mnist"}
    old_key = {**mnist, "lr_mult": 1.0, "protocol": dict(sorted(identity(proto).items()))}  # the key before identities
    assert tracking.config_hash(mnist, proto) == hashlib.sha256(json.dumps(old_key, sort_keys=True).encode()).hexdigest()[:16]
    assert tracking.config_hash({**mnist, tracking.DATASET_ID_TAG: "f" * 16}, proto) == tracking.config_hash(mnist, proto)


def test_a_run_records_its_datas_identity_on_mlflow_and_in_result_json(tmp_path):
    f = feat_npz(tmp_path / "feat.npz")
    d = data.load(f"npz:{f}")
    inp = tracking.dataset_input(f"npz:{f}", d, str(tmp_path))
    tags = {t.key: t.value for t in inp.tags}
    assert tags["identity"] == data.identity(f"npz:{f}").digest and tags["test_in_train"] == "0"
    assert inp.dataset.digest == tracking.dataset_digest(d) and len(inp.dataset.digest) == 8
    held = d.hold_out(0.25)
    assert tracking.dataset_digest(held) != tracking.dataset_digest(d)
    from asym.protocol import Protocol
    from asym.train import RunSpec, make_result
    result = make_result(RunSpec("SGD", f"npz:{f}", 1.0), Protocol(), [], "finished", {}, dataset=d.record)
    assert result["dataset"]["identity"] == tags["identity"]


# ------------------------------------------------------------------------- 2. distinct datasets stay distinct

def _train(tmp_path: Path, dataset: str, cwd: Path):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from asym import cli as train_cli
    GlobalHydra.instance().clear()
    with initialize_config_module("asym.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=SGD", f"dataset={dataset}", "train=demo", "train.epochs=1",
                                            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"output_root={tmp_path}/runs"])
    GlobalHydra.instance().clear()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return train_cli.run_one(cfg)
    finally:
        os.chdir(here)


def test_two_feat_npz_are_two_rows_two_run_names_two_hashes(tmp_path):
    """``v1/feat.npz`` and ``v2/feat.npz`` (both "feat"), then ``npz:feat.npz`` rewritten between two runs: every
    one its own config hash, MLflow run name and table row (they all used to be one row, "feat")."""
    from asym.analysis.tables import load_runs
    from test_hydra_sweeps import tiny_npz
    tiny_npz(tmp_path / "v1" / "feat.npz", seed=0)
    tiny_npz(tmp_path / "v2" / "feat.npz", seed=1)
    for v in ("v1", "v2"):
        assert _train(tmp_path, f"npz:{v}/feat.npz", tmp_path)[0]["status"] == "finished"
    assert _train(tmp_path, "npz:v1/feat.npz", tmp_path) == []  # the same file again: already finished
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = load_runs(uri)
    assert sorted(runs["row"]) == ["v1/feat", "v2/feat"] and runs["config_hash"].nunique() == 2
    c = tracking.client(uri)
    names = [r.info.run_name for r in c.search_runs([c.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id])]
    assert len(set(names)) == 2 and "SGD ×1 · v2/feat" in names
    tiny_npz(tmp_path / "v1" / "feat.npz", seed=7)  # the same path, new content: a new run, a third row
    assert _train(tmp_path, "npz:v1/feat.npz", tmp_path)[0]["status"] == "finished"
    runs = load_runs(uri)
    assert runs["config_hash"].nunique() == 3 and runs["row"].nunique() == 3
    assert {r for r in runs["row"] if r.startswith("v1/feat (")} and "v2/feat" in set(runs["row"])


# ------------------------------------------------------------------------- 3. one scan policy

def _vgg_jpg(folder: Path, n: int, digits: int):
    (folder / "jpg").mkdir(parents=True)
    for i in range(1, n + 1):
        (folder / "jpg" / f"image_{i:0{digits}d}.jpg").write_bytes(distinct_png(500 + i))
    (folder / "jpg" / f"._image_{1:0{digits}d}.jpg").write_bytes(appledouble())
    (folder / "jpg" / ".DS_Store").write_bytes(LITTER[".DS_Store"])
    return 2


def _messy(kind: str, root: Path, monkeypatch) -> tuple[str, int, int, int]:
    """A dataset of reader ``kind`` with the litter of ``layouts.messy_classes``: (name, train, test, skipped)."""
    counts = {"ann": 6, "bob": 5, "cy": 5}
    if kind in ("caltech101", "caltech256", "class_folders"):
        name = {"caltech101": "caltech101", "caltech256": "caltech256_101", "class_folders": "lfw"}[kind]
        where = data.sources.locate(data.info(name), root)
        found = messy_classes(where, counts, root / "elsewhere")
        monkeypatch.setitem(data.CLASS_PROTOCOLS, name, (3, 4, 10))
        return name, 12, sum(found["images"].values()) - 12, found["skipped"]
    if kind in ("split_folders", "user_folder"):
        name = "icub" if kind == "split_folders" else f"folder:{root / 'mine'}"
        where = data.sources.locate(data.info(name), root)
        tr = messy_classes(where / "train", counts, root / "elsewhere-train")
        te = messy_classes(where / "test", {c: 2 for c in counts}, root / "elsewhere-test", start=1000)
        if kind == "split_folders":
            monkeypatch.setitem(data.DATASETS, "icub", replace(data.DATASETS["icub"], num_classes=3))
        return name, sum(tr["images"].values()), sum(te["images"].values()), tr["skipped"] + te["skipped"]
    if kind == "flowers102":
        from scipy.io import savemat
        folder = root / "flowers-102"
        skipped = _vgg_jpg(folder, 6, 5)
        savemat(folder / "imagelabels.mat", {"labels": np.array([[1, 2, 1, 2, 1, 2]])})
        savemat(folder / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3, 4]]),
                                       "tstid": np.array([[5, 6]])})
        return "flowers102", 4, 2, skipped
    if kind == "flowers17":
        from scipy.io import savemat
        folder = root / "flowers17"
        skipped = _vgg_jpg(folder, 2 * 80, 4)
        savemat(folder / "datasplits.mat", {"trn1": np.array([[1, 81]]), "val1": np.array([[2, 82]]),
                                            "tst1": np.array([[3, 83]])})
        monkeypatch.setitem(data.DATASETS, "flowers17", replace(data.DATASETS["flowers17"], num_classes=2))
        return "flowers17", 4, 2, skipped
    raise AssertionError(kind)


FOLDER_READERS = ["caltech101", "caltech256", "class_folders", "split_folders", "user_folder", "flowers102",
                  "flowers17"]


@pytest.mark.parametrize("kind", FOLDER_READERS)
def test_every_folder_reader_scans_by_one_policy(tmp_path, monkeypatch, capsys, kind):
    """Litter (AppleDouble ._ twins with their real header, .ipynb_checkpoints copies, .DS_Store, Thumbs.db,
    desktop.ini, __MACOSX/) is skipped and counted; a symlinked sub-folder's images count once; a symlink loop
    ends; ``.PNG`` is an image. Every reader then decodes what the scan kept (the AppleDouble twins used to end
    prepare with an undecodable file, the linked images to be lost without a word)."""
    name, n_train, n_test, skipped = _messy(kind, tmp_path, monkeypatch)
    d = data.load(name, tmp_path)
    assert (len(d.y_train), len(d.y_test)) == (n_train, n_test)
    s = data.survey(name, tmp_path)
    assert s.usable, s.detail
    assert s.skipped.startswith(f"{skipped} skipped: ") and (kind.startswith("flowers") or "._* (AppleDouble)" in s.skipped)
    meta = data.info(name)
    kept = sources.layout(meta, tmp_path).files
    assert not [f for f in kept if any(part.startswith(("._", ".")) or part in ("__MACOSX", "Thumbs.db", "desktop.ini")
                                       for part in Path(f).parts)]
    if kind not in ("flowers102", "flowers17"):
        assert sum("/more/linked_" in f for f in kept) == (4 if kind in ("split_folders", "user_folder") else 2)
        assert not [f for f in kept if "/loop/" in f]
    assert cli.main(["status", name, "--root", str(tmp_path)]) == 0
    assert f"{name}: scan {skipped} skipped" in capsys.readouterr().out


def test_images_in_a_linked_subfolder_are_trained_on(tmp_path, monkeypatch):
    """A class folder holding a symlink to a folder of more images: they are part of the class (they used to be
    lost without a word: the recursive scan did not follow directory links)."""
    monkeypatch.setitem(data.CLASS_PROTOCOLS, "lfw", (2, 3, 10))
    write_class_tree(tmp_path / "lfw", {"ann": 4, "bob": 4}, distinct_png)
    write_class_tree(tmp_path / "shared", {"ann_more": 3}, lambda k: distinct_png(900 + k))
    (tmp_path / "lfw" / "ann" / "more").symlink_to(tmp_path / "shared" / "ann_more", target_is_directory=True)
    d = data.load("lfw", tmp_path)
    assert torch.bincount(torch.cat([d.y_train, d.y_test])).tolist() == [4 + 3, 4]


def test_the_scan_follows_links_once_and_matches_extensions_without_case(tmp_path):
    tree = tmp_path / "t"
    write_class_tree(tree, {"a": 2, "b": 1}, distinct_png)
    (tree / "a" / "X.JPEG").write_bytes(distinct_png(50))
    (tree / "b" / "same_as_a").symlink_to(tree / "a", target_is_directory=True)  # a's images again, through a link
    os.link(tree / "a" / "image_0001.jpg", tree / "b" / "hardlinked.jpg")
    (tree / "b" / "deeper").mkdir()
    (tree / "b" / "deeper" / "up").symlink_to(tree, target_is_directory=True)  # loop through the top
    (tree / "b" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    classes, found = sources.scan_classes(tree)
    assert {c: [Path(f).name for f in v] for c, v in classes.items()} == {
        "a": ["X.JPEG", "image_0001.jpg", "image_0002.jpg"], "b": ["image_0001.jpg"]}
    assert found.skipped == {scan.FOLDER_TWICE: 2, scan.LINKED_TWICE: 1, scan.BROKEN: 1}


# ------------------------------------------------------------------------- 4. decode or refuse

ODD = odd_pixel_files()


@pytest.mark.parametrize("case", ODD)
def test_odd_pixel_formats_decode_to_the_right_8bit_rgb(tmp_path, case):
    """16-bit grey scaled (not clipped at 255), palette with and without a transparent colour, grey, grey+alpha,
    CMYK, RGBA (alpha on white), 1-bit, EXIF-rotated: the pixels every reader stores (119×119 uint8)."""
    body, suffix, expected = ODD[case]
    tree = tmp_path / "mine"
    for split in ("train", "test"):
        (tree / split / "c").mkdir(parents=True)
        (tree / split / "c" / f"img{suffix}").write_bytes(body)
    name = f"folder:{tree}"
    x = readers.user_folder(data.info(name), tmp_path, 0, None)[0]
    assert x.dtype == torch.uint8 and x.shape == (1, 3, 119, 119)
    img = x[0].permute(1, 2, 0)
    if expected[0] == "rows":
        assert img[:40].reshape(-1, 3).unique(dim=0).tolist() == [list(expected[1])]  # the top: the stored left
        assert img[-40:].reshape(-1, 3).unique(dim=0).tolist() == [list(expected[2])]
    else:
        assert img.reshape(-1, 3).unique(dim=0).tolist() == [list(expected)]


def test_sixteen_bit_is_scaled_over_its_whole_range():
    from PIL import Image
    values = np.array([[0, 1, 128, 129, 257, 32767, 32768, 65534, 65535]], np.uint16)
    got = images.to_rgb(Image.fromarray(values))[0, :, 0]
    assert got.tolist() == [round(v * 255 / 65535 + 1e-9) for v in values[0].tolist()] == [0, 0, 0, 1, 1, 127, 128, 255, 255]


UNDECODABLE = {
    "unknown format": (".jpg", lambda: b"this is a text file named like an image\n"),
    "AppleDouble data under an image name": (".png", appledouble),
    "truncated JPEG": (".jpg", truncated_jpeg),
    "decompression bomb (13,400² 1-bit PNG)": (".png", bomb_png),
}


@pytest.mark.parametrize("case", UNDECODABLE)
def test_an_undecodable_file_is_refused_in_one_line_naming_it(tmp_path, capsys, case):
    """prepare and status --check: one ``error:`` line naming the file, why, and how many others fail; exit 2;
    no cache. (A bomb raised DecompressionBombError, which is not an OSError, out of prepare as a traceback.)"""
    suffix, body = UNDECODABLE[case]
    tree = tmp_path / "mine"
    for split in ("train", "test"):
        write_class_tree(tree / split, {"a": 2, "b": 2}, lambda k, s=split: distinct_png(k + (100 if s == "test" else 0)))
    (tree / "train" / "b" / f"bad{suffix}").write_bytes(body())
    (tree / "test" / "a" / f"also_bad{suffix}").write_bytes(body())
    name = f"folder:{tree}"
    for args in (["prepare", name], ["status", "--check", name]):
        assert cli.main([*args, "--cache", str(tmp_path / "cache")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert f"bad{suffix}" in err[0] and "and 1 other file" in err[0] and "(of 10)" in err[0]
        assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_half_the_pixel_limit_is_refused_too(tmp_path, monkeypatch):
    """Pillow warns (DecompressionBombWarning) over MAX_IMAGE_PIXELS and raises at twice it: both refuse."""
    from PIL import Image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    f = tmp_path / "warn.png"
    f.write_bytes(distinct_png(1, size=(12, 10)))  # 120 pixels: over the limit, under twice it
    with pytest.raises(images.Undecodable, match="pixel limit"):
        images.read_rgb(f)


def test_asym_train_refuses_an_undecodable_dataset_before_anything_runs(tmp_path):
    """A single run: one line naming the file, no run directory, no MLflow run (it was a traceback)."""
    from asym.cli import UsageError
    tree = tmp_path / "mine"
    for split in ("train", "test"):
        write_class_tree(tree / split, {"a": 2, "b": 2}, lambda k, s=split: distinct_png(k + (100 if s == "test" else 0)))
    (tree / "train" / "a" / "cut.jpg").write_bytes(truncated_jpeg())
    with pytest.raises(UsageError, match=r"cannot decode \S*train/a/cut.jpg"):
        _train(tmp_path, f"folder:{tree}", tmp_path)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_the_sweep_preflight_decodes_every_file_once(tmp_path):
    tree = tmp_path / "mine"
    for split in ("train", "test"):
        write_class_tree(tree / split, {"a": 2, "b": 2}, lambda k, s=split: distinct_png(k + (100 if s == "test" else 0)))
    good = f"folder:{tree}"
    data.check_all([(good, tmp_path, False, 0)])
    assert data.cache_state(good) == "current"  # the preflight's decode is the prepare: runs read its cache
    bad = tmp_path / "bad"
    for split in ("train", "test"):
        write_class_tree(bad / split, {"a": 2}, lambda k, s=split: distinct_png(k + (100 if s == "test" else 0)))
    (bad / "test" / "a" / "x.png").write_bytes(bomb_png())
    with pytest.raises(data.DatasetIncomplete, match=r"cannot decode \S*test/a/x.png \(over Pillow's pixel limit"):
        data.check_all([(good, tmp_path, False, 0), (f"folder:{bad}", tmp_path, False, 0)])


def test_status_check_decodes_without_torch(tmp_path):
    """``asym-data status --check`` decodes every file with Pillow/numpy/scipy alone, in a fresh interpreter."""
    fake_mnist(tmp_path)
    write_class_tree(tmp_path / "lfw", {f"p{i}": 3 for i in range(3)}, distinct_png)
    code = ("import sys; from asym.data import cli, CLASS_PROTOCOLS; CLASS_PROTOCOLS['lfw'] = (2, 2, 1); "
            f"rc = cli.main(['status', '--check', 'mnist', 'lfw', '--root', {str(tmp_path)!r}]); "
            "sys.exit(10 + rc if 'torch' in sys.modules else rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "ASYM_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 of 2 datasets usable" in res.stdout and "(every file decoded)" in res.stdout
    assert not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------- 5. no image on both sides of a split

def test_a_product_split_never_puts_an_image_on_both_sides(tmp_path, monkeypatch, capsys):
    """The leakage count: an LFW-style tree where Jupyter left a checkpoint copy of every identity's images and a
    few images are filed twice (in one class, and across two). Before, about half the test images were
    byte-identical to a training image after prepare."""
    monkeypatch.setitem(data.CLASS_PROTOCOLS, "lfw", (3, 3, 3))
    tree = tmp_path / "lfw"
    write_class_tree(tree, {"ann": 6, "bob": 6, "cy": 6}, distinct_png)
    for c in ("ann", "bob", "cy"):
        ck = tree / c / ".ipynb_checkpoints"
        ck.mkdir()
        for f in sorted((tree / c).glob("*.jpg")):
            (ck / f"{f.stem}-checkpoint.jpg").write_bytes(f.read_bytes())
    (tree / "ann" / "again.jpg").write_bytes((tree / "ann" / "image_0002.jpg").read_bytes())   # in one class
    (tree / "bob" / "misfiled.jpg").write_bytes((tree / "ann" / "image_0003.jpg").read_bytes())  # across classes
    from PIL import Image  # the same pixels re-encoded: other bytes, the same decoded image
    Image.open(tree / "cy" / "image_0001.jpg").save(tree / "cy" / "resaved.png", compress_level=1)
    d = data.load("lfw", tmp_path)
    assert rows_in(d.x_test, d.x_train) == 0
    assert d.record["duplicates_collapsed"] == 3 and d.record["duplicates_across_classes"] == 1
    assert d.record["test_in_train"] == 0 and (len(d.y_train), len(d.y_test)) == (9, 9)  # 6 distinct images a class
    s = data.survey("lfw", tmp_path)
    assert s.notes == {"duplicates_collapsed": 3, "duplicates_across_classes": 1, "test_in_train": 0}
    assert cli.main(["status", "--check", "lfw", "--root", str(tmp_path), "--cache", str(tmp_path / "c2")]) == 0
    out = capsys.readouterr().out
    assert "lfw: 3 exact duplicate images collapsed before the split (1 across classes)" in out
    assert "18 in .ipynb_checkpoints/" not in out and "scan 18 skipped: 18 .ipynb_checkpoints/" in out


def _plant_mnist(root: Path):
    fake_mnist(root)
    raw = root / "MNIST" / "raw"
    tr = np.frombuffer((raw / "train-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(-1, 28, 28)
    te = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(-1, 28, 28).copy()
    te[[1, 4]] = tr[[7, 7]]
    write_idx(raw / "t10k-images-idx3-ubyte", te)


def _plant_cifar(root: Path):
    fake_cifar(root)
    folder = root / "cifar-10-batches-py"
    src = pickle.load(open(folder / "data_batch_3", "rb"))
    test = pickle.load(open(folder / "test_batch", "rb"))
    test["data"][[0, 5]] = src["data"][[2, 9]]
    pickle.dump(test, open(folder / "test_batch", "wb"))


def _plant_svhn(root: Path):
    from scipy.io import savemat
    rng = np.random.default_rng(3)
    xtr, xte = (rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8) for n in (12, 6))
    xte[..., 3] = xtr[..., 0]
    xte[..., 4] = xtr[..., 11]
    for split, x in (("train", xtr), ("test", xte)):
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": (np.arange(x.shape[-1]) % 10 + 1)[:, None]})


def _plant_stl10(root: Path, monkeypatch):
    import torchvision.datasets.stl10 as stl
    monkeypatch.setattr(stl, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    folder = root / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(4)
    xtr, xte = (rng.integers(0, 256, (n, 3, 96, 96)).astype(np.uint8) for n in (6, 4))
    xte[2] = xtr[5]
    xte[3] = xtr[1]
    for split, x in (("train", xtr), ("test", xte)):
        x.tofile(folder / f"{split}_X.bin")
        (np.arange(len(x)) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    xtr[:1].tofile(folder / "unlabeled_X.bin")


def _plant_folder(root: Path):
    tree = root / "mine"
    for split in ("train", "test"):
        write_class_tree(tree / split, {"a": 3, "b": 3}, lambda k, s=split: distinct_png(k + (100 if s == "test" else 0)))
    for i, (c, f) in enumerate((("a", "image_0001.jpg"), ("b", "image_0003.jpg"))):
        (tree / "test" / c / f"copy{i}.png").write_bytes((tree / "train" / c / f).read_bytes())
    return f"folder:{tree}"


def _plant_npz(root: Path):
    rng = np.random.default_rng(5)
    xtr, xte = rng.normal(size=(10, 7)), rng.normal(size=(5, 7))
    xte[[0, 2]] = xtr[[4, 4]]
    np.savez(root / "feat.npz", x_train=xtr, y_train=np.arange(10) % 3, x_test=xte, y_test=np.arange(5) % 3)
    return f"npz:{root / 'feat.npz'}"


SHIPPED = {"mnist": lambda r, m: (_plant_mnist(r), "mnist")[1], "cifar10": lambda r, m: (_plant_cifar(r), "cifar10")[1],
           "svhn": lambda r, m: (_plant_svhn(r), "svhn")[1], "stl10": lambda r, m: (_plant_stl10(r, m), "stl10")[1],
           "folder": lambda r, m: _plant_folder(r), "npz": lambda r, m: _plant_npz(r)}


@pytest.mark.parametrize("kind", SHIPPED)
def test_a_shipped_split_counts_its_test_images_also_in_training(tmp_path, monkeypatch, no_md5, capsys, kind):
    """Two test images that also occur in training: counted at prepare (recorded on the data and its MLflow
    dataset input), shown by status, counted alike by status --check without torch — never silently ignored."""
    name = SHIPPED[kind](tmp_path, monkeypatch)
    assert "test_in_train" not in data.survey(name, tmp_path).notes  # not decoded yet: nothing claimed
    d = data.load(name, tmp_path)
    assert d.record["test_in_train"] == 2
    assert {t.key: t.value for t in tracking.dataset_input(name, d, str(tmp_path)).tags}["test_in_train"] == "2"
    assert data.survey(name, tmp_path).notes == {"test_in_train": 2}
    assert cli.main(["status", name, "--root", str(tmp_path)]) == 0
    assert f"{name}: 2 test images also occur in training (the dataset's own split)" in capsys.readouterr().out
    assert data.survey(name, tmp_path, cache=tmp_path / "none", check=True).notes == {"test_in_train": 2}


def test_the_numpy_decoders_read_what_torchvision_reads(tmp_path, monkeypatch, no_md5):
    """``status --check`` decodes MNIST, CIFAR, SVHN, STL-10 with numpy alone: the same arrays torchvision's
    readers give ``prepare``."""
    _plant_mnist(tmp_path)
    _plant_cifar(tmp_path)
    fake_cifar(tmp_path, hundred=True)
    _plant_svhn(tmp_path)
    _plant_stl10(tmp_path, monkeypatch)
    for name in ("mnist", "cifar10", "cifar100", "svhn", "stl10"):
        meta = data.info(name)
        theirs = getattr(readers, meta.reader)(meta, tmp_path, 0, None)[:4]
        ours = sources.shipped_arrays(meta, tmp_path)
        for a, b in zip(theirs, ours):
            assert np.array_equal(a.numpy(), b), name


def test_a_cache_of_the_format_before_identities_is_stale_and_never_read(tmp_path, caplog):
    """``<stem>-<key>.pt`` (the key without the identity): listed as stale, decoded again once, said so."""
    f = feat_npz(tmp_path / "feat.npz")
    old = tmp_path / "cache" / f"npz-{str(f).replace('/', '_')}-0123456789ab.pt"
    old.parent.mkdir()
    torch.save({"arch": "timit", "num_classes": 3, "x_train": torch.zeros(99, 7), "y_train": torch.zeros(99),
                "x_test": torch.zeros(4, 7), "y_test": torch.zeros(4)}, old)
    assert data.cache_entries(f"npz:{f}") == {old: ""} and data.cache_state(f"npz:{f}") == "stale"
    with caplog.at_level(logging.INFO, logger="asym.data"):
        assert data.load(f"npz:{f}").x_train.shape == (10, 7)
    assert any("predates content identities" in r.getMessage() for r in caplog.records)


def test_a_per_class_dataset_is_decoded_whole_once_per_process_for_all_its_seeds(tmp_path, monkeypatch):
    """Collapsing duplicates decodes every image; a second seed (the preflight prepares each seed of a sweep)
    reuses those digests while the files are unchanged, and decodes again once one changes."""
    monkeypatch.setitem(data.CLASS_PROTOCOLS, "lfw", (2, 2, 1))
    write_class_tree(tmp_path / "lfw", {"a": 4, "b": 4, "c": 4}, distinct_png)
    decoded = []
    real = images.read_rgb
    monkeypatch.setattr(images, "read_rgb", lambda f: decoded.append(f) or real(f))
    data.load("lfw", tmp_path, seed=0)
    assert len(decoded) == 12 + 6  # every image for the digests, then the split's 4 + 2
    data.load("lfw", tmp_path, seed=1)
    assert len(decoded) == 18 + 6
    changed = tmp_path / "lfw" / "a" / "image_0001.jpg"
    st = changed.stat()
    changed.write_bytes(distinct_png(77))
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime, whatever the clock's tick
    data.load("lfw", tmp_path, seed=1)
    assert len(decoded) == 24 + 12 + 6
