"""Safe unpacking of release archives, wheels and source distributions.

Nothing here trusts the interpreter's own extraction filters (several Python
releases shipped ``tarfile`` filters with known bypasses). Instead:

1. a raw pass over the (decompressed) 512-byte tar headers refuses oversized
   PAX and GNU long-name headers, sparse members and the count/size caps
   *before* ``tarfile`` reads any of them into memory;
2. every member is checked against the final tree: no absolute paths, no
   ``..``, no duplicate names, no path that passes through a link or a file,
   no device files or FIFOs, and every link target is resolved (through the
   archive's other links) and must stay inside the destination;
3. only then are directories and regular files written, by us, with
   ``O_EXCL | O_NOFOLLOW``; hard links become copies; symlinks are created last.

A cached tree is published by an atomic rename only after a complete
extraction, with its completion marker already inside it.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import time
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from llamapin.errors import UnpackError

BLOCK = 512
CHUNK = 1 << 20
LINK_DEPTH = 40
COMPLETE = ".complete"
STALE_S = 6 * 3600.0
"""Partial trees (dot-prefixed) older than this are left-overs of an interrupted run."""

META_TYPES = {
    b"x": "PAX header",
    b"X": "PAX header",
    b"g": "global PAX header",
    b"L": "GNU long name",
    b"K": "GNU long link name",
}
KEY_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Limits:
    max_files: int = 10_000
    max_bytes: int = 8 * 1024**3
    max_header: int = 1 << 20
    """The largest PAX or GNU long-name header read (real ones are a few hundred bytes)."""


def _refuse(archive: Path, member: str, why: str) -> UnpackError:
    return UnpackError(
        f"refusing to unpack {archive.name}",
        f"entry {member[:200]!r} {why}",
        "The archive is unsafe or corrupt; nothing was installed. Check where it came from",
    )


def _corrupt(archive: Path, exc: BaseException) -> UnpackError:
    return UnpackError(
        f"cannot unpack {archive.name}",
        f"{type(exc).__name__}: {exc}",
        "The archive is truncated or corrupt; delete it from the cache and fetch again",
    )


def _check_name(archive: Path, name: str) -> str:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, name, "has an absolute path")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise _refuse(archive, name, "points outside the archive root (path traversal)")
    return norm


def _fold(path: str) -> str:
    """The key under which a case-insensitive, normalising file system sees ``path``."""
    return unicodedata.normalize("NFC", path).casefold()


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


# --- pass 1: raw headers ---------------------------------------------------------------------


def _number(field: bytes) -> int:
    """A tar number field, as tarfile reads it (octal text or base-256)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text or b"0", 8)


