from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from llamapin.archive import Limits, unpack
from llamapin.errors import UnpackError


def make_tar(path: Path, entries: list[tarfile.TarInfo], data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in entries:
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_good_tar_with_internal_links(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "good.tar.gz",
        [
            entry("build/bin", tarfile.DIRTYPE),
            entry("build/bin/libggml.so.0.1"),
            entry("build/bin/libggml.so.0", tarfile.SYMTYPE, "libggml.so.0.1"),
            entry("build/bin/hard", tarfile.LNKTYPE, "build/bin/libggml.so.0.1"),
        ],
    )
    out = unpack(archive, tmp_path / "out")
    assert (out / "build/bin/libggml.so.0").resolve().name == "libggml.so.0.1"
    assert (out / "build/bin/hard").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([entry("../evil")], "path traversal"),
        ([entry("/etc/evil")], "absolute path"),
        ([entry("a/../../evil")], "path traversal"),
        ([entry("link", tarfile.SYMTYPE, "/etc/passwd")], "absolute path"),
        ([entry("d/link", tarfile.SYMTYPE, "../../outside")], "outside the archive"),
        ([entry("hard", tarfile.LNKTYPE, "../outside")], "outside the archive"),
        ([entry("dev", tarfile.CHRTYPE)], "device file"),
        ([entry("fifo", tarfile.FIFOTYPE)], "device file"),
    ],
)
def test_hostile_tar_entries(tmp_path: Path, entries: list[tarfile.TarInfo], match: str) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", entries)
    dest = tmp_path / "out"
    with pytest.raises(UnpackError, match=match):
        unpack(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil").exists()


def test_caps_on_count_and_size(tmp_path: Path) -> None:
    many = make_tar(tmp_path / "many.tar.gz", [entry(f"f{i}") for i in range(20)])
    with pytest.raises(UnpackError, match="cap of 10 entries"):
        unpack(many, tmp_path / "o1", Limits(max_files=10))
    big = make_tar(tmp_path / "big.tar.gz", [entry("f")], data=b"0" * 5000)
    with pytest.raises(UnpackError, match="past 1000 bytes"):
        unpack(big, tmp_path / "o2", Limits(max_bytes=1000))


def test_truncated_tar(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "t.tar.gz", [entry("f")], data=os.urandom(100_000))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(UnpackError, match="truncated or corrupt"):
        unpack(cut, tmp_path / "o")


def make_zip(path: Path, files: dict[str, bytes], mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def test_zip_and_wheel(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "x.whl",
        {"pkg/bin/llama-server": b"#!", "pkg/d/": b""},
        mode=stat.S_IFREG | 0o755,
    )
    out = unpack(archive, tmp_path / "o")
    assert (out / "pkg/bin/llama-server").stat().st_mode & 0o100
    plain = make_zip(tmp_path / "y.zip", {"a.txt": b"a"})
    assert (unpack(plain, tmp_path / "o2") / "a.txt").read_bytes() == b"a"


@pytest.mark.parametrize(
    ("files", "mode", "limits", "match"),
    [
        ({"../x": b"a"}, None, Limits(), "path traversal"),
        ({"C:/x": b"a"}, None, Limits(), "absolute path"),
        ({"link": b"/etc/passwd"}, stat.S_IFLNK | 0o777, Limits(), "link or special"),
        ({"bomb": b"0" * 100_000}, None, Limits(max_bytes=1000), "past 1000 bytes"),
    ],
)
def test_hostile_zip(
    tmp_path: Path, files: dict[str, bytes], mode: int | None, limits: Limits, match: str
) -> None:
    archive = make_zip(tmp_path / "bad.zip", files, mode)
    with pytest.raises(UnpackError, match=match):
        unpack(archive, tmp_path / "o", limits)


def test_zip_that_lies_about_its_size(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "lie.zip", {"bomb": b"0" * 50_000})
    raw = bytearray(archive.read_bytes())
    # Rewrite the declared uncompressed size (central directory) to 10 bytes.
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    with pytest.raises(UnpackError):
        unpack(archive, tmp_path / "o", Limits(max_bytes=1000))


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "x.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UnpackError, match="truncated or corrupt"):
        unpack(junk, tmp_path / "o")
    other = tmp_path / "x.rar"
    other.write_bytes(b"")
    with pytest.raises(UnpackError, match="file type"):
        unpack(other, tmp_path / "o2")
