"""Fetch the datasets a public source serves: resumable, checksummed, never half-installed.

Every file goes to ``ROOT/.asym-download/<file>.part`` (an HTTP ``Range`` request continues a partial one),
is checked against the md5 its source publishes (torchvision's published sums where torchvision knows the
dataset), renamed to ``<file>``, unpacked into a temporary folder next to it and only then renamed into
place — so the readers, which look only at the final paths, never see half a file or half a tree.
URLs and checksums come from torchvision's public class attributes where it has them (``MNIST.mirrors``
and ``.resources``, ``CIFAR10.url``/``.filename``/``.tgz_md5``, ``SVHN.split_list``, ``STL10.url``…,
``LFWPeople.download_url_prefix``/``.file_dict``) and from the constants below otherwise.
"""
from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STAGING = ".asym-download"  # under data.root, so the final rename stays on one file system
CHUNK = 1 << 20
TIMEOUT_S = 60

# torchvision's Caltech101/256.download() and Flowers102 hold these in a method body / private attributes,
# so they are repeated here (same URLs and md5 sums as torchvision 0.19+).
CALTECH101 = ("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip", "caltech-101.zip",
              "3138e1922a9193bfa496528edbbc45d0")
CALTECH256 = ("https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar",
              "256_ObjectCategories.tar", "67b4f42ca05d46448c6bb8ecd2220f6d")
FLOWERS102_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
FLOWERS102_FILES = {"102flowers.tgz": "52808999861908f626f3c1f4e79d11fa",
                    "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
                    "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c"}
# Oxford VGG's 17 Flowers: the images and the three standard splits; VGG publishes no checksums.
FLOWERS17_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/"
FLOWERS17_FILES = ("17flowers.tgz", "datasplits.mat")


class DownloadError(RuntimeError):
    """A file could not be fetched or failed its checksum; the message is one line and says what to do."""


@dataclass(frozen=True)
class Remote:
    """One file of a dataset's public source and where its content lands under ``data.root``."""

    urls: tuple[str, ...]     # mirrors, tried in order
    filename: str
    md5: str | None           # None where the source publishes no checksum
    into: str                 # folder under data.root for the file or the archive's top-level entries
    target: str               # path under data.root that exists once this file is installed
    extract: bool = False
    inner: str | None = None  # unpack this archive found inside the downloaded one instead (Caltech-101's zip)


def remotes(name: str) -> list[Remote]:
    """The files ``asym-data download NAME`` fetches, read from torchvision's class attributes at call time.

    Raises KeyError for a dataset no public source serves (``asym.data.DATASETS[name].manual`` says why)."""
    import torchvision.datasets as tvd
    if name == "mnist":
        return [Remote(tuple(m + f for m in tvd.MNIST.mirrors), f, md5, "MNIST/raw",
                       f"MNIST/raw/{f.removesuffix('.gz')}", extract=True) for f, md5 in tvd.MNIST.resources]
    if name in ("cifar10", "cifar100", "stl10"):
        cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "stl10": tvd.STL10}[name]
        return [Remote((cls.url,), cls.filename, cls.tgz_md5, "", cls.base_folder, extract=True)]
    if name == "svhn":
        return [Remote((url,), f, md5, "", f) for url, f, md5 in (tvd.SVHN.split_list[s] for s in ("train", "test"))]
    if name == "caltech101":
        url, f, md5 = CALTECH101
        return [Remote((url,), f, md5, "caltech101", "caltech101/101_ObjectCategories", extract=True,
                       inner="caltech-101/101_ObjectCategories.tar.gz")]
    if name == "caltech256_101":
        url, f, md5 = CALTECH256
        return [Remote((url,), f, md5, "caltech256", "caltech256/256_ObjectCategories", extract=True)]
    if name == "flowers102":
        return [Remote((FLOWERS102_URL + f,), f, md5, "flowers-102", "flowers-102/" + ("jpg" if f.endswith(".tgz") else f),
                       extract=f.endswith(".tgz")) for f, md5 in FLOWERS102_FILES.items()]
    if name == "flowers17":
        return [Remote((FLOWERS17_URL + f,), f, None, "flowers17", "flowers17/" + ("jpg" if f.endswith(".tgz") else f),
                       extract=f.endswith(".tgz")) for f in FLOWERS17_FILES]
    if name == "lfw":
        folder, f, md5 = tvd.LFWPeople.file_dict["original"]
        base = tvd.LFWPeople.base_folder
        return [Remote((tvd.LFWPeople.download_url_prefix + f,), f, md5, base, f"{base}/{folder}", extract=True)]
    raise KeyError(name)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bar(total: int | None, initial: int, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not sys.stderr.isatty(), leave=False)


