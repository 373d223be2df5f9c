"""Safe unpacking of release archives, wheels and source distributions.

Every member is checked before a byte is written: no absolute paths, no
``..``, no links leaving the root, no device files or FIFOs, and caps on the
number of entries and on the total size (so a decompression bomb stops early).
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from llamapin.errors import UnpackError


@dataclass(frozen=True)
class Limits:
    max_files: int = 10_000
    max_bytes: int = 8 * 1024**3


def _refuse(archive: Path, member: str, why: str) -> UnpackError:
    return UnpackError(
        f"refusing to unpack {archive.name}",
        f"entry {member!r} {why}",
        "The archive is unsafe or corrupt; nothing was installed. Check where it came from",
    )


def _check_name(archive: Path, name: str) -> str:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, name, "has an absolute path")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise _refuse(archive, name, "points outside the archive root (path traversal)")
    return norm


def _check_link(archive: Path, name: str, target: str, hard: bool) -> None:
    if target.startswith("/"):
        raise _refuse(archive, name, f"links to the absolute path {target!r}")
    base = "" if hard else posixpath.dirname(posixpath.normpath(name))
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise _refuse(archive, name, f"links outside the archive root ({target!r})")


def _check_totals(archive: Path, count: int, total: int, limits: Limits) -> None:
    if count > limits.max_files:
        raise _refuse(archive, f"#{count}", f"exceeds the cap of {limits.max_files} entries")
    if total > limits.max_bytes:
        raise _refuse(archive, f"#{count}", f"brings the total past {limits.max_bytes} bytes")


def _unpack_tar(archive: Path, dest: Path, limits: Limits) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            total = 0
            for count, member in enumerate(tar, start=1):
                _check_name(archive, member.name)
                if member.issym() or member.islnk():
                    _check_link(archive, member.name, member.linkname, member.islnk())
                elif not (member.isfile() or member.isdir()):
                    raise _refuse(archive, member.name, "is a device file, FIFO or other special")
                total += member.size
                _check_totals(archive, count, total, limits)
                members.append(member)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnpackError(
            f"cannot unpack {archive.name}",
            f"{type(exc).__name__}: {exc}",
            "The archive is truncated or corrupt; delete it from the cache and fetch again",
        ) from None


def _unpack_zip(archive: Path, dest: Path, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            total = 0
            for count, info in enumerate(infos, start=1):
                _check_name(archive, info.filename)
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise _refuse(archive, info.filename, "is a link or special file in a zip")
                total += info.file_size
                _check_totals(archive, count, total, limits)
            for info in infos:
                target = dest / _check_name(archive, info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # zipfile never reads past an entry's declared size, and the declared sizes
                # were capped above, so a lying header ends in a CRC error, not a bomb.
                with zf.open(info) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                if (info.external_attr >> 16) & 0o111:
                    target.chmod(0o755)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UnpackError(
            f"cannot unpack {archive.name}",
            f"{type(exc).__name__}: {exc}",
            "The archive is truncated or corrupt; delete it from the cache and fetch again",
        ) from None


def unpack(archive: Path, dest: Path, limits: Limits | None = None) -> Path:
    """Unpack ``archive`` into the empty directory ``dest``; on failure ``dest`` is removed."""
    limits = limits or Limits()
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
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