def _valid_header(buf: bytes) -> bool:
    try:
        chksum = _number(buf[148:156])
    except ValueError:
        return False
    rest = buf[:148] + b" " * 8 + buf[156:]
    unsigned = sum(rest)
    signed = sum(b - 256 if b > 127 else b for b in rest)
    return chksum in (unsigned, signed)


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        length_text, _, _ = data[pos : pos + 20].partition(b" ")
        if not length_text.isdigit() or int(length_text) <= len(length_text):
            break
        length = int(length_text)
        record = data[pos + len(length_text) + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        records[key] = value
        pos += length
    return records


def _open_stream(archive: Path) -> io.BufferedIOBase:
    """The decompressed tar stream; the same one feeds the raw pass and tarfile."""
    with archive.open("rb") as probe:
        magic = probe.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(archive, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(archive, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(archive, "rb")
    return archive.open("rb")


def _skip(stream: io.BufferedIOBase, size: int) -> None:
    while size > 0:
        got = stream.read(min(size, CHUNK))
        if not got:
            return
        size -= len(got)


def _scan_headers(archive: Path, stream: io.BufferedIOBase, limits: Limits) -> list[int]:
    """Walk the raw headers; return the offset at which each member's data starts."""
    starts: list[int] = []
    offset = 0
    pax_size: int | None = None
    count = total = 0
    while True:
        buf = stream.read(BLOCK)
        if len(buf) < BLOCK or buf.count(0) == BLOCK or not _valid_header(buf):
            return starts  # the end, exactly where tarfile stops reading members
        kind = buf[156:157]
        size = _number(buf[124:136])
        name = buf[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        offset += BLOCK
        if size < 0:
            raise _refuse(archive, name, "has a negative size")
        if kind in META_TYPES:
            if size > limits.max_header:
                raise _refuse(
                    archive,
                    name,
                    f"declares a {META_TYPES[kind]} of {size} bytes "
                    f"(the cap is {limits.max_header})",
                )
            data = stream.read(size)
            _skip(stream, -size % BLOCK)
            offset += size + (-size % BLOCK)
            if kind in (b"x", b"X", b"g"):
                records = _pax_records(data)
                if any(key.startswith(b"GNU.sparse") for key in records):
                    raise _refuse(archive, name, "is a sparse file (release archives have none)")
                if b"size" in records:
                    if kind == b"g" or not records[b"size"].isdigit():
                        raise _refuse(archive, name, "has a PAX size record tarfile may misread")
                    pax_size = int(records[b"size"])
            continue
        if kind == tarfile.GNUTYPE_SPARSE:
            raise _refuse(archive, name, "is a sparse file (release archives have none)")
        if pax_size is not None:
            size, pax_size = pax_size, None
        starts.append(offset)
        count += 1
        is_dir = kind == tarfile.AREGTYPE and name.endswith("/")
        if kind in tarfile.REGULAR_TYPES and not is_dir:
            total += size
        if count > limits.max_files:
            raise _refuse(archive, name, f"exceeds the cap of {limits.max_files} entries")
        if total > limits.max_bytes:
            raise _refuse(archive, name, f"brings the total past {limits.max_bytes} bytes")
        if (kind in tarfile.REGULAR_TYPES and not is_dir) or kind not in tarfile.SUPPORTED_TYPES:
            _skip(stream, size + (-size % BLOCK))
            offset += size + (-size % BLOCK)


class _BoundedReads:
    """The stream tarfile reads, refusing any single read larger than a cap.

    A second line of defence: tarfile reads a whole PAX or long-name header in
    one call, so even a header the raw pass missed cannot balloon memory.
    """

    def __init__(self, stream: io.BufferedIOBase, cap: int) -> None:
        self._stream = stream
        self._cap = cap

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._cap:
            raise tarfile.ReadError(f"a header or read of {size} bytes is over the cap")
        return self._stream.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def seekable(self) -> bool:
        return True


# --- pass 2: the plan ------------------------------------------------------------------------


@dataclass
class _Plan:
    archive: Path
    limits: Limits
    kinds: dict[str, str]
    folded: dict[str, str]
    implied: set[str]
    symlinks: dict[str, str]
    sizes: dict[str, int]
    count: int = 0
    total: int = 0

    @classmethod
    def new(cls, archive: Path, limits: Limits) -> _Plan:
        return cls(archive, limits, {}, {}, set(), {}, {})

    def add(self, raw: str, kind: str, size: int = 0) -> str | None:
        """Record one member; refuse what could land outside or collide. ``None``: skip it."""
        norm = _check_name(self.archive, raw)
        if norm == ".":
            if kind != "dir":
                raise _refuse(self.archive, raw, "has an empty name")
            return None
        if norm in self.kinds:
            raise _refuse(self.archive, raw, "appears twice in the archive")
        key = _fold(norm)
        for parent in _parents(norm):
            if self.folded.get(_fold(parent), "dir") != "dir":
                raise _refuse(
                    self.archive, raw, f"lies inside {parent!r}, which is a link or a file"
                )
        if kind != "dir" and key in self.implied:
            raise _refuse(self.archive, raw, "would replace a directory of the archive")
        if key in self.folded and "link" in (kind, self.folded[key]):
            raise _refuse(self.archive, raw, "differs from another entry only by case")
        self.kinds[norm] = kind
        self.folded.setdefault(key, kind)
        self.implied.update(_fold(p) for p in _parents(norm))
        self.count += 1
        self.total += size
        if self.count > self.limits.max_files:
            raise _refuse(self.archive, raw, f"exceeds the cap of {self.limits.max_files} entries")
        if self.total > self.limits.max_bytes:
            raise _refuse(self.archive, raw, f"brings the total past {self.limits.max_bytes} bytes")
        if kind == "file":
            self.sizes[norm] = size
        return norm

    def hardlink_source(self, name: str, target: str) -> str:
        """A hard link becomes a copy of a regular file written earlier in the archive."""
        source = _check_name(self.archive, target)
        if source not in self.sizes:
            raise _refuse(
                self.archive, name, f"hard-links to {target!r}, not an earlier regular file"
            )
        return source

    def resolve(self, name: str, target: str) -> None:
        """Follow a symlink target through the archive's own links; it must stay inside."""
        if target.startswith(("/", "\\")) or (len(target) > 1 and target[1] == ":"):
            raise _refuse(self.archive, name, f"links to the absolute path {target!r}")
        if not target:
            raise _refuse(self.archive, name, "is a link with an empty target")
        folded_links = {_fold(k): v for k, v in self.symlinks.items()}
        hops = 0

        def walk(base: list[str], text: str) -> list[str]:
            nonlocal hops
            stack = list(base)
            for part in text.replace("\\", "/").split("/"):
                if part in ("", "."):
                    continue
                if part == "..":
                    if not stack:
                        raise _refuse(
                            self.archive, name, f"links outside the archive root ({target!r})"
                        )
                    stack.pop()
                    continue
                stack.append(part)
                link = folded_links.get(_fold("/".join(stack)))
                if link is not None:
                    hops += 1
                    if hops > LINK_DEPTH:
                        raise _refuse(self.archive, name, "is part of a symlink loop")
                    stack = walk(stack[:-1], link)
            return stack

        walk(name.split("/")[:-1], target)


def _tar_kind(archive: Path, member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.isfile():
        return "file"
    if member.issym() or member.islnk():
        return "link"
    raise _refuse(archive, member.name, "is a device file, FIFO or other special")


# --- writing ---------------------------------------------------------------------------------


def _makedirs(dest: Path, rel: str) -> Path:
    """Create ``dest/rel`` one component at a time, never following a link."""
    path = dest
    for part in rel.split("/") if rel else []:
        path = path / part
        try:
            path.mkdir()
        except FileExistsError:
            if not stat.S_ISDIR(path.lstat().st_mode):
                raise NotADirectoryError(f"{path} is not a directory") from None
    return path


def _create(dest: Path, rel: str, executable: bool) -> IO[bytes]:
    parent = _makedirs(dest, posixpath.dirname(rel))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(parent / posixpath.basename(rel), flags, 0o755 if executable else 0o644)
    return os.fdopen(fd, "wb")


def _unpack_tar(archive: Path, dest: Path, limits: Limits) -> None:
    try:
        with _open_stream(archive) as stream:
            starts = _scan_headers(archive, stream, limits)
            stream.seek(0)
            bounded = _BoundedReads(stream, max(CHUNK, limits.max_header + BLOCK))
            with tarfile.open(fileobj=bounded, mode="r:") as tar:  # type: ignore[call-overload]
                plan = _Plan.new(archive, limits)
                entries: list[tuple[tarfile.TarInfo, str, str]] = []
                for index, member in enumerate(tar):
                    if index >= len(starts) or member.offset_data != starts[index]:
                        raise _refuse(archive, member.name, "has headers that parse two ways")
                    kind = _tar_kind(archive, member)
                    size = member.size if kind == "file" else 0
                    source = ""
                    if member.islnk():
                        source = plan.hardlink_source(member.name, member.linkname)
                        size = plan.sizes[source]
                    norm = plan.add(member.name, kind, size)
                    if norm is None:
                        continue
                    if member.issym():
                        plan.symlinks[norm] = member.linkname
                    elif member.islnk():
                        plan.sizes[norm] = size
                    entries.append((member, norm, source))
                for norm, target in plan.symlinks.items():
                    plan.resolve(norm, target)
                for member, norm, source in entries:
                    if member.isdir():
                        _makedirs(dest, norm)
                    elif member.isfile():
                        src = tar.extractfile(member)
                        assert src is not None  # a regular member always has data
                        with src, _create(dest, norm, bool(member.mode & 0o111)) as out:
                            shutil.copyfileobj(src, out, CHUNK)
                    elif member.islnk():
                        mode = (dest / source).stat().st_mode
                        with (
                            (dest / source).open("rb") as src_file,
                            _create(dest, norm, bool(mode & 0o111)) as out,
                        ):
                            shutil.copyfileobj(src_file, out, CHUNK)
                for norm, target in plan.symlinks.items():
                    parent = _makedirs(dest, posixpath.dirname(norm))
                    os.symlink(target, parent / posixpath.basename(norm))
    except (tarfile.TarError, EOFError, OSError, ValueError, lzma.LZMAError) as exc:
        raise _corrupt(archive, exc) from None


def _unpack_zip(archive: Path, dest: Path, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            plan = _Plan.new(archive, limits)
            entries: list[tuple[zipfile.ZipInfo, str]] = []
            for info in zf.infolist():
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise _refuse(archive, info.filename, "is a link or special file in a zip")
                is_dir = info.is_dir()
                norm = plan.add(
                    info.filename, "dir" if is_dir else "file", 0 if is_dir else info.file_size
                )
                if norm is not None:
                    entries.append((info, norm))
            for info, norm in entries:
                if info.is_dir():
                    _makedirs(dest, norm)
                    continue
                # zipfile never reads past an entry's declared size, and the declared sizes
                # were capped above, so a lying header ends in a CRC error, not a bomb.
                executable = bool((info.external_attr >> 16) & 0o111)
                with zf.open(info) as src, _create(dest, norm, executable) as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _corrupt(archive, exc) from None


def unpack(
    archive: Path, dest: Path, limits: Limits | None = None, *, kind: str | None = None
) -> Path:
    """Unpack ``archive`` into the new or empty directory ``dest``; on failure ``dest`` is
    removed. ``kind`` is a file name whose suffix gives the type (default: the archive's)."""
    limits = limits or Limits()
    name = (kind or archive.name).lower()
    if dest.is_dir() and any(dest.iterdir()):
        raise UnpackError(
            f"cannot unpack {archive.name}",
            f"the destination {dest} is not empty",
            "Unpack into a new directory",
        )
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if name.endswith((".zip", ".whl")):
            _unpack_zip(archive, dest, limits)
        elif name.endswith((".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar")):
            _unpack_tar(archive, dest, limits)
        else:
            raise UnpackError(
                f"cannot unpack {archive.name}",
                "the file type is not one of .tar.gz, .tgz, .tar.xz, .zip, .whl",
                "Point the source at a release archive or a wheel",
            )
    except UnpackError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def remove_stale(folder: Path, max_age: float = STALE_S, prefix: str = ".") -> None:
    """Remove left-overs of interrupted runs: ``prefix``-named entries older than ``max_age``."""
    cutoff = time.time() - max_age
    for entry in list(folder.iterdir()):
        with contextlib.suppress(OSError):  # another run may be removing it too
            if entry.name.startswith(prefix) and entry.lstat().st_mtime < cutoff:
                if stat.S_ISDIR(entry.lstat().st_mode):
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def unpack_cached(
    archive: Path, trees: Path, key: str, limits: Limits | None = None, *, kind: str | None = None
) -> Path:
    """Unpack ``archive`` once into ``trees/<key>`` (``key``: its sha256).

    The tree is built in a fresh dot-named folder, gets its completion marker
    only after every member is written, and is then renamed into place; a tree
    without the marker is never used. Partial trees of killed runs are removed
    once they are older than ``STALE_S``.
    """
    if not KEY_RE.fullmatch(key):
        raise UnpackError(
            f"cannot unpack {archive.name}",
            f"the cache key {key[:80]!r} is not a sha256",
            "The pin's sha256 must be 64 lowercase hex digits",
        )
    dest = trees / key
    if (dest / COMPLETE).is_file():
        return dest
    try:
        trees.mkdir(parents=True, exist_ok=True)
        remove_stale(trees)
        tmp = Path(tempfile.mkdtemp(dir=trees, prefix=f".{key}."))
    except OSError as exc:
        raise _corrupt(archive, exc) from None
    try:
        unpack(archive, tmp, limits, kind=kind)
        (tmp / COMPLETE).write_text(key)
        place_tree(archive, tmp, dest)
    except OSError as exc:
        raise _corrupt(archive, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _settle(tmp: Path, dest: Path) -> bool:
    """Rename ``tmp`` to ``dest``; True when ``dest`` now holds a complete tree: ours, or the
    same tree another run placed first (then ``tmp`` stays, for the caller to remove)."""
    try:
        tmp.rename(dest)
    except OSError:
        return (dest / COMPLETE).is_file()
    return True


def _set_aside(dest: Path) -> bool:
    """Move the unfinished tree at ``dest`` out of the way in one rename, then remove it.
    True when what was moved is a finished tree after all (another run placed it after our
    first try): it is put back, never deleted."""
    aside = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old."))
    moved = aside / "tree"
    try:
        with contextlib.suppress(OSError):  # another run set it aside first
            dest.rename(moved)
        return (moved / COMPLETE).is_file() and _settle(moved, dest)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def place_tree(archive: Path, tmp: Path, dest: Path) -> None:
    """Move the finished tree ``tmp`` into place at ``dest``. Never deletes a finished tree:
    a folder without the marker (an older version's unfinished tree) is renamed aside in one
    step under a dot-name, and put back if it turns out finished (see ``_set_aside``)."""
    if _settle(tmp, dest):
        return
    if dest.is_dir() and not dest.is_symlink() and (_set_aside(dest) or _settle(tmp, dest)):
        return
    if dest.exists() or dest.is_symlink():
        raise UnpackError(
            f"cannot unpack {archive.name}",
            f"{dest} is in the way and is not a finished tree of this cache",
            f"Remove {dest} and run again",
        )
    raise UnpackError(
        f"cannot unpack {archive.name}",
        f"the unpacked tree could not be moved to {dest}",
        f"Check that {dest.parent} is writable and has free space, then run again",
    )
