"""Closure, signatures and relinking on real ELF and Mach-O files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llamapin.engine import codesign
from llamapin.engine.binfmt import read_image, sniff
from llamapin.engine.bundle import Layout, elf_relink_plan, macho_relink_plan, relink
from llamapin.engine.closure import compute, find_binary, host_system_check
from llamapin.errors import BinaryFormatError, ClosureError, SignatureError
from tests.conftest import compile_so

MAIN = "int main(void){return 0;}\n"


def test_skulk_closure(skulk_tree: Path) -> None:
    binary = find_binary(skulk_tree)
    closure = compute(skulk_tree, binary)
    assert closure.binary.endswith("bin/llama-server")
    assert "libllama-server-impl.so" in closure.libs
    assert "libggml-base.so.0" in closure.libs
    assert "libggml-base.so" not in closure.libs  # the unversioned copy is not needed
    assert "libc.so.6" in closure.system
    assert closure.runtime == ()


def test_macho_closure_and_signatures(macho_tree: Path) -> None:
    binary = find_binary(macho_tree, "_pywhispercpp.cpython-311-darwin.so")
    closure = compute(macho_tree, binary)
    assert closure.format == "macho"
    assert "libggml-metal.0.13.1.dylib" in closure.libs
    assert "/usr/lib/libSystem.B.dylib" in closure.system
    for lib in closure.libs.values():
        slices = codesign.verify(macho_tree / lib)
        assert slices[0].hash_type == "sha256"
    assert read_image(macho_tree / closure.libs["libggml.0.13.1.dylib"]).signed


def test_edited_after_signing_is_caught_on_linux(macho_tree: Path, tmp_path: Path) -> None:
    src = macho_tree / "pywhispercpp/.dylibs/libggml-base.0.13.1.dylib"
    edited = tmp_path / src.name
    data = bytearray(src.read_bytes())
    data[5000] ^= 0xFF
    edited.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=r"page 1 .* does not match"):
        codesign.verify(edited)


def test_unsigned_and_corrupt_macho(macho_tree: Path, tmp_path: Path) -> None:
    src = macho_tree / "pywhispercpp/.dylibs/libggml-base.0.13.1.dylib"
    data = bytearray(src.read_bytes())
    # Turn LC_CODE_SIGNATURE (0x1d) into LC_DATA_IN_CODE (same layout): the file is now unsigned.
    idx = data.find((0x1D).to_bytes(4, "little") + (16).to_bytes(4, "little"))
    unsigned = tmp_path / "unsigned.dylib"
    unsigned.write_bytes(bytes(data[:idx]) + (0x29).to_bytes(4, "little") + bytes(data[idx + 4 :]))
    with pytest.raises(SignatureError, match="not signed"):
        codesign.verify(unsigned)
    cut = tmp_path / "cut.dylib"
    cut.write_bytes(bytes(data[:64]))
    with pytest.raises(BinaryFormatError):
        codesign.verify(cut)
    with pytest.raises(BinaryFormatError):
        read_image(cut)


def test_elf_missing_library_is_named(tmp_path: Path) -> None:
    compile_so(tmp_path, "libdep.so", "int dep(void){return 1;}\n")
    compile_so(
        tmp_path, "libmid.so", "int dep(void); int mid(void){return dep();}\n", ["libdep.so"]
    )
    exe = compile_so(
        tmp_path,
        "llama-server",
        "int mid(void); int main(void){return mid();}\n",
        ["libmid.so"],
        exe=True,
    )
    closure = compute(tmp_path, exe)
    assert sorted(closure.libs) == ["libdep.so", "libmid.so"]
    (tmp_path / "libdep.so").unlink()
    with pytest.raises(ClosureError, match=r"libdep.so \(needed by libmid.so\)"):
        compute(tmp_path, exe)


def test_runtime_loaded_backends_are_found(tmp_path: Path) -> None:
    compile_so(tmp_path, "libggml-base.so", "int base(void){return 1;}\n")
    compile_so(
        tmp_path,
        "libggml-cpu-haswell.so",
        "int base(void); void* ggml_backend_init(void){return (void*)0;}"
        " int s(void){return base();}\n",
        ["libggml-base.so"],
    )
    compile_so(tmp_path, "libunrelated.so", "int u(void){return 2;}\n")
    exe = compile_so(
        tmp_path,
        "llama-server",
        "int base(void); int main(void){return base();}\n",
        ["libggml-base.so"],
        exe=True,
    )
    (tmp_path / "notes.txt").write_text("not a binary")
    (tmp_path / "alias.so").symlink_to("libunrelated.so")
    closure = compute(tmp_path, exe)
    assert closure.runtime == ("libggml-cpu-haswell.so",)
    assert "libunrelated.so" not in closure.libs


def test_elf_relink_plan_and_run(tmp_path: Path) -> None:
    compile_so(tmp_path, "libdep.so", "int dep(void){return 1;}\n")
    exe = compile_so(
        tmp_path,
        "llama-server",
        "int dep(void); int main(void){return dep();}\n",
        ["libdep.so"],
        rpath="/nonexistent/build/bin",
        exe=True,
    )
    assert [c[-1] for c in elf_relink_plan(tmp_path)] == [str(exe)]
    done = relink(tmp_path, "elf", Layout())
    assert done and read_image(exe).rpaths == ("$ORIGIN",)
    assert elf_relink_plan(tmp_path) == []


def test_macho_relink_runs_on_linux(macho_tree: Path, tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "MacOS").mkdir(parents=True)
    (stage / "Frameworks").mkdir()
    shutil.copy(macho_tree / "_pywhispercpp.cpython-311-darwin.so", stage / "MacOS" / "server")
    for lib in (macho_tree / "pywhispercpp/.dylibs").iterdir():
        shutil.copy(lib, stage / "Frameworks" / lib.name)
    plan = macho_relink_plan(stage, Layout("macos-app"))
    assert [
        "install_name_tool",
        "-add_rpath",
        "@loader_path/../Frameworks",
        str(stage / "MacOS/server"),
    ] in plan
    assert any(c[1] == "-change" and c[3] == "@rpath/libggml.0.13.1.dylib" for c in plan)
    assert any(c[1] == "-id" for c in plan)
    # LLVM's tools carry the plan out here (tests/integration/test_macos_bundle.py goes on).
    done = relink(stage, "macho", Layout("macos-app"), host="Linux")
    assert done and macho_relink_plan(stage, Layout("macos-app")) == []
    assert relink(tmp_path / "empty", "macho", Layout(), host="Linux") == []


def test_sniff_and_bad_files(tmp_path: Path) -> None:
    text = tmp_path / "x.txt"
    text.write_text("hello")
    assert sniff(text) is None
    assert sniff(tmp_path) is None
    with pytest.raises(BinaryFormatError, match="neither an ELF nor a Mach-O"):
        read_image(text)
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"\x7fELF" + b"\x02\x01\x01" + b"\x00" * 20)
    with pytest.raises(BinaryFormatError, match="not a valid binary"):
        read_image(bad)
    with pytest.raises(ClosureError, match="no llama-server"):
        find_binary(tmp_path)
    assert find_binary(tmp_path, "x.txt") == text
    assert host_system_check("/usr/lib/libc++.1.dylib", "macho")
    assert not host_system_check("@rpath/libggml.dylib", "macho")
    assert host_system_check("libc.so.6", "elf")
    assert not host_system_check("libnot-a-real-lib.so.9", "elf")
