"""A hostile mirror and index on 127.0.0.1: dripping, oversized, endless and looping
answers, malformed index JSON, sha256 values that try to become paths, and a cache
that cannot be written (a real kernel limit, not a mock)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamapin.config import ModelConfig
from llamapin.errors import FetchError, IntegrityError, PackageIndexError
from llamapin.fetch import Budget, Cache, client, copy_into_cache, download, index_files
from llamapin.model import ensure_model

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
JSON = "application/vnd.pypi.simple.v1+json"


class Hostile:
    """Routes: /ok, /drip, /endless, /loop, /big-length, and /simple/<name>/ from ``index``."""

    def __init__(self) -> None:
        self.index: dict[str, bytes] = {}
        self.sent: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                path = self.path
                try:
                    if path == "/ok":
                        self._send(DATA)
                    elif path == "/drip":  # one byte every 0.2 s, far below any sane rate
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(DATA)))
                        self.end_headers()
                        for i in range(150):
                            self.wfile.write(DATA[i : i + 1])
                            self.wfile.flush()
                            time.sleep(0.2)
                    elif path == "/endless":  # no Content-Length, never ends
                        self.send_response(200)
                        self.end_headers()
                        sent = 0
                        while sent < 1 << 30:
                            self.wfile.write(b"\0" * 65536)
                            sent += 65536
                            server.sent[path] = sent
                    elif path == "/steady":  # slow but steady: four pieces, 0.3 s apart
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(DATA)))
                        self.end_headers()
                        for i in range(4):
                            self.wfile.write(DATA[i * 75_000 : (i + 1) * 75_000])
                            self.wfile.flush()
                            time.sleep(0.3)
                    elif path == "/big-length":
                        self._send(DATA + b"more")
                    elif path == "/loop":
                        self.send_response(302)
                        self.send_header("Location", "/loop")
                        self.end_headers()
                    elif path.startswith("/simple/"):
                        name = path.split("/")[2]
                        self._send(server.index[name], JSON)
                    else:
                        self.send_error(404)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def _send(self, body: bytes, kind: str = "application/octet-stream") -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_dripping_server_ends_in_a_clear_error(tmp_path: Path, hostile: Hostile) -> None:
    cache = Cache(tmp_path)
    slow = Budget(deadline=120, min_rate=1000, window=1.0)
    start = time.monotonic()
    with client(timeout=10) as http, pytest.raises(FetchError, match="fell below 1000 bytes/s"):
        download(
            hostile.url + "/drip", SHA, cache, http=http, attempts=2, wait_max=0.01, budget=slow
        )
    assert time.monotonic() - start < 60
    late = Budget(deadline=1.5, min_rate=0, window=3600)
    with client(timeout=10) as http, pytest.raises(FetchError, match=r"within 1\.5 s") as info:
        download(hostile.url + "/drip", SHA, cache, http=http, attempts=3, budget=late)
    assert "attempts" not in info.value.why  # the deadline is overall: no retry after it
    assert list((tmp_path / "tmp").iterdir()) == []
    assert cache.lookup(SHA) is None


def test_slow_but_steady_transfer_completes(tmp_path: Path, hostile: Hostile) -> None:
    steady = Budget(deadline=120, min_rate=1000, window=0.2)
    path = download(hostile.url + "/steady", SHA, Cache(tmp_path), attempts=1, budget=steady)
    assert path.read_bytes() == DATA


def test_deadline_spent_before_an_attempt_starts(tmp_path: Path, hostile: Hostile) -> None:
    with pytest.raises(FetchError, match="within 0 s"):
        download(hostile.url + "/ok", SHA, Cache(tmp_path), budget=Budget(deadline=0))


def test_more_than_the_pinned_size_stops_early(tmp_path: Path, hostile: Hostile) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(IntegrityError, match=f"announces {len(DATA) + 4} bytes, the pin says"):
        download(hostile.url + "/big-length", SHA, cache, size=len(DATA))
    start = time.monotonic()
    with pytest.raises(IntegrityError, match="more than the pinned 100000 bytes"):
        download(hostile.url + "/endless", SHA, cache, size=100_000)
    assert time.monotonic() - start < 60
    with pytest.raises(IntegrityError, match=f"expected {len(DATA) + 1} bytes, got {len(DATA)}"):
        download(hostile.url + "/ok", SHA, cache, size=len(DATA) + 1)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert download(hostile.url + "/ok", SHA, cache, size=len(DATA)).read_bytes() == DATA


def test_redirect_loop_is_one_line(tmp_path: Path, hostile: Hostile) -> None:
    with pytest.raises(FetchError, match="TooManyRedirects"):
        download(hostile.url + "/loop", SHA, Cache(tmp_path))
    with client() as http, pytest.raises(FetchError, match=r"cannot reach.*TooManyRedirects"):
        index_files(hostile.url + "/loop#", "x", http)
    with pytest.raises(FetchError, match=r"InvalidURL|UnsupportedProtocol"):
        download("http://[::1", SHA, Cache(tmp_path))


def test_sha256_that_would_be_a_path_deletes_nothing(tmp_path: Path, hostile: Hostile) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    cache = Cache(tmp_path / "cache")
    evil = "../../../victim"
    assert cache.root / "blobs" / "sha256" / evil == cache.root.parent / "cache/blobs/sha256" / evil
    with pytest.raises(IntegrityError, match="64 lowercase hex"):
        cache.lookup(evil)
    with pytest.raises(IntegrityError, match="64 lowercase hex"):
        download(hostile.url + "/ok", evil, cache)
    with pytest.raises(IntegrityError, match="64 lowercase hex"):
        download(hostile.url + "/ok", SHA.upper(), cache)
    local = tmp_path / "model.gguf"
    local.write_bytes(b"precious")
    cfg = ModelConfig.model_validate({"name": "m", "sha256": evil, "path": str(local)})
    with client() as http, pytest.raises(IntegrityError, match="64 lowercase hex"):
        ensure_model(cfg, cache, hostile.url + "/simple", http, tmp_path)
    with pytest.raises(IntegrityError):
        copy_into_cache(local, evil, cache)
    assert victim.read_bytes() == b"precious"
    assert local.read_bytes() == b"precious"


def entry(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "filename": "pkg-1.0-py3-none-any.whl",
        "url": "../../files/pkg-1.0-py3-none-any.whl",
        "hashes": {"sha256": SHA},
        "size": 10,
        "upload-time": "2026-01-01",
    }
    base.update(over)
    return base


def doc(*files: object) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "files": list(files)}).encode()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>surprise</html>", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "'files' is not a list"),
        (json.dumps({"files": {"a": 1}}).encode(), "'files' is not a list"),
        (doc("x"), "not an object"),
        (doc(entry(filename="../evil.whl")), "not a plain file name"),
        (doc(entry(filename="a/b.whl")), "not a plain file name"),
        (doc(entry(filename="..")), "not a plain file name"),
        (doc(entry(filename=5)), "not a plain file name"),
        (doc(entry(url=["x"])), "wrong type"),
        (doc(entry(hashes=["x"])), "wrong type"),
        (doc(entry(hashes={"sha256": "../../../victim"})), "not 64 lowercase hex"),
        (doc(entry(hashes={"sha256": SHA.upper()})), "not 64 lowercase hex"),
        (doc(entry(hashes={"sha256": 7})), "not 64 lowercase hex"),
        (doc(entry(size="big")), "the size of"),
        (doc(entry(size=True)), "the size of"),
        (doc(entry(size=-1)), "the size of"),
        (doc(entry(**{"upload-time": 5})), "upload-time"),
        (doc(entry(url="file:///etc/passwd")), "not an http"),
        (doc(entry(url="http://[::1")), "not an http"),
    ],
)
def test_malformed_index_answers(hostile: Hostile, body: bytes, match: str) -> None:
    hostile.index["x"] = body
    with client() as http, pytest.raises(PackageIndexError, match=match) as info:
        index_files(hostile.url + "/simple", "x", http)
    assert "/simple/x/" in info.value.why  # names the index


def test_good_index_answer_and_size_cap(hostile: Hostile) -> None:
    hostile.index["x"] = doc(entry(), entry(filename="other.tar.gz", hashes={"md5": "0"}))
    with client() as http:
        (found,) = index_files(hostile.url + "/simple", "x", http)
        assert found.url == hostile.url + "/files/pkg-1.0-py3-none-any.whl"
        assert found.sha256 == SHA and found.size == 10
        hostile.index["x"] = doc(*[entry() for _ in range(50)])
        with pytest.raises(PackageIndexError, match="over 1000 bytes"):
            index_files(hostile.url + "/simple", "x", http, max_bytes=1000)


DISK_FULL = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from llamapin.errors import LlamapinError
    from llamapin.fetch import Cache, copy_into_cache, download
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
    cache = Cache(Path(sys.argv[3]))
    try:
        for attempt in ("download", "copy"):
            try:
                if attempt == "download":
                    download(sys.argv[1], sys.argv[2], cache)
                else:
                    copy_into_cache(Path(sys.argv[4]), sys.argv[2], cache)
            except LlamapinError as exc:
                print(exc.line())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    """
)


