"""A dataset's identity: a digest of what will be trained on (protocol decision 18, docs/protocol.md).

- ``npz:`` data: the file's content (sha256): a copy anywhere has the same identity, a rewrite another.
- ``folder:`` data: the manifest of the files the scan selects (``asym.data.scan``): each one's path relative to
  the folder, size and modification time.
- The registry's datasets: the resolved folder they were found in and the manifest of the files their reader
  reads (path, size, modification time), where a file that is not an image and is at most ``HASH_LIMIT`` bytes
  (label files, ``.mat`` split files, small ``.npz``/metadata) also contributes its content hash.

Stat-based, so it costs a ``stat`` per file (no image is read): cheap on the paper's 30,000-image folders.
It keys the prepared cache, enters a user dataset's config hash and every run's MLflow dataset input, and
``asym-data status`` shows it. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .scan import IMAGE_SUFFIXES

IDENTITY_VERSION = 1
HASH_LIMIT = 8 << 20  # non-image files up to 8 MiB are content-hashed (labels, split and metadata files)
CHUNK = 1 << 20
RACY_NS = 2_000_000_000  # files modified in the last 2 s are hashed every time, not remembered


@dataclass(frozen=True)
class Identity:
    """``digest``: 16 hex digits; ``files``/``bytes``: how many files and bytes it covers."""

    digest: str
    files: int
    bytes: int

    @property
    def short(self) -> str:
        """The 8 digits shown in tables, status lines and file names."""
        return self.digest[:8]


_SHA: dict[tuple, str] = {}  # (path, size, mtime_ns, inode, ctime_ns) → sha256: a file is read once per process


def file_sha256(path: Path | str, st: os.stat_result | None = None) -> str:
    """sha256 of a file's bytes, remembered in this process for as long as its stat (incl. ctime) is unchanged —
    once the file is older than ``RACY_NS`` (a rewrite within one clock tick can keep size and times: git's
    "racy" files), so the memo never answers for bytes it did not read."""
    st = st or os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    if key in _SHA:
        return _SHA[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
        _SHA[key] = h.hexdigest()
    return h.hexdigest()


def of_files(files: dict[str, os.stat_result], base: Path, location: str | None = None,
             by_content: bool = False) -> Identity:
    """The identity of ``files`` (path → stat), their paths taken relative to ``base``.

    ``by_content``: the files' bytes alone, not their names or times (an ``npz:`` file: a copy under any name is
    the same data); else each file's relative path, size and mtime, small non-image files also by content. ``location`` (the resolved folder of a registry dataset) enters the digest when given."""
    prefix = os.path.join(str(base), "")
    entries = []
    for f, st in sorted(files.items()):  # str paths: sorted as text
        rel = f[len(prefix):] if f.startswith(prefix) else os.path.relpath(f, base)
        small = os.path.splitext(f)[1].lower() not in IMAGE_SUFFIXES and st.st_size <= HASH_LIMIT
        sha = file_sha256(f, st) if by_content or small else None
        entries.append([None, st.st_size, None, sha] if by_content else
                       [rel.replace(os.sep, "/"), st.st_size, st.st_mtime_ns, sha])
    payload = json.dumps([IDENTITY_VERSION, location, entries], separators=(",", ":"))
    return Identity(hashlib.sha256(payload.encode()).hexdigest()[:16], len(entries),
                    sum(st.st_size for st in files.values()))


def constant(what: str) -> Identity:
    """The identity of data that ships with a package (scikit-learn's digits): its name."""
    return Identity(hashlib.sha256(json.dumps([IDENTITY_VERSION, what]).encode()).hexdigest()[:16], 0, 0)