def _transfer(url: str, part: Path, desc: str) -> None:
    """Append ``url``'s bytes to ``part`` from where it stops (HTTP Range); raise DownloadError if cut short."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        r = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is already whole; the checksum decides
            return
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from None
    with r:
        if have and r.status != 206:  # the server ignored Range: start over
            have = 0
        length = r.headers.get("Content-Length")
        total = int(length) + have if length is not None else None
        got = have
        try:
            with open(part, "ab" if have else "wb") as f, _bar(total, have, desc) as bar:
                while chunk := r.read(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        except (http.client.IncompleteRead, OSError) as e:
            got = part.stat().st_size
            raise DownloadError(f"{desc}: transfer interrupted after {got:,} of {total or '?'} bytes ({type(e).__name__}); "
                                "run the same command again to resume") from None
    if total is not None and got != total:
        raise DownloadError(f"{desc}: transfer interrupted after {got:,} of {total:,} bytes; "
                            "run the same command again to resume")


def fetch_file(remote: Remote, staging: Path) -> Path:
    """Download (or resume) one file into ``staging``, verify its md5, and return the verified file."""
    from torchvision.datasets.utils import calculate_md5
    staging.mkdir(parents=True, exist_ok=True)
    done = staging / remote.filename
    if done.exists():
        return done  # verified on an earlier call, not yet installed
    part = staging / f"{remote.filename}.part"
    errors = []
    for url in remote.urls:
        _say(f"fetch {remote.filename} from {url}" + (f" (resuming at {part.stat().st_size:,} bytes)" if part.exists() else ""))
        try:
            _transfer(url, part, remote.filename)
            break
        except DownloadError as e:
            errors.append(str(e))
            if "interrupted" in str(e):
                raise
    else:
        raise DownloadError("; ".join(errors))
    if remote.md5 is not None:
        got = calculate_md5(part)
        if got != remote.md5:
            part.unlink()
            raise DownloadError(f"{remote.filename}: checksum mismatch (md5 {got}, the source publishes {remote.md5}); "
                                "the file was removed, run again to fetch it afresh")
    _say(f"{remote.filename}: {part.stat().st_size:,} bytes, "
         + ("md5 verified" if remote.md5 is not None else "no published checksum to verify"))
    os.replace(part, done)
    return done


def install(remote: Remote, file: Path, root: Path) -> None:
    """Put a verified file (or its archive's content) under ``root/remote.into`` by renames only."""
    from torchvision.datasets.utils import extract_archive
    dest = root / remote.into
    dest.mkdir(parents=True, exist_ok=True)
    if not remote.extract:
        os.replace(file, dest / remote.filename)
        return
    work = Path(tempfile.mkdtemp(dir=file.parent, prefix=f".{remote.filename}."))
    try:
        try:
            out = work / "out"
            out.mkdir()
            extract_archive(str(file), str(out))
            if remote.inner:
                inner = out / remote.inner
                out = work / "inner"
                out.mkdir()
                extract_archive(str(inner), str(out))
        except Exception as e:  # tarfile/zipfile/gzip errors of a damaged archive
            file.unlink(missing_ok=True)
            raise DownloadError(f"{remote.filename}: cannot unpack ({type(e).__name__}: {e}); "
                                "the file was removed, run again") from None
        for entry in sorted(out.iterdir()):
            if not (dest / entry.name).exists():
                os.replace(entry, dest / entry.name)
        if not (root / remote.target).exists():
            raise DownloadError(f"{remote.filename}: the archive did not hold {remote.target}")
        file.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def locked(staging: Path, filename: str):
    """Hold an exclusive ``fcntl.flock`` on ``staging/<filename>.part.lock`` for one job's fetch-and-install of that
    file: a second job (another process, another node on a file system with working flock) waits here, then finds
    the file installed. The lock file is removed by its holder; a waiter that then holds the lock of a removed file
    takes it again on the current one, so two jobs never hold it at once."""
    path = staging / f"{filename}.part.lock"
    said = False
    while True:
        staging.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:
                _say(f"{filename}: another job is fetching it; waiting for it")
                said = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # a file system without locks (ENOLCK, EOPNOTSUPP): fetch as before, alone or not
            os.close(fd)
            _say(f"{filename}: cannot lock {path} ({e.strerror}); fetching without a lock")
            yield
            return
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder removed it while this job waited: lock the current one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def fetch(name: str, root: str | Path) -> list[str]:
    """Fetch every file of ``name`` not yet installed under ``root``; returns the targets installed now.

    Jobs fetching the same file in parallel take turns (``locked``): the second waits, then uses the file the first
    verified and installed. Raises KeyError for a dataset no public source serves, DownloadError for a failed or
    corrupt transfer."""
    root = Path(root).expanduser()
    installed = []
    for remote in remotes(name):
        if (root / remote.target).exists():
            continue
        with locked(root / STAGING, remote.filename):
            if (root / remote.target).exists():  # installed by the job this one waited for
                continue
            install(remote, fetch_file(remote, root / STAGING), root)
        installed.append(remote.target)
    try:
        (root / STAGING).rmdir()  # only when empty: a partial transfer stays for the next call to resume
    except OSError:
        pass
    return installed
