"""Hostile archives, built for real, against the unpacker and the tree cache.

Every test keeps a sentinel file and an empty neighbour folder next to the
destination and checks them byte for byte afterwards.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest

from llamapin.archive import (
    COMPLETE,
    Limits,
    _BoundedReads,
    _set_aside,
    place_tree,
    unpack,
    unpack_cached,
)
from llamapin.errors import UnpackError

SENTINEL = b"do not touch\n"


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A folder holding the sentinel ``flag`` and, later, the destination ``dest``."""
    (tmp_path / "flag").write_bytes(SENTINEL)
    return tmp_path


def assert_untouched(box: Path, *extra: str) -> None:
    assert (box / "flag").read_bytes() == SENTINEL
    allowed = {"flag", "dest", *extra}
    assert {p.name for p in box.iterdir()} <= allowed, sorted(p.name for p in box.iterdir())


def add(
    tar: tarfile.TarFile,
    name: str,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
    data: bytes = b"",
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def cve_2025_4517_tar(path: Path, dest: Path) -> Path:
    """The shape of CPython's own regression test for CVE-2025-4517: nested directories
    whose names, once the step symlinks are expanded, overflow PATH_MAX, so that
    ``os.path.realpath`` stops resolving and the data filter waves the rest through."""
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(dest.parent, "PC_PATH_MAX")
    component = "d" * ((path_max - len(str(dest)) - 1) // (len(steps) + 1))
    with tarfile.open(path, "w") as tar:
        prefix = ""
        for step in steps:
            add(tar, os.path.join(prefix, component), tarfile.DIRTYPE)
            add(tar, os.path.join(prefix, step), tarfile.SYMTYPE, component)
            prefix = os.path.join(prefix, component)
        linkpath = os.path.join(*steps, "l" * 254)
        add(tar, linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps)))
        add(tar, "escape", tarfile.SYMTYPE, os.path.join(linkpath, ".."))
        add(tar, "flaglink", tarfile.LNKTYPE, "escape/flag")
        add(tar, "flaglink", data=b"overwritten")
        add(tar, "escape/newfile", data=b"new")
    return path