def test_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path: Path, hostile: Hostile) -> None:
    """RLIMIT_FSIZE makes the kernel refuse the write (EFBIG): a real stand-in for ENOSPC."""
    local = tmp_path / "local.bin"
    local.write_bytes(DATA)
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL, hostile.url + "/ok", SHA, str(cache), str(local)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout + proc.stderr
    assert all("cannot write" in line and "File too large" in line for line in lines), lines
    assert "Traceback" not in proc.stderr
    assert list((cache / "tmp").iterdir()) == []
    assert not (cache / "blobs" / "sha256" / SHA).exists()


def test_a_file_where_the_cache_needs_a_folder(tmp_path: Path, hostile: Hostile) -> None:
    (tmp_path / "tmp").write_bytes(b"in the way")
    with pytest.raises(FetchError, match=r"cannot write a\.bin into the cache"):
        download(hostile.url + "/ok", SHA, Cache(tmp_path), label="a.bin")
    other = tmp_path / "c2"
    other.mkdir()
    (other / "blobs").write_bytes(b"in the way")
    with pytest.raises(FetchError, match="cannot write"):
        download(hostile.url + "/ok", SHA, Cache(other))
    local = tmp_path / "local.bin"
    local.write_bytes(DATA)
    with pytest.raises(FetchError, match=r"cannot write local\.bin"):
        copy_into_cache(local, SHA, Cache(other))
    assert list((other / "tmp").iterdir()) == []


def test_stale_temp_files_of_killed_runs_are_removed(tmp_path: Path, hostile: Hostile) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    old, fresh = tmp / "dl-killed", tmp / "dl-running"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    day_ago = time.time() - 86_400
    os.utime(old, (day_ago, day_ago))
    download(hostile.url + "/ok", SHA, Cache(tmp_path))
    assert not old.exists() and fresh.exists()


def test_unreachable_or_invalid_index_url() -> None:
    with httpx.Client(timeout=2) as http, pytest.raises(FetchError, match="cannot reach"):
        index_files("http://[::1", "x", http)
