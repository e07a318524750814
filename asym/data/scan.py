"""The folder scan every reader that walks folders uses: protocol decision 15 (docs/protocol.md).

- Hidden files and folders (``.*``, which includes macOS's AppleDouble ``._*`` files and ``.DS_Store``) and known
  tool litter (``__MACOSX/``, Jupyter's ``.ipynb_checkpoints/``, Windows' ``Thumbs.db`` and ``desktop.ini``) are
  skipped, and counted by reason.
- Directory symlinks are followed; a folder reached a second time (a link loop, or two links to one folder) is
  skipped, and a file reached twice (through a link or a hard link) counts once: no image is counted twice.
- Image extensions match case-insensitively (``.JPG`` is an image); other files are counted as skipped.
- The kept files come back sorted by path, so a seeded split draws the same images on every machine.

Torch-free: ``asym-data status`` scans with it.
"""
from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
LITTER = {"__macosx": "__MACOSX/", ".ipynb_checkpoints": ".ipynb_checkpoints/", ".ds_store": ".DS_Store",
          "thumbs.db": "Thumbs.db", "desktop.ini": "desktop.ini"}  # lower-cased name → the reason shown
APPLEDOUBLE, HIDDEN = "._* (AppleDouble)", ".* (hidden)"
NOT_IMAGE, LINKED_TWICE, FOLDER_TWICE, BROKEN = ("not an image", "file reached twice (link)",
                                                 "folder reached twice (link loop or second link)", "broken link")


def skip_reason(name: str) -> str | None:
    """Why the scan skips a file or folder called ``name`` (None: it does not)."""
    known = LITTER.get(name.lower())
    if known:
        return known
    if name.startswith("._"):
        return APPLEDOUBLE
    if name.startswith("."):
        return HIDDEN
    return None


@dataclass
class Scan:
    """What a scan kept (``files``: path → its ``os.stat`` result, links followed) and skipped (reason → files)."""

    files: dict[str, os.stat_result] = field(default_factory=dict)  # str paths: cheap on 100,000 files
    skipped: Counter = field(default_factory=Counter)
    seen_dirs: set = field(default_factory=set)    # (st_dev, st_ino) of every folder walked
    seen_files: set = field(default_factory=set)   # (st_dev, st_ino) of every file kept


def _count_inside(path: str) -> int:
    """Files under a skipped folder (links not followed), so status says how much it skipped; 1 for a file."""
    if not os.path.isdir(path) or os.path.islink(path):
        return 1
    return sum(len(files) for _, _, files in os.walk(path)) or 1


def walk(top: Path, scan: Scan | None = None, images_only: bool = True) -> Scan:
    """Add the files under ``top`` to ``scan`` (a new one by default) under the policy above.

    One ``Scan`` shared by several calls counts a file or folder reached from two of them once (the per-class
    datasets share one across their class folders). ``images_only=False`` keeps files of every extension."""
    scan = scan if scan is not None else Scan()
    walk_new(top, scan, images_only)
    return scan


def walk_new(top: Path | str, scan: Scan, images_only: bool = True, claimed: bool = False) -> list[str]:
    """``walk``, returning the files this call added to ``scan`` (sorted by path). ``claimed``: the caller has
    put ``top`` in ``scan.seen_dirs`` already (``class_folders`` claims every class folder before any is walked)."""
    added: list[str] = []
    try:
        st = os.stat(top)
    except OSError:
        return added
    if not claimed and not _claim(scan, st):
        return added
    stack = [str(top)]
    while stack:
        subfolders = []
        for e, st in _kept_entries(stack.pop(), scan):
            if stat.S_ISDIR(st.st_mode):
                if _claim(scan, st):
                    subfolders.append(e.path)
            elif not stat.S_ISREG(st.st_mode):
                scan.skipped[NOT_IMAGE] += 1
            elif images_only and os.path.splitext(e.name)[1].lower() not in IMAGE_SUFFIXES:
                scan.skipped[NOT_IMAGE] += 1
            elif (st.st_dev, st.st_ino) in scan.seen_files:
                scan.skipped[LINKED_TWICE] += 1
            else:
                scan.seen_files.add((st.st_dev, st.st_ino))
                scan.files[e.path] = st
                added.append(e.path)
        stack.extend(reversed(subfolders))
    return sorted(added)


def class_folders(folder: Path, scan: Scan) -> list[tuple[str, str]]:
    """The class folders directly under ``folder`` (links followed, the policy applied), sorted by name, each
    claimed in ``scan.seen_dirs`` with ``folder`` itself: a link inside one class to the top or to another class
    is skipped, not walked as part of it (walk each with ``walk_new(…, claimed=True)``). Files lying next to
    them are counted as skipped ("not in a class folder"); a second link to one class folder too."""
    try:
        _claim(scan, os.stat(folder))
    except OSError:
        return []
    out = []
    for e, st in _kept_entries(folder, scan):
        if not stat.S_ISDIR(st.st_mode):
            scan.skipped["not in a class folder"] += 1
        elif _claim(scan, st):
            out.append((e.name, e.path))
    return out


def _kept_entries(folder: Path | str, scan: Scan):
    """The entries of ``folder`` the policy keeps, sorted by name, each with its stat (links followed); the
    skipped ones, broken links and an unreadable folder are counted in ``scan``."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        scan.skipped["unreadable folder"] += 1
        return
    for e in entries:
        reason = skip_reason(e.name)
        if reason:
            scan.skipped[reason] += _count_inside(e.path)
            continue
        try:
            yield e, e.stat()  # follows links
        except OSError:
            scan.skipped[BROKEN] += 1


def _claim(scan: Scan, st: os.stat_result) -> bool:
    """Mark a folder walked; False (counted as skipped) if it was already: a link loop or a second link."""
    key = (st.st_dev, st.st_ino)
    if key in scan.seen_dirs:
        scan.skipped[FOLDER_TWICE] += 1
        return False
    scan.seen_dirs.add(key)
    return True


def describe_skipped(skipped: Counter) -> str:
    """``43 files skipped: 40 .ipynb_checkpoints/, 3 ._* (AppleDouble)`` — or "" when nothing was skipped."""
    total = sum(skipped.values())
    if not total:
        return ""
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items(), key=lambda t: (-t[1], t[0])))
    return f"{total} skipped: {parts}"