def test_cve_2025_4517_realpath_overflow(
    box: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    archive = cve_2025_4517_tar(tmp_path_factory.mktemp("a") / "evil.tar", box / "dest")
    if sys.version_info < (3, 11, 13):
        # Control: on this interpreter the standard library's own filter really is bypassed.
        # (Its component length is computed for its own destination's path length.)
        control = tmp_path_factory.mktemp("control")
        (control / "flag").write_bytes(SENTINEL)
        twin = cve_2025_4517_tar(control.parent / f"{control.name}.tar", control / "dest")
        with tarfile.open(twin) as tar, contextlib.suppress(tarfile.TarError, OSError):
            tar.extractall(control / "dest", filter="data")
        escaped = (control / "flag").read_bytes() != SENTINEL or (control / "newfile").exists()
        assert escaped, "the crafted archive no longer defeats this Python's data filter"
    with pytest.raises(UnpackError, match="lies inside 'a', which is a link"):
        unpack(archive, box / "dest")
    assert not (box / "dest").exists()
    assert_untouched(box)


def tar_of(path: Path, entries: list[tuple[str, bytes, str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, link, data in entries:
            add(tar, name, kind, link, data)
    return path


F, D, S, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        # a link inside the tree, then a file written through it
        ([("l", S, ".", b""), ("l/f", F, "", b"x")], "lies inside 'l'"),
        ([("up", S, "sub", b""), ("sub", D, "", b""), ("up/../../flag", F, "", b"x")], "outside"),
        # a link that is lexically inside but resolves outside through another link
        ([("d/l", S, "..", b""), ("m", S, "d/l/..", b"")], "links outside the archive root"),
        ([("a", S, "b/c", b""), ("b/c", S, "../..", b"")], "links outside the archive root"),
        ([("x", S, "y", b""), ("y", S, "x", b""), ("z", S, "x/q", b"")], "symlink loop"),
        ([("", S, ".", b"")], "empty name"),
        ([("e", S, "", b"")], "empty target"),
        ([("e", S, "C:/Windows", b"")], "absolute path"),
        # hard links: outside, through a link, to a link, to a later file
        ([("h", H, "../flag", b"")], "path traversal"),
        ([("f", F, "", b"x"), ("s", S, ".", b""), ("h", H, "s/f", b"")], "not an earlier"),
        ([("s", S, ".", b""), ("h", H, "s", b"")], "not an earlier"),
        ([("h", H, "f", b""), ("f", F, "", b"x")], "not an earlier"),
        # duplicates and collisions
        ([("a", F, "", b"1"), ("a", F, "", b"2")], "appears twice"),
        ([("a", F, "", b"1"), ("./a", F, "", b"2")], "appears twice"),
        ([("a", D, "", b""), ("a/", D, "", b"")], "appears twice"),
        ([("a", F, "", b"1"), ("a/b", F, "", b"2")], "lies inside 'a'"),
        ([("a/b", F, "", b"1"), ("a", S, ".", b"")], "replace a directory"),
        ([("L", S, ".", b""), ("l/x", F, "", b"2")], "lies inside 'l'"),
        ([("L", S, ".", b""), ("l", D, "", b"")], "only by case"),
    ],
)
def test_hostile_links_and_names(
    box: Path, entries: list[tuple[str, bytes, str, bytes]], match: str
) -> None:
    archive = tar_of(box.parent / f"{box.name}.tar.gz", entries)
    with pytest.raises(UnpackError, match=match):
        unpack(archive, box / "dest")
    assert not (box / "dest").exists()
    assert_untouched(box)


def test_good_tree_with_links_made_last(box: Path) -> None:
    """A file that comes after a symlink to its directory, a hard-link chain, a symlink
    chain and a symlink to a directory: all recreated, with hard links as copies."""
    archive = box.parent / "good.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        add(tar, "lib", tarfile.DIRTYPE)
        add(tar, "current", tarfile.SYMTYPE, "lib")
        info = tarfile.TarInfo("lib/libggml.so.1")
        info.size, info.mode = 4, 0o755
        tar.addfile(info, io.BytesIO(b"\x7fELF"))
        add(tar, "lib/libggml.so", tarfile.SYMTYPE, "libggml.so.1")
        add(tar, "lib/libggml.so.0", tarfile.SYMTYPE, "libggml.so")
        add(tar, "lib/copy", tarfile.LNKTYPE, "lib/libggml.so.1")
        add(tar, "copy2", tarfile.LNKTYPE, "lib/copy")
        add(tar, "via/../lib/../top", data=b"top")
        add(tar, ".", tarfile.DIRTYPE)
    out = unpack(archive, box / "dest")
    assert (out / "current/libggml.so.0").read_bytes() == b"\x7fELF"
    assert (out / "current").is_symlink()
    assert (out / "lib/libggml.so.0").resolve() == (out / "lib/libggml.so.1").resolve()
    assert not (out / "copy2").is_symlink() and (out / "copy2").read_bytes() == b"\x7fELF"
    assert (out / "copy2").stat().st_ino != (out / "lib/libggml.so.1").stat().st_ino
    assert (out / "copy2").stat().st_mode & 0o111
    assert (out / "top").read_bytes() == b"top"
    assert_untouched(box)


def test_bz2_plain_and_gnu_long_names(box: Path) -> None:
    long = "x" * 150 + "/" + "y" * 120
    with tarfile.open(box.parent / "x.tar.bz2", "w:bz2") as tar:
        add(tar, "f", data=b"ok")
    with tarfile.open(box.parent / "x.tar", "w") as tar:
        add(tar, "f", data=b"ok")
    for name in ("x.tar.bz2", "x.tar"):
        assert (unpack(box.parent / name, box / name) / "f").read_bytes() == b"ok"
    archive = box.parent / "gnu.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        add(tar, long, data=b"deep")
        add(tar, "to-deep", tarfile.SYMTYPE, "./" + long)
    out = unpack(archive, box / "gnu")
    assert (out / "to-deep").read_bytes() == b"deep"


def test_truncated_member_data(box: Path) -> None:
    archive = box.parent / "cut.tar"
    archive.write_bytes(header(b"f", tarfile.REGTYPE, 5000) + b"x" * 100)
    with pytest.raises(UnpackError, match="cannot unpack"):
        unpack(archive, box / "dest")
    assert not (box / "dest").exists()


def test_directory_creation_never_follows_a_link(box: Path) -> None:
    """The writer's own guard: a link where a directory is expected is not followed."""
    from llamapin.archive import _makedirs

    dest = box / "dest"
    dest.mkdir()
    (dest / "a").symlink_to(box)
    with pytest.raises(NotADirectoryError):
        _makedirs(dest, "a/b")
    assert not (box / "b").exists()
    assert_untouched(box)


def test_hard_links_count_toward_the_size_cap(box: Path) -> None:
    """A bomb made of hard links to one big file: every copy counts."""
    entries = [("big", F, "", b"0" * 4000)] + [(f"h{i}", H, "big", b"") for i in range(5)]
    archive = tar_of(box.parent / "links.tar.gz", entries)
    with pytest.raises(UnpackError, match="past 10000 bytes"):
        unpack(archive, box / "dest", Limits(max_bytes=10_000))


def test_destination_must_be_empty(box: Path) -> None:
    archive = tar_of(box.parent / "ok.tar.gz", [("f", F, "", b"x")])
    (box / "dest").mkdir()
    (box / "dest" / "mine").write_bytes(b"keep")
    with pytest.raises(UnpackError, match="not empty"):
        unpack(archive, box / "dest")
    assert (box / "dest" / "mine").read_bytes() == b"keep"


# --- header caps ----------------------------------------------------------------------------


def header(name: bytes, kind: bytes, size: int, payload_name: bytes = b"") -> bytes:
    """One raw ustar header with a correct checksum."""
    buf = bytearray(512)
    buf[0 : len(name)] = name
    buf[100:108] = b"0000644\0"
    buf[124:136] = b"%011o\0" % size
    buf[136:148] = b"%011o\0" % 0
    buf[156:157] = kind
    buf[257:265] = b"ustar\x0000"
    buf[148:156] = b" " * 8
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from llamapin.archive import unpack
    from llamapin.errors import UnpackError
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        unpack(Path(sys.argv[1]), Path(sys.argv[2]))
        outcome = "unpacked"
    except UnpackError as exc:
        outcome = exc.line()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "growth_kib": after - before}))
    """
)


def write_gz_with_huge_header(path: Path, kind: bytes, declared: int, prefix: bytes = b"") -> None:
    """A small .tar.gz whose ``kind`` header really carries ``declared`` bytes (zeros)."""
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz:
        gz.write(prefix)
        gz.write(header(b"././@PaxHeader", kind, declared))
        zeros = b"\0" * (8 << 20)
        left = declared
        while left > 0:
            gz.write(zeros[: min(left, len(zeros))])
            left -= min(left, len(zeros))
        gz.write(b"\0" * (-declared % 512))
        gz.write(header(b"f", tarfile.REGTYPE, 0))
        gz.write(b"\0" * 1024)


@pytest.mark.parametrize("kind", [b"x", b"L"])
def test_huge_pax_or_longname_header_is_refused_with_little_memory(box: Path, kind: bytes) -> None:
    archive = box.parent / f"huge-{kind.decode()}.tar.gz"
    write_gz_with_huge_header(archive, kind, 768 << 20)
    assert archive.stat().st_size < 5 << 20  # small on disk, 768 MiB inside
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(archive), str(box / "dest")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(proc.stdout)
    assert "bytes (the cap is 1048576)" in result["outcome"]
    assert result["growth_kib"] < 200 * 1024
    assert_untouched(box)


def test_a_header_tarfile_parses_differently_cannot_balloon_memory(box: Path) -> None:
    """A PAX record this Python reads as ``size`` while a strict reader does not: tarfile
    then looks for the next header inside file data, where a 700 MiB PAX header waits.
    The bounded reader (or the two-way parse check) stops it."""
    record = b"%022d size=0\n" % 29
    pax = header(b"././@PaxHeader", b"x", len(record)) + pad(record)
    planted = header(b"././@PaxHeader", b"x", 700 << 20)
    member = header(b"f", tarfile.REGTYPE, 512) + planted
    archive = box.parent / "twoway.tar.gz"
    archive.write_bytes(gzip.compress(pax + member + b"\0" * 1024))
    with pytest.raises(UnpackError):
        unpack(archive, box / "dest")
    assert_untouched(box)
    planted_file = header(b"g", tarfile.REGTYPE, 0)
    member = header(b"f", tarfile.REGTYPE, 512) + planted_file
    archive.write_bytes(gzip.compress(pax + member + b"\0" * 1024))
    with pytest.raises(UnpackError):
        unpack(archive, box / "dest")


def test_bounded_reads_refuse_unbounded_and_oversized_reads() -> None:
    reader = _BoundedReads(io.BytesIO(b"abc"), 2)
    assert reader.read(2) == b"ab" and reader.tell() == 2 and reader.seekable()
    with pytest.raises(tarfile.ReadError):
        reader.read(3)
    with pytest.raises(tarfile.ReadError):
        reader.read()


@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        ([header(b"s", tarfile.GNUTYPE_SPARSE, 0)], "sparse"),
        ([header(b"p", b"x", 21), pad(b"21 GNU.sparse.size=1\n")], "sparse"),
        ([header(b"p", b"g", 10), pad(b"10 size=1\n")], "PAX size record"),
        ([header(b"p", b"x", 12), pad(b"12 size=1_0\n"), header(b"f", b"0", 10)], "PAX size"),
    ],
)
def test_sparse_and_ambiguous_size_records_are_refused(
    box: Path, blocks: list[bytes], match: str
) -> None:
    archive = box.parent / "s.tar.gz"
    archive.write_bytes(gzip.compress(b"".join(blocks) + b"\0" * 1024))
    with pytest.raises(UnpackError, match=match):
        unpack(archive, box / "dest")


def test_pax_size_record_is_honoured(box: Path) -> None:
    """A valid PAX size override (what big members use) parses the same both ways."""
    body = b"hello world!"
    record = b"11 size=12\n"
    blocks = header(b"p", b"x", len(record)) + pad(record) + header(b"f", b"0", 0) + pad(body)
    archive = box.parent / "p.tar.gz"
    archive.write_bytes(gzip.compress(blocks + b"\0" * 1024))
    assert (unpack(archive, box / "dest") / "f").read_bytes() == body


def test_count_and_size_caps_stop_in_the_first_pass(box: Path) -> None:
    """A 1 GiB zero file in a tiny archive is refused from its header, without inflating."""
    archive = box.parent / "bomb.tar.gz"
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    with archive.open("wb") as out:
        out.write(comp.compress(header(b"bomb", tarfile.REGTYPE, 1 << 30)))
        out.write(comp.flush())
    start = time.monotonic()
    with pytest.raises(UnpackError, match="past 1000 bytes"):
        unpack(archive, box / "dest", Limits(max_bytes=1000))
    assert time.monotonic() - start < 30
    bad = box.parent / "neg.tar.gz"
    blocks = bytearray(header(b"n", tarfile.REGTYPE, 0))
    blocks[124:136] = b"\xff" * 12
    blocks[148:156] = b" " * 8
    blocks[148:156] = b"%06o\0 " % sum(blocks)
    bad.write_bytes(gzip.compress(bytes(blocks) + b"\0" * 1024))
    with pytest.raises(UnpackError, match="negative size"):
        unpack(bad, box / "dest")
    many = box.parent / "many.tar"
    many.write_bytes(b"".join(header(b"f%d" % i, tarfile.REGTYPE, 0) for i in range(5)))
    with pytest.raises(UnpackError, match="cap of 3 entries"):
        unpack(many, box / "dest", Limits(max_files=3))


def test_corrupt_header_field_is_a_clear_error(box: Path) -> None:
    blocks = bytearray(header(b"f", tarfile.REGTYPE, 0))
    blocks[148:156] = b"zzzzzzzz"  # not a number: not a header at all
    first = header(b"ok", tarfile.REGTYPE, 0)
    archive = box.parent / "c.tar"
    archive.write_bytes(first + bytes(blocks) + b"\0" * 1024)
    assert (unpack(archive, box / "dest") / "ok").read_bytes() == b""
    sized = bytearray(header(b"f", tarfile.REGTYPE, 0))
    sized[124:136] = b"9" * 12  # not octal
    sized[148:156] = b" " * 8
    sized[148:156] = b"%06o\0 " % sum(sized)
    archive.write_bytes(bytes(sized) + b"\0" * 1024)
    with pytest.raises(UnpackError, match="cannot unpack"):
        unpack(archive, box / "dest2")


# --- zip ------------------------------------------------------------------------------------


def zip_of(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(zipfile.ZipInfo(name), b"" if name.endswith("/") else b"z")
    return path


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["a", "a"], "appears twice"),
        (["a/b", "a/./b"], "appears twice"),
        (["a", "a/b"], "lies inside 'a'"),
        (["a/b", "a"], "replace a directory"),
        (["x/../../flag"], "path traversal"),
        (["./", "a", "b", "c"], "cap of 2 entries"),
    ],
)
def test_hostile_zip_names(box: Path, names: list[str], match: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it writes
        archive = zip_of(box.parent / "z.whl", names)
    with pytest.raises(UnpackError, match=match):
        unpack(archive, box / "dest", Limits(max_files=2))
    assert not (box / "dest").exists()
    assert_untouched(box)


# --- the tree cache -------------------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cached_tree_is_published_only_when_complete(tmp_path: Path) -> None:
    trees = tmp_path / "trees"
    good = tar_of(tmp_path / "blob-good", [("bin/llama-server", F, "", b"ELF")])
    key = sha(good)
    # An interrupted run of an older version left a tree without its marker, and a
    # killed run left a partial dot-folder a day old; a fresh one (another run) stays.
    (trees / key / "bin").mkdir(parents=True)
    (trees / key / "bin" / "half").write_bytes(b"partial")
    stale = trees / f".{key}.12345"
    stale.mkdir()
    (stale / "junk").write_bytes(b"j")
    os.utime(stale, (time.time() - 86_400, time.time() - 86_400))
    fresh = trees / f".{key}.99999"
    fresh.mkdir()
    old_file = trees / ".dl-leftover"
    old_file.write_bytes(b"x")
    os.utime(old_file, (time.time() - 86_400, time.time() - 86_400))
    tree = unpack_cached(good, trees, key, kind="x.tar.gz")
    assert tree == trees / key
    assert (tree / COMPLETE).read_text() == key
    assert (tree / "bin/llama-server").read_bytes() == b"ELF"
    assert not (tree / "bin" / "half").exists()
    assert not stale.exists() and not old_file.exists() and fresh.exists()
    assert unpack_cached(good, trees, key, kind="x.tar.gz") == tree  # reused, not redone
    # A hostile archive fails and leaves no tree and no partial folder behind.
    bad = tar_of(tmp_path / "blob-bad", [("l", S, ".", b""), ("l/f", F, "", b"x")])
    with pytest.raises(UnpackError, match="lies inside"):
        unpack_cached(bad, trees, sha(bad), kind="x.tar.gz")
    assert not (trees / sha(bad)).exists()
    assert sorted(p.name for p in trees.iterdir()) == sorted([key, fresh.name])
    with pytest.raises(UnpackError, match="not a sha256"):
        unpack_cached(good, trees, "../../x", kind="x.tar.gz")


def test_cache_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    good = tar_of(tmp_path / "blob", [("f", F, "", b"x")])
    blocked = tmp_path / "trees"
    blocked.write_bytes(b"a file where the trees folder belongs")
    with pytest.raises(UnpackError, match=r"NotADirectoryError|FileExistsError"):
        unpack_cached(good, blocked, sha(good), kind="x.tar.gz")
    trees = tmp_path / "trees2"
    trees.mkdir()
    (trees / sha(good)).write_bytes(b"a file where the tree belongs")
    with pytest.raises(UnpackError, match="is in the way") as caught:
        unpack_cached(good, trees, sha(good), kind="x.tar.gz")
    assert caught.value.line().startswith("cannot unpack blob:")
    assert [p.name for p in trees.iterdir()] == [sha(good)]
    # An archive whose own member takes the marker's name cannot be marked complete.
    marked = tar_of(tmp_path / "marked", [(COMPLETE, D, "", b""), ("f", F, "", b"x")])
    with pytest.raises(UnpackError, match="cannot unpack marked: IsADirectoryError"):
        unpack_cached(marked, trees, sha(marked), kind="x.tar.gz")
    assert [p.name for p in trees.iterdir()] == [sha(good)]


def test_placing_a_tree_never_deletes_one_another_run_placed(tmp_path: Path) -> None:
    """The steps of a race, one at a time: another run's complete tree already sits where
    ours goes (ours is left for removal, theirs kept); a tree that cannot be moved aside and
    replaced is a clear error."""
    ours, dest = tmp_path / ".ours", tmp_path / "k"
    for tree, text in ((ours, "ours"), (dest, "theirs")):
        (tree / "d").mkdir(parents=True)
        (tree / COMPLETE).write_text(text)
    place_tree(tmp_path / "blob", ours, dest)
    assert (dest / COMPLETE).read_text() == "theirs" and ours.is_dir()
    (dest / COMPLETE).unlink()  # now an unfinished tree, and nothing to put in its place
    with pytest.raises(UnpackError, match="the unpacked tree could not be moved to"):
        place_tree(tmp_path / "blob", tmp_path / "gone", dest)
    assert not dest.exists()  # the unfinished tree was set aside and removed
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ours"]
    with pytest.raises(UnpackError, match="the unpacked tree could not be moved to"):
        place_tree(tmp_path / "blob", tmp_path / "gone", tmp_path / "nothing-there")
    # The last step of the race: a finished tree set aside (another run placed it after our
    # first try) is put back, not removed.
    (dest / "d").mkdir(parents=True)
    (dest / COMPLETE).write_text("theirs")
    assert _set_aside(dest) is True
    assert (dest / COMPLETE).read_text() == "theirs" and (dest / "d").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ours", "k"]


RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from llamapin.archive import unpack_cached
    go = Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.005)
    tree = unpack_cached(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], kind="x.tar.gz")
    print(sorted(p.name for p in tree.iterdir())[:3])
    """
)


