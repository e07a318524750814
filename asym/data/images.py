"""Image files → 8-bit RGB pixels, every file decoded or refused by name: protocol decisions 16 and 17 (docs/protocol.md).

``read_rgb(path)`` is the one decoder of every reader that reads image files: EXIF orientation applied
(``ImageOps.exif_transpose``), 16-bit grey (``I;16*``, ``I``) scaled to 8 bits (``round(v · 255 / 65535)``, not
clipped), transparency (``RGBA``, ``LA``, ``PA``, ``P``/``L``/``RGB`` with a transparent colour) composited on
``BACKGROUND`` (white), palette, grey, 1-bit and CMYK through Pillow's conversions. A file Pillow cannot decode —
unknown format, truncated, over Pillow's pixel limit (``Image.MAX_IMAGE_PIXELS``: its ``DecompressionBombWarning``
is treated as the error it becomes at twice the limit) — raises ``Undecodable``; ``decode`` collects them all
and refuses the dataset in one line naming the first and counting the others.

Torch-free (Pillow and numpy): ``asym-data status --check`` decodes with it.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

BACKGROUND = (255, 255, 255)  # transparent pixels show white (protocol decision 16)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # grey, 0 … 65535 (mode I holds 16-bit PNGs in some Pillows)
WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


class Undecodable(Exception):
    """One file that cannot be decoded into pixels; the message says why in a few words."""


def to_rgb(im) -> np.ndarray:
    """A decoded Pillow image → (H, W, 3) uint8 RGB, EXIF orientation applied (protocol decision 16)."""
    from PIL import Image, ImageOps
    im = ImageOps.exif_transpose(im)
    if im.mode in SIXTEEN_BIT:
        a = np.asarray(im).astype(np.int64).clip(0, 65535)
        grey = ((a * 255 + 32767) // 65535).astype(np.uint8)  # round half up, exact integers
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode == "F":
        raise Undecodable("32-bit float pixels (mode F) have no standard 8-bit scale; save it as 8- or 16-bit")
    if im.mode in WITH_ALPHA or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return np.asarray(Image.alpha_composite(Image.new("RGBA", im.size, BACKGROUND + (255,)), rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def read_rgb(path: Path | str) -> np.ndarray:
    """Decode ``path`` whole into (H, W, 3) uint8 RGB (``to_rgb``). Raises ``Undecodable`` for any failure."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # decodes every byte: a truncated file fails here, not later
                return to_rgb(im)
    except Undecodable:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Undecodable(f"over Pillow's pixel limit of {Image.MAX_IMAGE_PIXELS:,} ({e})") from None
    except Image.UnidentifiedImageError:
        raise Undecodable("not an image format Pillow can read") from None
    except Exception as e:  # OSError (truncated), SyntaxError (broken PNG), ValueError, zlib.error…
        raise Undecodable(f"{type(e).__name__}: {e}") from None


def digest(pixels: np.ndarray) -> str:
    """Exact identity of decoded pixels (shape and bytes): equal digests, equal images (duplicates, decision 17)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def row_digests(x: np.ndarray) -> list[str]:
    """``digest`` of every image of a batch (N, …) of decoded arrays (MNIST, CIFAR, SVHN, STL-10 as stored)."""
    return [digest(row) for row in x]


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (3, size, size) uint8, bilinear (what the 119×119 readers store)."""
    from PIL import Image
    im = Image.fromarray(pixels)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im).transpose(2, 0, 1)


def decode(files: list[Path | str], name: str, size: int | None = None, progress: bool = False
           ) -> tuple[np.ndarray | None, list[str]]:
    """Decode every file: (N×3×size×size uint8, or None without ``size``; each file's pixel ``digest``).

    Every file is tried; if any fails, raises ``DatasetIncomplete`` in one line naming the first, why, and how
    many others failed — nothing is returned half-decoded."""
    from tqdm import tqdm
    from .sources import DatasetIncomplete
    out = np.empty((len(files), 3, size, size), np.uint8) if size else None
    digests: list[str] = []
    failed: list[tuple[Path | str, str]] = []
    for i, f in enumerate(tqdm(files, desc=f"decode {name}", unit="img", leave=False, disable=not progress)):
        try:
            pixels = read_rgb(f)
        except Undecodable as e:
            failed.append((f, str(e)))
            digests.append("")
            continue
        digests.append(digest(pixels))
        if out is not None:
            out[i] = resize(pixels, size)
    if failed:
        raise DatasetIncomplete(refusal(name, failed, len(files)))
    return out, digests


def refusal(name: str, failed: list[tuple[Path | str, str]], total: int) -> str:
    """``dataset 'lfw': cannot decode lfw/bob/x.jpg (OSError: …) and 2 other files (of 120)``: one line."""
    f, why = failed[0]
    why = " ".join(why.split())[:300]
    others = f" and {len(failed) - 1} other file{'s' if len(failed) > 2 else ''}" if len(failed) > 1 else ""
    return f"dataset {name!r}: cannot decode {f} ({why}){others} (of {total}); remove or re-save them"


def collapse(classes: dict[str, list], digests: dict) -> tuple[dict[str, list], dict]:
    """Exact duplicates (equal pixel ``digest``) collapsed to their first occurrence in (class, path) order,
    before a split is drawn (protocol decision 17). Returns the classes without the copies, and
    ``{"duplicates_collapsed": copies removed, "duplicates_across_classes": of them, in another class}``."""
    owner: dict[str, str] = {}  # digest → the class of its first occurrence
    kept: dict[str, list] = {}
    removed = across = 0
    for c in sorted(classes):
        keep = []
        for f in classes[c]:
            d = digests[f]
            if d in owner:
                removed += 1
                across += owner[d] != c
            else:
                owner[d] = c
                keep.append(f)
        if keep:
            kept[c] = keep
    return kept, {"duplicates_collapsed": removed, "duplicates_across_classes": across}
