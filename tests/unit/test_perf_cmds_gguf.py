"""The GGUF header reader: it reads general.architecture straight from the header
(stepping over every other value by its declared type and length), refuses
truncated and hostile headers with one clear error, and remembers the answer
per model sha256 in the cache.

The files are written by gguf's own GGUFWriter (llama.cpp's Python writer), or
cut from the real default model, and checked against gguf's GGUFReader."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from gguf import GGUFEndian, GGUFReader, GGUFValueType, GGUFWriter

from llamapin.errors import BinaryFormatError
from llamapin.fetch import Cache
from llamapin.model import (
    ARCH_MEMO,
    FIXED,
    MAX_DEPTH,
    MAX_WALK,
    STRING,
    gguf_architecture,
    read_architecture,
)

ARCH = "general.architecture"
T = GGUFValueType
EVERY_TYPE: list[tuple[str, Any, GGUFValueType, GGUFValueType | None]] = [
    ("t.u8", 7, T.UINT8, None),
    ("t.i8", -7, T.INT8, None),
    ("t.u16", 700, T.UINT16, None),
    ("t.i16", -700, T.INT16, None),
    ("t.u32", 70000, T.UINT32, None),
    ("t.i32", -70000, T.INT32, None),
    ("t.f32", 0.5, T.FLOAT32, None),
    ("t.bool", True, T.BOOL, None),
    ("t.str", "a string ✓", T.STRING, None),
    ("t.u64", 1 << 40, T.UINT64, None),
    ("t.i64", -(1 << 40), T.INT64, None),
    ("t.f64", 0.25, T.FLOAT64, None),
    ("t.ints", [1, 2, 3], T.ARRAY, T.INT32),
    ("t.floats", [0.5, 1.5], T.ARRAY, T.FLOAT64),
    ("t.strs", ["a", "", "ccc"], T.ARRAY, T.STRING),
    ("t.nested", [[1, 2], [3]], T.ARRAY, None),
    ("t.nested_strs", [["x", "yy"], ["z"]], T.ARRAY, None),
]


def write(
    path: Path,
    arch: str = "llama",
    kvs: list[tuple[str, Any, GGUFValueType, GGUFValueType | None]] | None = None,
    *,
    arch_last: bool = True,
    no_arch: bool = False,
    endian: GGUFEndian = GGUFEndian.LITTLE,
) -> Path:
    """A real GGUF file from gguf's writer (metadata only, no tensors)."""
    writer = GGUFWriter(str(path), arch, endianess=endian)
    for key, value, vtype, sub in kvs if kvs is not None else EVERY_TYPE:
        writer.add_key_value(key, value, vtype, sub)
    kv = writer.kv_data[0]
    entry = kv.pop(ARCH)  # the writer puts it first; llamapin must find it anywhere
    if arch_last and not no_arch:
        kv[ARCH] = entry
    elif not no_arch:
        writer.kv_data[0] = {ARCH: entry, **kv}
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


def reference(path: Path) -> str:
    """What gguf's own reader says."""
    field = GGUFReader(str(path)).fields[ARCH]
    return bytes(field.parts[field.data[0]]).decode()


def fails(path: Path, match: str) -> str:
    with pytest.raises(BinaryFormatError, match=match) as info:
        read_architecture(path)
    line = info.value.render()
    assert "\n" not in info.value.what + info.value.why, line
    return info.value.why


def test_the_real_model_and_only_its_first_kilobytes(model: Path, tmp_path: Path) -> None:
    assert read_architecture(model) == "gemma3"
    # The reader stops at the key: the model's first 4 KB are enough, the
    # 262k-entry vocabulary after it is never read.
    head = tmp_path / "head.gguf"
    with model.open("rb") as src:
        head.write_bytes(src.read(4096))
    assert read_architecture(head) == "gemma3"
    assert gguf_architecture(head) == "gemma3"


@pytest.mark.parametrize("endian", [GGUFEndian.LITTLE, GGUFEndian.BIG])
@pytest.mark.parametrize("arch_last", [True, False])
def test_every_value_type_is_stepped_over(
    tmp_path: Path, endian: GGUFEndian, arch_last: bool
) -> None:
    path = write(tmp_path / "m.gguf", "qwen3moe", endian=endian, arch_last=arch_last)
    assert read_architecture(path) == "qwen3moe" == reference(path)


