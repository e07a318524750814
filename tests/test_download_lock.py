"""Two jobs downloading the same file in parallel: the second waits for the first's lock, then uses the file the
first verified and installed — one transfer, no interleaved ``.part``. Two real processes, a local HTTP server."""
import hashlib
import io
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from asym import data
from asym.data import remote
from test_data import fake_cifar

pytestmark = pytest.mark.slow

FETCH = """
import sys
import torchvision.datasets as tvd
from asym.data import remote
tvd.CIFAR10.url, tvd.CIFAR10.tgz_md5 = sys.argv[1], sys.argv[2]
print(remote.fetch("cifar10", sys.argv[3]), flush=True)
"""


class HeldServer:
    """Serves one file; the first response sends half of it, then waits until ``release`` is set."""

    def __init__(self, body: bytes):
        self.body, self.requests = body, []
        self.half_sent, self.release = threading.Event(), threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                first = len(server.requests) == 1
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(server.body) - start))
                self.end_headers()
                rest = server.body[start:]
                if first:
                    self.wfile.write(rest[: len(rest) // 2])
                    self.wfile.flush()
                    server.half_sent.set()
                    server.release.wait(300)
                    rest = rest[len(rest) // 2:]
                self.wfile.write(rest)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def archive(tmp_path) -> bytes:
    fake_cifar(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buf.getvalue()


def lines_of(stream, into: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(iter(stream.readline, "")), daemon=True)
    thread.start()
    return thread


def test_a_second_download_of_the_same_file_waits_and_uses_the_verified_file(tmp_path):
    """Fails on main: the second job appends to the first one's .part (a second request to the server) and the two
    jobs race to rename and unpack it."""
    body = archive(tmp_path)
    server = HeldServer(body)
    root = tmp_path / "data"
    args = [sys.executable, "-c", FETCH, server.url, hashlib.md5(body).hexdigest(), str(root)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.half_sent.wait(120), "the first job never reached the server"
        second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said: list[str] = []
        reader = lines_of(second.stderr, said)
        deadline = time.time() + 120  # a deadline for a hung test, not a speed threshold
        while not any("waiting" in line for line in said) and len(server.requests) == 1 and time.time() < deadline:
            time.sleep(0.05)
        assert len(server.requests) == 1, f"the second job fetched too: {server.requests}"
        assert any("another job is fetching it; waiting" in line for line in said), said
        server.release.set()
        out1, err1 = first.communicate(timeout=120)
        out2, _ = second.communicate(timeout=120)
        reader.join(10)
    finally:
        server.release.set()
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                p.kill()
        server.httpd.shutdown()
    assert first.returncode == 0, err1
    assert second.returncode == 0, "".join(said)
    assert out1.strip() == "['cifar-10-batches-py']" and out2.strip() == "[]"  # the second installed nothing itself
    assert len(server.requests) == 1
    assert data.survey("cifar10", root).state == "present" and not (root / remote.STAGING).exists()


def test_the_lock_file_goes_with_its_holder(tmp_path):
    """The holder removes the lock file on release (nothing is left in the staging folder for fetch to remove), and
    the staging folder is recreated if a finished fetch removed it meanwhile."""
    staging = tmp_path / "staging"
    with remote.locked(staging, "f.tar"):
        assert (staging / "f.tar.part.lock").exists()
    assert not (staging / "f.tar.part.lock").exists()
    staging.rmdir()
    with remote.locked(staging, "f.tar"):
        assert (staging / "f.tar.part.lock").exists()
