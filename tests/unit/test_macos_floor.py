"""Minimum macOS per slice, the app's declared minimum, the Mach-O tools on this host, and
relinking with them: on the real Mach-O files of two macOS wheels (see tests/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llamapin.config import BundleConfig, load_config
from llamapin.engine import bundle as bnd
from llamapin.engine import codesign, macos
from llamapin.engine.binfmt import macho_slices
from llamapin.errors import (
    BinaryFormatError,
    BundleError,
    ConfigError,
    MacosFloorError,
    SignatureError,
)
from tests.conftest import llvm_tool

ARM = "pywhispercpp/.dylibs/libwhisper.1.8.5.dylib"  # arm64, signed, LC_BUILD_VERSION 11.0
ARM_DIR = "pywhispercpp/.dylibs"
X86_UNSIGNED = "libwhisper.dylib"  # x86_64, unsigned, LC_VERSION_MIN_MACOSX 10.9
X86_SIGNED = "pywhispercpp/.dylibs/libwhisper.dylib"  # x86_64, signed, 10.9
EXE = "_pywhispercpp.cpython-311-darwin.so"


@pytest.fixture(scope="module")
def lipo() -> str:
    return llvm_tool("llvm-lipo")


def fat(lipo: str, out: Path, *slices: Path) -> Path:
    subprocess.run([lipo, "-create", *map(str, slices), "-output", str(out)], check=True)
    return out


def unsign(src: Path, dest: Path) -> Path:
    """A copy whose LC_CODE_SIGNATURE became LC_DYLIB_CODE_SIGN_DRS (same layout): unsigned."""
    data = bytearray(src.read_bytes())
    idx = data.find((0x1D).to_bytes(4, "little") + (16).to_bytes(4, "little"))
    data[idx : idx + 4] = (0x2B).to_bytes(4, "little")
    dest.write_bytes(bytes(data))
    return dest


# --- reading the minimum --------------------------------------------------------------------


def test_minimum_macos_per_slice_on_real_files(
    macho_tree: Path, macho_x86_tree: Path, lipo: str, tmp_path: Path
) -> None:
    assert macos.slice_minimums(macho_tree / ARM) == {"arm64": "11.0"}  # LC_BUILD_VERSION
    assert macos.slice_minimums(macho_x86_tree / X86_SIGNED) == {"x86_64": "10.9"}  # VERSION_MIN
    both = fat(lipo, tmp_path / "both.dylib", macho_tree / ARM, macho_x86_tree / X86_UNSIGNED)
    assert macos.slice_minimums(both) == {"x86_64": "10.9", "arm64": "11.0"}
    assert macos.min_macos_of(both) == "11.0"
    assert macos.min_macos_of(macho_x86_tree / X86_UNSIGNED) == "10.9"
    (tmp_path / "notes.txt").write_text("not a binary")
    with pytest.raises(BinaryFormatError):
        macos.min_macos_of(tmp_path / "notes.txt")
    stage = tmp_path / "stage"
    (stage / "Frameworks").mkdir(parents=True)
    shutil.copy(both, stage / "Frameworks/libwhisper.dylib")
    (stage / "Frameworks/libalias.dylib").symlink_to("libwhisper.dylib")
    (stage / "README").write_text("text")
    assert macos.bundle_minimums(stage) == {
        "Frameworks/libwhisper.dylib": {"x86_64": "10.9", "arm64": "11.0"}
    }


def test_versions_decode_and_compare() -> None:
    assert macos._decode(0x000D0300) == "13.3"
    assert macos._decode(0x000A0F07) == "10.15.7"
    assert macos._decode(0x000B0000) == "11.0"
    assert macos.version_key("13") == (13, 0, 0)
    assert macos.version_key("10.15.7") == (10, 15, 7)
    assert macos.highest(["10.9", "10.15", "10.10.5"]) == "10.15"  # not string order
    assert macos.highest([]) is None
    assert macos.needs("arm64", "10.13") == "11.0"
    assert macos.needs("arm64e", "14.2") == "14.2"
    assert macos.needs("x86_64", "10.13") == "10.13"


def test_which_files_are_too_new() -> None:
    minimums: dict[str, dict[str, str | None]] = {
        "MacOS/llama-server": {"arm64": "11.0"},
        "Frameworks/libggml.dylib": {"x86_64": "10.15", "arm64": "14.0"},
        "Frameworks/libold.dylib": {"x86_64": None},
    }
    # An arm64 slice at 11.0 never holds an app back: Apple silicon Macs run 11 or later.
    assert macos.too_new(minimums, "10.13") == [
        "Frameworks/libggml.dylib (x86_64): needs macOS 10.15",
        "Frameworks/libggml.dylib (arm64): needs macOS 14.0",
    ]
    assert macos.too_new(minimums, "13.3") == ["Frameworks/libggml.dylib (arm64): needs macOS 14.0"]
    assert macos.too_new(minimums, "14") == []
    assert macos.too_new({"a.dylib": {"arm64": "14.0"}}, "13.3") == ["a.dylib: needs macOS 14.0"]
    macos.check_floor(minimums, None)  # nothing declared: nothing to check
    macos.check_floor(minimums, ("14.0", "bundle.min_macos"))
    with pytest.raises(MacosFloorError) as info:
        macos.check_floor(minimums, ("10.13", "bundle.min_macos"))
    err = info.value
    assert isinstance(err, BundleError) and err.exit_code == 2
    assert err.what == (
        "Frameworks/libggml.dylib (x86_64): needs macOS 10.15 (and 1 more), "
        "but the app supports macOS 10.13"
    )
    assert err.fix.endswith("or raise bundle.min_macos to 14.0")
    assert err.detail.splitlines() == macos.too_new(minimums, "10.13")
    assert "\n" not in err.line()


def test_bundle_floor_reads_the_manifest() -> None:
    def manifest(table: dict[str, dict[str, str | None]]) -> bnd.Manifest:
        return bnd.Manifest("k", {}, {}, "llama-server", {}, {}, macos=table)

    assert macos.bundle_floor(manifest({"a": {"arm64": "11.0"}, "b": {"arm64": "13.3"}})) == "13.3"
    assert macos.bundle_floor(manifest({"a": {"x86_64": None}})) is None
    assert macos.bundle_floor(manifest({})) is None
    # Older manifests have no "macos" table: read as empty.
    old = bnd.Manifest("k", {}, {}, "llama-server", {"llama-server": {}}, {})
    data = json.loads(old.to_json())
    del data["macos"]
    assert bnd.Manifest(**data).macos == {}


# --- what the app declares ------------------------------------------------------------------


def test_declared_minimum_from_config_or_tauri_conf(tmp_path: Path) -> None:
    assert macos.declared_minimum(tmp_path, BundleConfig()) is None
    assert macos.declared_minimum(tmp_path, BundleConfig(min_macos="13.3")) == (
        "13.3",
        "bundle.min_macos",
    )
    conf = tmp_path / "src-tauri/tauri.conf.json"
    conf.parent.mkdir()
    cfg = BundleConfig(frameworks_file="src-tauri/tauri.conf.json")
    conf.write_text(json.dumps({"bundle": {"macOS": {"frameworks": []}}}))
    assert macos.declared_minimum(tmp_path, cfg) is None  # the key is optional
    conf.write_text(json.dumps({"bundle": {"macOS": {"minimumSystemVersion": "12.0"}}}))
    assert macos.declared_minimum(tmp_path, cfg) == (
        "12.0",
        "bundle.macOS.minimumSystemVersion in tauri.conf.json",
    )
    # The config key wins over the file.
    both = BundleConfig(frameworks_file="src-tauri/tauri.conf.json", min_macos="13")
    assert macos.declared_minimum(tmp_path, both) == ("13", "bundle.min_macos")
    for bad in (13, "13.3\n", "latest", ["13"]):
        conf.write_text(json.dumps({"bundle": {"macOS": {"minimumSystemVersion": bad}}}))
        with pytest.raises(ConfigError, match="is not a macOS version"):
            macos.declared_minimum(tmp_path, cfg)
    conf.write_text("{")
    with pytest.raises(ConfigError, match="cannot read"):
        macos.declared_minimum(tmp_path, cfg)
    outside = BundleConfig(frameworks_file="../tauri.conf.json")
    with pytest.raises(ConfigError, match="outside the project root"):
        macos.declared_minimum(tmp_path, outside)


@pytest.mark.parametrize("value", ["13.3\n", "x", "13.", "1.2.3.4", "", "-1", "1234"])
def test_min_macos_config_is_a_dotted_version(tmp_path: Path, value: str) -> None:
    (tmp_path / "llamapin.toml").write_text(f"[bundle]\nmin_macos = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match="min_macos"):
        load_config(tmp_path)
    (tmp_path / "llamapin.toml").write_text('[bundle]\nmin_macos = "10.15.7"\n')
    assert load_config(tmp_path).bundle.min_macos == "10.15.7"


# --- the tools ------------------------------------------------------------------------------


def test_tools_per_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apple = macos.macho_tools("Darwin")
    assert (apple.install_name_tool, apple.lipo, apple.flavour) == (
        "install_name_tool",
        "lipo",
        "apple",
    )
    assert apple.resign(Path("/b/x.dylib")) == ["codesign", "--force", "-s", "-", "/b/x.dylib"]
    assert apple.argv(["lipo", "a", "-thin", "arm64"]) == ["lipo", "a", "-thin", "arm64"]
    llvm = macos.macho_tools("Linux")
    assert llvm.flavour == "llvm" and Path(llvm.install_name_tool).name.startswith(
        "llvm-install-name-tool"
    )
    assert llvm.resign(Path("x")) == [llvm.install_name_tool, "x"]  # rewrite = re-sign
    assert llvm.argv(["install_name_tool", "-id", "i", "f"])[0] == llvm.install_name_tool
    # A configured directory is the only place looked in, on macOS too.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError) as info:
        macos.macho_tools("Darwin", str(empty))
    assert info.value.why == (
        f"llvm-install-name-tool and llvm-lipo not found in bundle.llvm_dir {str(empty)!r}"
    )
    assert "apt-get install llvm" in info.value.fix
    only = tmp_path / "only"
    only.mkdir()
    (only / "llvm-lipo").symlink_to(llvm_tool("llvm-lipo"))
    (only / "llvm-install-name-tool").symlink_to(llvm_tool("llvm-install-name-tool"))
    tools = macos.macho_tools("Darwin", str(only))
    assert (tools.install_name_tool, tools.lipo) == (
        str(only / "llvm-install-name-tool"),
        str(only / "llvm-lipo"),
    )
    (only / "llvm-lipo").unlink()
    with pytest.raises(BundleError, match=r"^cannot relink .* llvm-lipo not found in"):
        macos.macho_tools("Linux", str(only))
    # On PATH: Debian's versioned names, the newest; a name that is not a version is ignored.
    path = tmp_path / "bin"
    path.mkdir()
    for suffix in ("9", "17", "x"):
        tool = path / f"llvm-lipo-{suffix}"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    (path / "llvm-lipo-18").write_text("not executable")
    monkeypatch.setenv("PATH", str(path))
    assert macos.find_llvm_tool("llvm-lipo") == str(path / "llvm-lipo-17")
    # Nothing on PATH: Debian's /usr/lib/llvm-NN/bin, or none.
    monkeypatch.setenv("PATH", "")
    debian = sorted(
        (int(p.parent.parent.name[5:]), str(p))
        for p in Path("/usr/lib").glob("llvm-[0-9]*/bin/llvm-install-name-tool")
        if os.access(p, os.X_OK)
    )
    want = debian[-1][1] if debian else None
    assert macos.find_llvm_tool("llvm-install-name-tool") == want
    assert macos.find_llvm_tool("llvm-no-such-tool") is None


# --- relinking with them --------------------------------------------------------------------


def test_relink_splits_a_fat_file_and_resigns_it(
    macho_tree: Path, macho_x86_tree: Path, lipo: str, tmp_path: Path
) -> None:
    """One slice has the run path, the other lacks it: lipo apart, edit, put back, re-sign."""
    name_tool = llvm_tool("llvm-install-name-tool")
    x86 = tmp_path / "x86.dylib"
    shutil.copy(macho_x86_tree / X86_SIGNED, x86)
    subprocess.run([name_tool, "-add_rpath", "@loader_path", str(x86)], check=True)
    stage = tmp_path / "stage"
    stage.mkdir()
    lib = fat(lipo, stage / "libwhisper.dylib", macho_tree / ARM, x86)
    done = bnd.relink(stage, "macho", bnd.Layout(), host="Linux")
    assert [step.split()[:2] for step in done] == [
        [Path(name_tool).name, "-id"],
        [Path(lipo).name, "libwhisper.dylib"],  # -thin x86_64
        [Path(lipo).name, "libwhisper.dylib"],  # -thin arm64
        [Path(name_tool).name, "-add_rpath"],  # the arm64 part only
        [Path(lipo).name, "-create"],
        [Path(name_tool).name, "libwhisper.dylib"],  # the re-sign, on the final file only
    ]
    assert sorted(p.name for p in stage.iterdir()) == ["libwhisper.dylib"]  # thin parts gone
    assert {s.arch: s.rpaths for s in macho_slices(lib)} == {
        "x86_64": ("@loader_path",),
        "arm64": ("@loader_path",),
    }
    checks = {s.arch: s for s in codesign.check(lib)}
    assert all(s.signed and s.valid for s in checks.values())
    assert {d.ident for s in checks.values() for d in s.directories} == {"libwhisper.dylib"}
    assert bnd.verify_signatures(stage) == 1


def test_unsigned_arm64_is_never_shipped(macho_tree: Path, tmp_path: Path) -> None:
    """Off macOS nothing adds a signature to an unsigned file (LLVM re-signs only slices that
    carry one). A file the tool cannot edit is refused with the tool's reason; a bundle with
    an unsigned arm64 file is refused by the signature check ensure runs after relinking."""
    stage = tmp_path / "stage"
    stage.mkdir()
    unsign(macho_tree / ARM, stage / "libwhisper.1.8.5.dylib")
    with pytest.raises(BundleError) as info:
        bnd.relink(stage, "macho", bnd.Layout(), host="Linux")
    assert info.value.what == "cannot relink the Mach-O bundle"
    assert "-id @rpath/libwhisper.1.8.5.dylib ... exited 1" in info.value.why
    assert "unsupported load command" in info.value.detail
    with pytest.raises(SignatureError) as sig:
        bnd.verify_signatures(stage)
    assert sig.value.what == "bad code signature on libwhisper.1.8.5.dylib"
    assert sig.value.fix == codesign.UNSIGNED_FIX


def test_tools_that_succeed_without_editing_are_caught(macho_tree: Path, tmp_path: Path) -> None:
    """Exit status 0 is not proof: the files are read back, and an edit missing is refused."""
    stage = tmp_path / "stage"
    (stage / "MacOS").mkdir(parents=True)
    (stage / "Frameworks").mkdir()
    shutil.copy(macho_tree / EXE, stage / "MacOS/llama-server")
    for lib in (macho_tree / ARM_DIR).iterdir():
        shutil.copy(lib, stage / "Frameworks" / lib.name)
    layout = bnd.Layout("macos-app")
    plan = bnd.macho_relink_plan(stage, layout)
    true = shutil.which("true")
    assert true is not None
    idle = macos.MachoTools(true, true, (true,), "llvm")
    with pytest.raises(BundleError) as info:
        bnd.relink_macho(stage, plan, layout, idle)
    assert info.value.what == "the Mach-O relink did not take effect"
    assert info.value.why.startswith(f"{len(plan)} edit(s) still needed after the tools")
    assert info.value.detail.splitlines() == [" ".join(c) for c in plan]
    # The real tools, the same plan: done, and nothing is left to do.
    done = bnd.relink_macho(stage, plan, layout, macos.macho_tools("Linux"))
    assert len(done) == len(plan) + 7 and bnd.macho_relink_plan(stage, layout) == []
    assert not any(str(stage) in step for step in done)  # paths shown relative to the bundle
