"""What changed upstream between two builds, and whether it matters to us.

Pure functions over plain values (paths, commit subjects, text), plus one
reader that lists the files two source archives differ in.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llamapin.errors import BinaryFormatError
from llamapin.upstream.archs import tree_files

# --- which paths a build compiles -------------------------------------------------------------

NOISE_PREFIXES: tuple[tuple[str, str], ...] = (
    (".github/", "ci"),
    (".devops/", "ci"),
    ("ci/", "ci"),
    ("docs/", "docs"),
    ("media/", "docs"),
    ("licenses/", "docs"),
    ("tests/", "tests"),
    ("gguf-py/", "python tooling"),
    ("conversion/", "python tooling"),
    ("requirements/", "python tooling"),
    ("scripts/", "scripts"),
    ("models/", "model test data"),
    ("grammars/", "examples"),
    ("prompts/", "examples"),
    ("examples/", "examples"),
    ("pocs/", "examples"),
    ("benches/", "benchmarks"),
    ("app/", "other apps"),
    ("tools/ui/", "web ui"),
)
NOISE_SUFFIXES = (".md", ".py", ".txt", ".nix", ".toml", ".ini", ".csv", ".json", ".yml", ".yaml")
BUILD_FILES = ("CMakeLists.txt", "Makefile", "CMakePresets.json")


def _backend_of(path: str) -> str | None:
    match = re.match(r"ggml/src/ggml-([a-z0-9]+)(?:/|\.)", path)
    return match.group(1) if match else None


def classify(path: str, backends: frozenset[str]) -> tuple[str, bool]:
    """(area, compiled) for one path of the llama.cpp tree.

    ``compiled`` means the configured build compiles or is configured by it:
    core sources, the enabled ggml backends, the server, common, vendored code,
    build files. Anything unrecognised counts as compiled, so an unknown path can
    never make a real change look like noise.
    """
    name = path.rsplit("/", 1)[-1]
    if name in BUILD_FILES or path.startswith("cmake/") or path.endswith(".cmake"):
        return "build", True
    backend = _backend_of(path)
    if backend is not None:
        if backend in backends:
            return f"ggml-{backend}", True
        return f"other backend (ggml-{backend})", False
    for prefix, area in (
        ("ggml/", "ggml"),
        ("src/", "core"),
        ("include/", "core"),
        ("common/", "common"),
        ("vendor/", "vendored"),
        ("tools/server/", "server"),
    ):
        if path.startswith(prefix):
            return area, True
    for prefix, area in NOISE_PREFIXES:
        if path.startswith(prefix):
            return area, False
    if path.startswith("tools/"):
        return "other tools", False
    if "/" not in path and (path.endswith(NOISE_SUFFIXES) or path.startswith(".")):
        return "repository files", False
    if "/" not in path and name in ("AUTHORS", "CODEOWNERS", "LICENSE"):
        return "repository files", False
    return "unclassified", True


@dataclass(frozen=True)
class Relevance:
    relevant: bool
    compiled: dict[str, int]
    noise: dict[str, int]
    server_paths: list[str]
    total: int

    def reason(self) -> str:
        def areas(counts: dict[str, int]) -> str:
            return ", ".join(f"{area} ({n})" for area, n in sorted(counts.items()))

        if self.total == 0:
            return "no source file changed"
        if self.relevant:
            return f"changes what the build compiles: {areas(self.compiled)}"
        return f"only changes what the build does not compile: {areas(self.noise)}"


def relevance(paths: list[str], backends: frozenset[str]) -> Relevance:
    compiled: Counter[str] = Counter()
    noise: Counter[str] = Counter()
    for path in paths:
        area, is_compiled = classify(path, backends)
        (compiled if is_compiled else noise)[area] += 1
    server = [p for p in paths if p.startswith("tools/server/")]
    return Relevance(bool(compiled), dict(compiled), dict(noise), server, len(paths))


def backends_for(
    declared: list[str], source: str, package: str, platform: str, cmake_args: list[str]
) -> frozenset[str]:
    """The ggml backends a configured build compiles ("auto" reads the engine config)."""
    if declared != ["auto"]:
        return frozenset(b.lower() for b in declared)
    found = {"cpu"}
    if source == "wheel":
        found |= {b for b in ("vulkan", "cuda", "metal", "rocm", "sycl") if b in package.lower()}
    if platform.startswith("macos"):
        found |= {"metal", "blas"}
    for arg in cmake_args:
        match = re.match(r"-DGGML_([A-Z0-9]+)=(ON|1|TRUE)$", arg, re.IGNORECASE)
        if match and match.group(1).lower() not in ("native", "static", "lto", "ccache"):
            found.add(match.group(1).lower())
    return frozenset(found)


# --- source trees ------------------------------------------------------------------------------


def _tree_hashes(path: Path) -> dict[str, str]:
    """{path inside the llama.cpp tree: sha256} for one source archive."""
    out = {rel: hashlib.sha256(data).hexdigest() for rel, data in tree_files(path)}
    if not out:
        raise BinaryFormatError(
            f"{path.name} holds no llama.cpp tree",
            "no files under llama.cpp/",
            "Check engine.source_package",
        )
    return out


def changed_paths(old: Path, new: Path) -> list[str]:
    """Files added, removed or modified between two llama.cpp source archives."""
    a, b = _tree_hashes(old), _tree_hashes(new)
    return sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))


# --- commits -------------------------------------------------------------------------------------


def commit_area(subject: str) -> str:
    """llama.cpp subjects start with their area: 'server : fix ...', 'ggml-cuda: ...'."""
    match = re.match(r"^\s*([\w./+\- ,]{1,40}?)\s*:\s", subject)
    if not match:
        return "other"
    return match.group(1).strip().lower()


def group_commits(subjects: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for subject in subjects:
        groups.setdefault(commit_area(subject), []).append(subject)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))
