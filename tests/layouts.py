"""On-disk layouts in each dataset's real shape (class folders and their sizes), for the loader and status tests.

Caltech-101's per-class counts are the real ones (102 folders, 9,144 images, 31 to 800 per folder).
Caltech-256, LFW and Scene-67 follow their published shape: Caltech-256 has 256 classes of 80 or more
images plus ``257.clutter`` (827), ~30,600 images; LFW has 5,749 identities with 1 to 530 images
(George_W_Bush), 1,680 of them with two or more, a long tail; MIT Indoor-67 has 67 classes of at least 100.
PubFig83 (83 identities of ≥ 100 images) and SUFR-W (400 identities, a tail) are approximations.
Files are written with ``image`` bytes (empty by default: listing and splitting only read names).

The second half is what real folders also hold (``messy_*``): tool litter (macOS AppleDouble ``._x.png`` files
with their real header, ``.DS_Store``, ``__MACOSX/``, Jupyter's ``.ipynb_checkpoints/`` copies, Windows'
``Thumbs.db`` and ``desktop.ini``), a symlinked sub-folder and a symlink loop, an upper-case extension, exact
duplicates across classes and across train/test, and image files in odd pixel formats, truncated, or over
Pillow's decompression-bomb limit.
"""
from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np

CALTECH101_COUNTS = dict(
    accordion=55, airplanes=800, anchor=42, ant=42, BACKGROUND_Google=467, barrel=47, bass=54, beaver=46,
    binocular=33, bonsai=128, brain=98, brontosaurus=43, buddha=85, butterfly=91, camera=50, cannon=43, car_side=123,
    ceiling_fan=47, cellphone=59, chair=62, chandelier=107, cougar_body=47, cougar_face=69, crab=73, crayfish=70,
    crocodile=50, crocodile_head=51, cup=57, dalmatian=67, dollar_bill=52, dolphin=65, dragonfly=68,
    electric_guitar=75, elephant=64, emu=53, euphonium=64, ewer=85, Faces=435, Faces_easy=435, ferry=67, flamingo=67,
    flamingo_head=45, garfield=34, gerenuk=34, gramophone=51, grand_piano=99, hawksbill=100, headphone=42,
    hedgehog=54, helicopter=88, ibis=80, inline_skate=31, joshua_tree=64, kangaroo=86, ketch=114, lamp=61, laptop=81,
    Leopards=200, llama=78, lobster=41, lotus=66, mandolin=43, mayfly=40, menorah=87, metronome=32, minaret=76,
    Motorbikes=798, nautilus=55, octopus=35, okapi=39, pagoda=47, panda=38, pigeon=45, pizza=53, platypus=34,
    pyramid=57, revolver=82, rhino=59, rooster=49, saxophone=40, schooner=63, scissors=39, scorpion=84, sea_horse=57,
    snoopy=35, soccer_ball=64, stapler=45, starfish=86, stegosaurus=59, stop_sign=64, strawberry=35, sunflower=85,
    tick=49, trilobite=86, umbrella=75, watch=239, water_lilly=37, wheelchair=59, wild_cat=34, windsor_chair=56,
    wrench=39, yin_yang=60)


def caltech256_counts() -> dict[str, int]:
    counts = {f"{i + 1:03d}.class{i + 1}": 80 + (i * 37) % 81 for i in range(256)}
    counts["257.clutter"] = 827
    return counts


def lfw_counts() -> dict[str, int]:
    """5,749 identities, ~13,200 images: the real head of the distribution, then a tail down to one image each."""
    head = {"George_W_Bush": 530, "Colin_Powell": 236, "Tony_Blair": 144, "Donald_Rumsfeld": 121,
            "Gerhard_Schroeder": 109, "Ariel_Sharon": 77, "Hugo_Chavez": 71, "Junichiro_Koizumi": 60,
            "Jean_Chretien": 55, "John_Ashcroft": 53, "Jacques_Chirac": 52, "Serena_Williams": 52}
    # 62 identities with ≥ 20 images, 158 with ≥ 10, 1,680 with ≥ 2 (the figures scikit-learn's fetch_lfw_people shows)
    tail = [20 + (i * 7) % 30 for i in range(62 - len(head))] + [10 + i % 10 for i in range(158 - 62)]
    for n, k in ((2, 800), (3, 350), (4, 170), (5, 90), (6, 50), (7, 30), (8, 20), (9, 12)):  # 1,522 with 2–9
        tail += [n] * k
    tail += [1] * (5749 - 1680)
    return {**head, **{f"Person_{i:04d}": n for i, n in enumerate(tail)}}


