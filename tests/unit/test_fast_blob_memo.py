"""The verified-blob memo: an untouched blob is not re-read, any change of it through the
filesystem forces a full re-hash, and what the memo trusts is pinned down here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import time
from pathlib import Path

import pytest

from llamapin.fetch import VERIFIED_MEMO, Cache, client, copy_into_cache, tls

DATA = os.urandom(200_000)
SHA = hashlib.sha256(DATA).hexdigest()


def stamp(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def memo(cache: Cache) -> dict[str, list[int]]:
    data: dict[str, list[int]] = json.loads((cache.root / VERIFIED_MEMO).read_text())
    return data


def cached(tmp_path: Path, cache: Cache) -> Path:
    src = tmp_path / "model.gguf"
    src.write_bytes(DATA)
    return copy_into_cache(src, SHA, cache)


def test_a_verified_blob_is_remembered_and_a_change_forces_a_rehash(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache", racy_ns=0)
    blob = cached(tmp_path, cache)
    assert cache.lookup(SHA) == blob
    assert memo(cache) == {SHA: stamp(blob)}
    assert cache.lookup(SHA) == blob  # remembered: the same answer
    # An attacker flips bytes in place and puts size and mtime back as they were: the
    # ctime the kernel set on the write still differs, so the blob is re-hashed and dropped.
    # (racy_ns=0 above records even a fresh stat; the pause puts the write in a later
    # timestamp tick, which the 2 s default margin guarantees in real use.)
    time.sleep(0.1)
    before = blob.stat()
    with blob.open("r+b") as handle:
        handle.write(b"\0" * 64)
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert blob.stat().st_size == before.st_size
    assert blob.stat().st_mtime_ns == before.st_mtime_ns
    assert cache.lookup(SHA) is None
    assert not blob.exists()


def test_the_same_bytes_in_a_new_file_are_rehashed_and_remembered_anew(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache", racy_ns=0)
    blob = cached(tmp_path, cache)
    assert cache.lookup(SHA) == blob
    old = memo(cache)[SHA]
    copy = tmp_path / "copy"
    shutil.copyfile(blob, copy)
    os.replace(copy, blob)  # another inode
    assert cache.lookup(SHA) == blob
    assert memo(cache)[SHA] == stamp(blob) != old


def test_a_blob_changed_within_the_racy_window_is_not_remembered(tmp_path: Path) -> None:
    """Just written (as after every download): a write in the same timestamp tick would
    not change the stat, so it is hashed, found good, and not remembered. (An hour-wide
    margin: however slow this machine is, the blob is younger than that.)"""
    cache = Cache(tmp_path / "cache", racy_ns=3600 * 10**9)
    blob = cached(tmp_path, cache)
    assert cache.lookup(SHA) == blob
    assert not (cache.root / VERIFIED_MEMO).exists()


def test_the_memo_is_trusted_as_written(tmp_path: Path) -> None:
    """The trade-off, pinned: a memo that records the stat of a file whose bytes are not
    the pinned ones is believed. Writing it takes write access to the cache, which is
    the user's own (the same access that could change llamapin or the shell's rc)."""
    cache = Cache(tmp_path / "cache", racy_ns=0)
    blob = cached(tmp_path, cache)
    blob.write_bytes(b"not the pinned bytes")
    (cache.root / VERIFIED_MEMO).write_text(json.dumps({SHA: stamp(blob)}))
    assert cache.lookup(SHA) == blob


def test_a_damaged_memo_or_a_missing_blob_costs_only_a_rehash(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache", racy_ns=0)
    assert cache.lookup(SHA) is None  # nothing cached
    blob = cached(tmp_path, cache)
    (cache.root / VERIFIED_MEMO).write_text("{not json")
    assert cache.lookup(SHA) == blob
    assert memo(cache) == {SHA: stamp(blob)}
    blob.unlink()
    blob.mkdir()  # a folder where the blob belongs is not a blob
    assert cache.lookup(SHA) is None


def test_clients_share_one_tls_context() -> None:
    """Every client verifies with the same context (built once: it reads the CA bundle)."""
    with client() as a, client() as b:
        for http in (a, b):
            pool = http._transport._pool  # type: ignore[attr-defined]
            assert pool._ssl_context is tls()
        assert tls().verify_mode == ssl.CERT_REQUIRED and tls().check_hostname


def test_the_engine_client_context_trusts_nothing_and_reads_no_ca_bundle(
    tmp_path: Path,
) -> None:
    """The loopback engine speaks plain HTTP; its clients' context verifies and trusts no
    certificate, so an https URL there would fail closed, not be trusted."""
    import subprocess
    import threading
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    import httpx

    from llamapin.fetch import no_tls

    ctx = no_tls()
    assert ctx is no_tls()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] == 0
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    server.socket = served.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client(verify=ctx) as web, pytest.raises(httpx.ConnectError):
            web.get(f"https://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()
