"""On-disk layouts in each dataset's real shape (class folders and their sizes), for the loader and status tests.

Caltech-101's per-class counts are the real ones (102 folders, 9,144 images, 31 to 800 per folder).
Caltech-256, LFW and Scene-67 follow their published shape: Caltech-256 has 256 classes of 80 or more
images plus ``257.clutter`` (827), ~30,600 images; LFW has 5,749 identities with 1 to 530 images
(George_W_Bush), 1,680 of them with two or more, a long tail; MIT Indoor-67 has 67 classes of at least 100.
PubFig83 (83 identities of ≥ 100 images) and SUFR-W (400 identities, a tail) are approximations.
Files are written with ``image`` bytes (empty by default: listing and splitting only read names).
"""
from __future__ import annotations

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


def write_class_tree(folder: Path, counts: dict[str, int], image: bytes = b"") -> Path:
    """``folder/<class>/image_NNNN.jpg`` with ``counts[class]`` files of ``image`` bytes each."""
    for c, n in counts.items():
        d = folder / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            if image:
                (d / f"image_{i + 1:04d}.jpg").write_bytes(image)
            else:  # an empty file, one system call pair: the real-shape trees hold ~100k of them
                os.close(os.open(d / f"image_{i + 1:04d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    return folder


def write_real_shape(root: Path, name: str, image: bytes = b"", counts: dict[str, int] | None = None) -> Path:
    where, shape = REAL_SHAPES[name]
    return write_class_tree(root / where, counts if counts is not None else shape(), image)