def test_type_table_matches_gguf() -> None:
    sizes = {T.UINT8: 1, T.INT8: 1, T.UINT16: 2, T.INT16: 2, T.UINT32: 4, T.INT32: 4}
    sizes |= {T.FLOAT32: 4, T.BOOL: 1, T.UINT64: 8, T.INT64: 8, T.FLOAT64: 8}
    assert {int(k): v for k, v in sizes.items()} == FIXED
    assert STRING == T.STRING and T.ARRAY not in FIXED


def test_a_large_vocabulary_before_the_key(tmp_path: Path) -> None:
    vocab = [f"tok{i}" for i in range(10_000)]
    kvs: list[tuple[str, Any, GGUFValueType, GGUFValueType | None]] = [
        ("tokenizer.ggml.tokens", vocab, T.ARRAY, T.STRING),
        ("tokenizer.ggml.scores", [0.0] * 10_000, T.ARRAY, T.FLOAT32),
    ]
    path = write(tmp_path / "v.gguf", "gemma3", kvs)
    assert read_architecture(path) == "gemma3" == reference(path)


def test_no_architecture_and_every_truncation(tmp_path: Path) -> None:
    fails(write(tmp_path / "n.gguf", no_arch=True), r"has no general\.architecture")
    whole = write(tmp_path / "w.gguf", "llama").read_bytes()
    cut = tmp_path / "cut.gguf"
    for size in range(len(whole) - 1):  # every prefix that ends before the value does
        cut.write_bytes(whole[:size])
        if size < len(whole) - 5:  # the value "llama" is the file's last five bytes
            why = fails(cut, "cannot read the GGUF header")
            assert "end" in why or "hold" in why or "starts with" in why, (size, why)


def header(version: int = 3, tensors: int = 0, entries: int = 1) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, entries)