def scene67_counts() -> dict[str, int]:
    return {f"scene{i:02d}": 100 + (i * 97) % 270 for i in range(67)}


def pubfig83_counts() -> dict[str, int]:
    return {f"id{i:02d}": 100 + (i * 53) % 267 for i in range(83)}


def sufrw_counts() -> dict[str, int]:
    return {f"id{i:03d}": 3 + (i * 13) % 40 for i in range(400)}


REAL_SHAPES = {"caltech101": ("caltech101/101_ObjectCategories", lambda: CALTECH101_COUNTS),
               "caltech256_101": ("caltech256/256_ObjectCategories", caltech256_counts),
               "lfw": ("lfw", lfw_counts), "scene67": ("scene67", scene67_counts),
               "pubfig83": ("pubfig83", pubfig83_counts), "sufrw": ("sufrw", sufrw_counts)}


def tiny_jpeg(seed: int = 0, size=(12, 9)) -> bytes:
    from PIL import Image
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def distinct_png(i: int, size=(12, 9)) -> bytes:
    """A tiny PNG whose pixels differ from every other ``i``'s (decoded pixels are not duplicates)."""
    from PIL import Image
    pixels = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
    pixels[0, 0] = (i % 256, (i // 256) % 256, (i // 65536) % 256)  # unique for sure, not just likely
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_class_tree(folder: Path, counts: dict[str, int], image=b"") -> Path:
    """``folder/<class>/image_NNNN.jpg`` with ``counts[class]`` files of ``image`` bytes each — or, ``image``
    a function of a running index (``distinct_png``), a different image in every file of the tree."""
    k = 0
    for c, n in counts.items():
        d = folder / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            k += 1
            if callable(image):
                (d / f"image_{i + 1:04d}.jpg").write_bytes(image(k))
            elif image:
                (d / f"image_{i + 1:04d}.jpg").write_bytes(image)
            else:  # an empty file, one system call pair: the real-shape trees hold ~100k of them
                os.close(os.open(d / f"image_{i + 1:04d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    return folder


def write_real_shape(root: Path, name: str, image: bytes = b"", counts: dict[str, int] | None = None) -> Path:
    where, shape = REAL_SHAPES[name]
    return write_class_tree(root / where, counts if counts is not None else shape(), image)


# ------------------------------------------------------------------------------- what real folders also hold

def appledouble() -> bytes:
    """A macOS AppleDouble ``._name`` file: magic 0x00051607, version 2, "Mac OS X" filler, one Finder-info entry."""
    header = b"\x00\x05\x16\x07" + b"\x00\x02\x00\x00" + b"Mac OS X        " + (1).to_bytes(2, "big")
    entry = (9).to_bytes(4, "big") + (50).to_bytes(4, "big") + (32).to_bytes(4, "big")  # Finder info at 50, 32 bytes
    return header + entry + bytes(32)


LITTER = {".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(32), "Thumbs.db": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(24),
          "desktop.ini": b"[.ShellClassInfo]\r\nIconResource=x\r\n"}


def add_litter(class_dir: Path) -> int:
    """Tool litter in one class folder, beside its images: an AppleDouble ``._`` twin and a Jupyter checkpoint
    copy of its first image, ``.DS_Store``, ``Thumbs.db``, ``desktop.ini``. Returns how many files it wrote."""
    first = sorted(p for p in class_dir.iterdir() if p.is_file())[0]
    (class_dir / f"._{first.name}").write_bytes(appledouble())
    (class_dir / ".ipynb_checkpoints").mkdir(exist_ok=True)
    (class_dir / ".ipynb_checkpoints" / f"{first.stem}-checkpoint{first.suffix}").write_bytes(first.read_bytes())
    for name, body in LITTER.items():
        (class_dir / name).write_bytes(body)
    return 2 + len(LITTER)


def messy_classes(folder: Path, counts: dict[str, int], elsewhere: Path, start: int = 0) -> dict:
    """A class tree as real disks hold it; returns what a correct scan finds.

    Each class has ``counts[c]`` distinct images plus ``add_litter``; the first class also has an upper-case
    ``.PNG`` image, a ``notes.txt``, a sub-folder that is a symlink to two more images kept in ``elsewhere``,
    and a symlink loop (``loop -> ..``); the tree's top holds ``__MACOSX/`` (AppleDouble twins) and
    ``.ipynb_checkpoints/``. Returns ``{"images": {class: n}, "skipped": files skipped, "linked": 2}``."""
    write_class_tree(folder, counts, lambda k: distinct_png(start + k))
    images = dict(counts)
    skipped = 0
    for c in counts:
        skipped += add_litter(folder / c)
    first = folder / sorted(counts)[0]
    (first / "UPPER.PNG").write_bytes(distinct_png(start + 10_000))
    (first / "notes.txt").write_text("scanned on the lab's Mac\n")
    (elsewhere / "more").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        (elsewhere / "more" / f"linked_{i}.png").write_bytes(distinct_png(start + 20_000 + i))
    (first / "more").symlink_to(elsewhere / "more", target_is_directory=True)
    (first / "loop").symlink_to("..", target_is_directory=True)
    images[first.name] += 1 + 2  # UPPER.PNG and the two linked images
    skipped += 1 + 1  # notes.txt, the loop
    (folder / "__MACOSX" / first.name).mkdir(parents=True)
    (folder / "__MACOSX" / first.name / "._image_0001.jpg").write_bytes(appledouble())
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "Untitled-checkpoint.ipynb").write_text("{}")
    return {"images": images, "skipped": skipped + 2, "linked": 2}


def image_file(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save) -> bytes:
    from PIL import Image
    im = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def _pil(build) -> bytes:
    buf = io.BytesIO()
    fmt, im, save = build()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def odd_pixel_files() -> dict[str, tuple[bytes, str, tuple]]:
    """name → (file bytes, file suffix, the RGB every pixel must decode to, or ("rows", top, bottom) for an image
    whose top and bottom halves differ). Each is a uniform image in one of the modes real datasets hold."""
    from PIL import Image
    out = {}
    grey16 = np.full((6, 8), 40000, np.uint16)  # 40000 / 65535 of full scale → 155.6 → 156 (convert("RGB") gives 255)
    out["16-bit grey PNG (I;16)"] = (image_file(grey16), ".png", (156, 156, 156))
    out["32-bit int TIFF (I)"] = (_pil(lambda: ("TIFF", Image.fromarray(np.full((6, 8), 40000, np.int32)), {})),
                                  ".tif", (156, 156, 156))
    pal = Image.new("P", (8, 6), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    out["palette (P)"] = (_pil(lambda: ("PNG", pal, {})), ".png", (10, 200, 30))
    out["palette with a transparent colour (P)"] = (_pil(lambda: ("PNG", pal, {"transparency": 1})), ".png",
                                                    (255, 255, 255))
    out["grey (L)"] = (image_file(np.full((6, 8), 77, np.uint8)), ".png", (77, 77, 77))
    la = Image.fromarray(np.stack([np.full((6, 8), 0, np.uint8), np.full((6, 8), 128, np.uint8)], 2), "LA")
    out["grey with alpha (LA)"] = (_pil(lambda: ("PNG", la, {})), ".png", (127, 127, 127))  # black at 128/255 on white
    cmyk = Image.fromarray(np.tile(np.array([0, 255, 255, 0], np.uint8), (6, 8, 1)), "CMYK")
    out["CMYK TIFF"] = (_pil(lambda: ("TIFF", cmyk, {})), ".tif", (255, 0, 0))  # no cyan, full magenta and yellow
    rgba = np.tile(np.array([255, 0, 0, 128], np.uint8), (6, 8, 1))
    out["RGBA"] = (image_file(rgba), ".png", (255, 127, 127))  # red at 128/255 on white
    out["1-bit (1)"] = (_pil(lambda: ("PNG", Image.new("1", (8, 6), 1), {})), ".png", (255, 255, 255))
    stored = np.zeros((6, 8, 3), np.uint8)
    stored[:, :4] = (255, 0, 0)  # left half red, right half blue, as stored
    stored[:, 4:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display → the left half ends on top
    out["EXIF-rotated (orientation 6)"] = (image_file(stored, exif=exif.tobytes()), ".png",
                                           ("rows", (255, 0, 0), (0, 0, 255)))
    return out


def truncated_jpeg() -> bytes:
    body = tiny_jpeg(7, size=(64, 48))
    return body[: len(body) // 2]


@functools.cache
def bomb_png() -> bytes:
    """A 13,400 × 13,400 1-bit PNG: 179.6 M pixels, over twice Pillow's MAX_IMAGE_PIXELS; about 22 KB."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new("1", (13_400, 13_400)).save(buf, format="PNG")
    return buf.getvalue()