def test_concurrent_runs_share_one_complete_tree(tmp_path: Path) -> None:
    """Several runs unpack the same archive at once: each gets the complete tree, and no
    partial folder is left behind."""
    archive = tar_of(tmp_path / "blob", [(f"d/f{i}", F, "", b"%d" % i) for i in range(400)])
    trees, go = tmp_path / "trees", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(archive), str(trees), sha(archive), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    time.sleep(1.0)
    go.touch()
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6
    assert all("['.complete', 'd']" in out for out in outs), outs
    assert sorted(p.name for p in trees.iterdir()) == [sha(archive)]
    assert len(list((trees / sha(archive) / "d").iterdir())) == 400


def test_write_failure_during_extraction_is_a_clear_error(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel refuse the write (EFBIG), a stand-in for a full disk."""
    archive = tar_of(tmp_path / "big.tar.gz", [("f", F, "", os.urandom(200_000))])
    probe = textwrap.dedent(
        """
        import resource, signal, sys
        from pathlib import Path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from llamapin.archive import unpack_cached
        from llamapin.errors import UnpackError
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
        try:
            unpack_cached(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], kind="x.tar.gz")
        except UnpackError as exc:
            print(exc.line())
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        """
    )
    trees = tmp_path / "trees"
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(archive), str(trees), sha(archive)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "File too large" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(trees.iterdir()) == []


def test_local_engine_archive_goes_through_the_checked_cache(tmp_path: Path) -> None:
    """The engine's own path (a local release archive): a hostile one installs nothing, a good
    one becomes a complete cached tree."""
    import httpx

    from llamapin.config import EngineConfig
    from llamapin.engine.sources import Context, LocalSource
    from llamapin.fetch import Cache
    from llamapin.pin import Asset, Pin

    def materialize(archive: Path) -> Path:
        pin = Pin("b1", "0" * 40, {"linux-x64": Asset(archive.name, sha(archive))})
        engine = EngineConfig.model_validate({"source": "local", "path": str(archive)})
        with httpx.Client() as http:
            ctx = Context(pin, engine, "linux-x64", Cache(tmp_path / "cache"), http, Limits())
            return LocalSource().materialize(ctx).path

    (tmp_path / "flag").write_bytes(SENTINEL)
    evil = cve_2025_4517_tar(tmp_path / "llama-evil.tar", tmp_path / "cache" / "trees" / "x")
    with pytest.raises(UnpackError):
        materialize(evil)
    assert (tmp_path / "flag").read_bytes() == SENTINEL
    assert [p.name for p in (tmp_path / "cache" / "trees").iterdir()] == []
    good = tar_of(tmp_path / "llama-good.tar.gz", [("build/bin/llama-server", F, "", b"ELF")])
    tree = materialize(good)
    assert (tree / COMPLETE).read_text() == sha(good)
    assert (tree / "build/bin/llama-server").read_bytes() == b"ELF"