def gstr(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def kv(key: bytes, kind: int, value: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", kind) + value


ARCH_KV = kv(ARCH.encode(), 8, gstr(b"llama"))
HOSTILE = {
    "not gguf": (b"\x7fELF" + bytes(40), r"starts with b'\\x7fELF', not b'GGUF'"),
    "version 1": (header(1) + ARCH_KV, "GGUF version 1 "),
    "version 4": (header(4) + ARCH_KV, "GGUF version 4 "),
    "absurd entry count": (header(entries=1 << 62) + ARCH_KV, "metadata entries, more than"),
    "absurd key length": (
        header() + struct.pack("<Q", 1 << 60) + bytes(64),
        "a metadata key claims 1152921504606846976 bytes",
    ),
    "absurd string length": (
        header(entries=2) + kv(b"x", 8, struct.pack("<Q", 1 << 60)) + ARCH_KV,
        "runs past the end",
    ),
    "absurd fixed array": (
        header(entries=2) + kv(b"x", 9, struct.pack("<IQ", 6, 1 << 61)) + ARCH_KV,
        "runs past the end",
    ),
    "absurd string array": (
        header(entries=2) + kv(b"x", 9, struct.pack("<IQ", 8, 1 << 61)) + ARCH_KV,
        "an array claims 2305843009213693952 elements",
    ),
    "unknown type": (header(entries=2) + kv(b"x", 13, b"") + ARCH_KV, "unknown .* type 13"),
    "unknown element type": (
        header(entries=2) + kv(b"x", 9, struct.pack("<IQ", 99, 1) + bytes(8)) + ARCH_KV,
        "unknown .* type 99",
    ),
    "arrays nested too deep": (
        header(entries=2)
        + kv(b"x", 9, struct.pack("<IQ", 9, 1) * MAX_DEPTH + struct.pack("<IQ", 0, 0))
        + ARCH_KV,
        f"nested more than {MAX_DEPTH} deep",
    ),
    "architecture not a string": (
        header() + kv(ARCH.encode(), 4, struct.pack("<I", 7)),
        "value type 4, not a string",
    ),
    "architecture too long": (
        header() + kv(ARCH.encode(), 8, gstr(b"a" * 300)),
        "general.architecture claims 300 bytes",
    ),
    "architecture not utf-8": (
        header() + kv(ARCH.encode(), 8, gstr(b"\xff\xfe")),
        "not UTF-8",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_are_one_clear_error(tmp_path: Path, case: str) -> None:
    data, match = HOSTILE[case]
    path = tmp_path / "h.gguf"
    path.write_bytes(data)
    fails(path, match)


def test_nested_arrays_at_the_depth_limit_are_read(tmp_path: Path) -> None:
    inner = struct.pack("<IQ", 9, 1) * (MAX_DEPTH - 1) + struct.pack("<IQ", 0, 0)
    path = tmp_path / "d.gguf"
    path.write_bytes(header(entries=2) + kv(b"x", 9, inner) + ARCH_KV)
    assert read_architecture(path) == "llama"


def test_endless_small_values_end_in_an_error_not_a_long_walk(tmp_path: Path) -> None:
    """A sparse file of zeros: an array of more empty strings than the walk allows."""
    path = tmp_path / "z.gguf"
    count = MAX_WALK + 1
    with path.open("wb") as out:
        out.write(header(entries=2) + kv(b"x", 9, struct.pack("<IQ", 8, count)))
        out.truncate(out.tell() + 8 * count + len(ARCH_KV))
    fails(path, f"more than {MAX_WALK} metadata values")
    # Many small arrays, each allowed alone, add up to the same limit.
    with path.open("wb") as out:
        out.write(header(entries=3) + kv(b"x", 9, struct.pack("<IQ", 8, MAX_WALK - 1)))
        out.seek(8 * (MAX_WALK - 1), os.SEEK_CUR)
        out.write(kv(b"y", 9, struct.pack("<IQ", 8, 3)) + bytes(24) + ARCH_KV)
    fails(path, f"more than {MAX_WALK} metadata values")


def test_not_a_regular_file_is_a_clear_error_and_a_fifo_no_hang(tmp_path: Path) -> None:
    assert fails(tmp_path, "cannot read the GGUF header") == "it is not a regular file"
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)  # nothing ever writes to it: opening it plainly would block
    assert fails(fifo, "cannot read the GGUF header") == "it is not a regular file"
    assert "No such file" in fails(tmp_path / "missing.gguf", "cannot read the GGUF header")


def test_the_answer_is_remembered_per_sha256(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    memo = cache.root / ARCH_MEMO
    model = write(tmp_path / "m.gguf", "phi3")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert gguf_architecture(model, sha256=sha, cache=cache) == "phi3"
    assert json.loads(memo.read_text()) == {sha: "phi3"}
    # Remembered: with the same sha256 the file is not opened again (here it is gone).
    model.unlink()
    assert gguf_architecture(model, sha256=sha, cache=cache) == "phi3"
    # Another sha256 is not in the memo: the file is read (and this one is junk).
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(BinaryFormatError, match="starts with b'not '"):
        gguf_architecture(junk, sha256="1" * 64, cache=cache)
    # A second model adds to the memo, keeping the first.
    other = write(tmp_path / "o.gguf", "mamba")
    sha2 = hashlib.sha256(other.read_bytes()).hexdigest()
    assert gguf_architecture(other, sha256=sha2, cache=cache) == "mamba"
    assert json.loads(memo.read_text()) == {sha: "phi3", sha2: "mamba"}
    assert not [p for p in memo.parent.iterdir() if p != memo]  # no temporary files left
    # Without a sha256 (or a cache) nothing is remembered or looked up.
    third = write(tmp_path / "t.gguf", "bert")
    assert gguf_architecture(third, cache=cache) == "bert"
    assert gguf_architecture(third, sha256=sha, cache=None) == "bert"
    assert "bert" not in json.loads(memo.read_text()).values()


@pytest.mark.parametrize("content", ["{", "[1, 2]", '{"%s": 3}'])
def test_a_damaged_memo_is_read_past_and_rewritten(tmp_path: Path, content: str) -> None:
    cache = Cache(tmp_path / "cache")
    memo = cache.root / ARCH_MEMO
    model = write(tmp_path / "m.gguf", "gpt2")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    memo.parent.mkdir(parents=True)
    memo.write_text(content.replace("%s", sha))
    assert gguf_architecture(model, sha256=sha, cache=cache) == "gpt2"
    assert json.loads(memo.read_text()) == {sha: "gpt2"}


def test_a_cache_that_cannot_be_written_only_costs_a_reread(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    (cache.root / ARCH_MEMO).parent.parent.mkdir(parents=True)
    (cache.root / ARCH_MEMO).parent.write_text("a file where the memo's folder would be")
    model = write(tmp_path / "m.gguf", "gpt2")
    for _ in range(2):
        assert gguf_architecture(model, sha256="2" * 64, cache=cache) == "gpt2"
