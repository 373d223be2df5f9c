"""Universal (fat) Mach-O: signatures and run paths per slice, on real files.

The universal files are made with LLVM's lipo from real thin dylibs of two macOS wheels of
one project: a signed arm64 build and an Intel build that ships both an unsigned and a
signed x86_64 dylib. Relinking plans are carried out with LLVM's install-name-tool, which
behaves like Apple's on the points that matter here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from macholib import mach_o
from macholib.MachO import MachO

from llamapin.config import Config
from llamapin.engine import bundle as bnd
from llamapin.engine import codesign
from llamapin.engine.binfmt import arch_name, macho_slices
from llamapin.errors import BundleError, ConfigError, SignatureError
from tests.conftest import llvm_tool

ARM = "pywhispercpp/.dylibs/libwhisper.1.8.5.dylib"  # arm64, signed
X86_UNSIGNED = "libwhisper.dylib"  # x86_64, no LC_CODE_SIGNATURE
X86_SIGNED = "pywhispercpp/.dylibs/libwhisper.dylib"  # x86_64, signed
EXE = "_pywhispercpp.cpython-311-darwin.so"  # arm64, loads the .dylibs by @loader_path


@pytest.fixture(scope="module")
def lipo() -> str:
    return llvm_tool("llvm-lipo")


@pytest.fixture(scope="module")
def name_tool() -> str:
    return llvm_tool("llvm-install-name-tool")


def fat(lipo: str, out: Path, *slices: Path) -> Path:
    subprocess.run([lipo, "-create", *map(str, slices), "-output", str(out)], check=True)
    return out


def slice_offset(path: Path, arch: str) -> int:
    return next(
        int(h.offset)
        for h in MachO(str(path)).headers
        if arch_name(h.header.cputype, h.header.cpusubtype) == arch
    )


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def unsign(src: Path, dest: Path) -> Path:
    """A copy whose LC_CODE_SIGNATURE became LC_DYLIB_CODE_SIGN_DRS (same layout): unsigned."""
    data = bytearray(src.read_bytes())
    idx = data.find((0x1D).to_bytes(4, "little") + (16).to_bytes(4, "little"))
    data[idx : idx + 4] = (0x2B).to_bytes(4, "little")
    dest.write_bytes(bytes(data))
    return dest


def apply(plan: list[list[str]], lipo: str, name_tool: str) -> None:
    """Run a relink plan with LLVM's tools in place of Apple's."""
    tools = {"lipo": lipo, "install_name_tool": name_tool, "rm": "rm"}
    for cmd in plan:
        subprocess.run([tools[cmd[0]], *cmd[1:]], check=True, capture_output=True)


def by_arch(path: Path) -> dict[str, codesign.SliceCheck]:
    return {s.arch: s for s in codesign.check(path)}


# --- signatures per slice -------------------------------------------------------------------


def test_unsigned_x86_slice_is_allowed_and_reported(
    macho_tree: Path, macho_x86_tree: Path, lipo: str, tmp_path: Path
) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    lib = fat(lipo, stage / "libwhisper.dylib", macho_tree / ARM, macho_x86_tree / X86_UNSIGNED)
    assert sorted(s.arch for s in macho_slices(lib)) == ["arm64", "x86_64"]
    slices = by_arch(lib)
    assert slices["arm64"] == codesign.SliceCheck(
        "arm64", True, True, "", slices["arm64"].directories
    )
    assert slices["x86_64"].signed is False and slices["x86_64"].valid is False
    assert slices["x86_64"].acceptable and slices["arm64"].acceptable
    assert slices["x86_64"].describe() == "x86_64 slice: not signed (allowed)"
    # Before: "not signed ... the file was changed after it was signed". Now: accepted,
    # and the arm64 slice's code directory was really checked, at its own offset.
    checked = codesign.verify(lib)
    assert [d.arch_offset for d in checked] == [slice_offset(lib, "arm64")] * len(checked)
    assert bnd.verify_signatures(stage) == 1
    report = bnd.signature_report(stage)
    assert [s.describe() for s in report["libwhisper.dylib"]] == [
        "x86_64 slice: not signed (allowed)",
        "arm64 slice: signed, valid",
    ]
    # A thin unsigned Intel file is fine on its own too.
    assert codesign.verify(macho_x86_tree / X86_UNSIGNED) == []


def test_tampered_arm64_slice_is_not_hidden_by_unsigned_x86(
    macho_tree: Path, macho_x86_tree: Path, lipo: str, tmp_path: Path
) -> None:
    stage = tmp_path / "bundle"
    stage.mkdir()
    lib = fat(lipo, stage / "libwhisper.dylib", macho_tree / ARM, macho_x86_tree / X86_UNSIGNED)
    flip(lib, slice_offset(lib, "arm64") + 5000)  # inside code page 1 of the arm64 slice
    slices = by_arch(lib)
    assert slices["arm64"].signed and not slices["arm64"].valid
    assert not slices["arm64"].acceptable
    assert slices["arm64"].reason.startswith("page 1 (offset ")
    assert slices["x86_64"].acceptable
    with pytest.raises(SignatureError) as info:
        codesign.verify(lib)
    err = info.value
    assert err.why.startswith("arm64 slice: page 1 (offset ") and "x86_64" not in err.why
    assert err.fix == codesign.CHANGED_FIX
    assert err.detail.splitlines() == [
        "x86_64 slice: not signed (allowed)",
        f"arm64 slice: bad signature ({slices['arm64'].reason})",
    ]
    # The bundle check says the same, per file and per slice.
    manifest = bnd.Manifest("k", {}, {}, "libwhisper.dylib", bnd.file_table(stage), {})
    (stage / bnd.MANIFEST).write_text(manifest.to_json())
    with pytest.raises(BundleError, match="bad signature") as bundle_info:
        bnd.verify_bundle(stage)
    assert bundle_info.value.why == err.why
    assert "libwhisper.dylib, arm64 slice: bad signature (page 1" in bundle_info.value.detail
    assert "libwhisper.dylib, x86_64 slice: not signed (allowed)" in bundle_info.value.detail


def test_signed_x86_slice_must_be_valid(
    macho_tree: Path, macho_x86_tree: Path, lipo: str, tmp_path: Path
) -> None:
    lib = fat(lipo, tmp_path / "both.dylib", macho_tree / ARM, macho_x86_tree / X86_SIGNED)
    assert {a: (s.signed, s.valid) for a, s in by_arch(lib).items()} == {
        "arm64": (True, True),
        "x86_64": (True, True),
    }
    assert len({d.arch_offset for d in codesign.verify(lib)}) == 2
    flip(lib, slice_offset(lib, "x86_64") + 5000)
    with pytest.raises(SignatureError, match=r"x86_64 slice: page 1 .* does not match") as info:
        codesign.verify(lib)
    assert "arm64 slice: signed, valid" in info.value.detail.splitlines()


def test_unsigned_arm64_slice_is_refused_as_unsigned(
    macho_tree: Path, macho_x86_tree: Path, lipo: str, tmp_path: Path
) -> None:
    thin = unsign(macho_tree / ARM, tmp_path / "arm-unsigned.dylib")
    lib = fat(lipo, tmp_path / "fat.dylib", thin, macho_x86_tree / X86_SIGNED)
    with pytest.raises(SignatureError) as info:
        codesign.verify(lib)
    assert info.value.why == (
        "arm64 slice: not signed (no LC_CODE_SIGNATURE), "
        "and macOS will not load unsigned arm64 code"
    )
    # Not "changed after it was signed": nothing was ever signed there.
    assert info.value.fix == codesign.UNSIGNED_FIX
    assert "arm64 slice: not signed (macOS will not load it)" in info.value.detail
    with pytest.raises(SignatureError, match="not signed") as thin_info:
        codesign.verify(thin)
    assert thin_info.value.why.startswith("not signed")  # a thin file names no slice
    # Unsigned arm64 and tampered x86_64 together: both named, and the fix is the re-sign one.
    x86 = tmp_path / "x86.dylib"
    shutil.copy(macho_x86_tree / X86_SIGNED, x86)
    flip(x86, 5000)
    both = fat(lipo, tmp_path / "both-bad.dylib", thin, x86)
    with pytest.raises(SignatureError) as both_info:
        codesign.verify(both)
    assert both_info.value.why.startswith("x86_64 slice: page 1")
    assert "; arm64 slice: not signed" in both_info.value.why
    assert both_info.value.fix == codesign.CHANGED_FIX
    # A bundle with two bad files names the first and counts the rest; the detail has all.
    stage = tmp_path / "stage"
    stage.mkdir()
    shutil.copy(both, stage / "a.dylib")
    shutil.copy(lib, stage / "b.dylib")
    with pytest.raises(SignatureError) as stage_info:
        bnd.verify_signatures(stage)
    assert stage_info.value.what == "bad code signature on a.dylib (and 1 more file(s))"
    assert len(stage_info.value.detail.splitlines()) == 4


def test_arch_names() -> None:
    assert arch_name(0x01000007, 3) == "x86_64"
    assert arch_name(0x0100000C, 0) == "arm64"
    assert arch_name(0x0100000C, 0x80000002) == "arm64e"  # ABI bits above the subtype
    assert arch_name(0x0200000C) == "arm64_32"
    assert arch_name(18) == "cpu 0x12"
    assert "arm64e" in codesign.MUST_SIGN and "x86_64" not in codesign.MUST_SIGN


# --- run paths per slice --------------------------------------------------------------------


def rpaths_by_arch(path: Path) -> dict[str, list[str]]:
    return {s.arch: list(s.rpaths) for s in macho_slices(path)}


def test_relink_adds_the_rpath_to_the_slice_that_lacks_it(
    macho_tree: Path, macho_x86_tree: Path, lipo: str, name_tool: str, tmp_path: Path
) -> None:
    x86 = tmp_path / "x86.dylib"
    shutil.copy(macho_x86_tree / X86_UNSIGNED, x86)
    subprocess.run([name_tool, "-add_rpath", "@loader_path", str(x86)], check=True)
    stage = tmp_path / "stage"
    stage.mkdir()
    lib = fat(lipo, stage / "libwhisper.dylib", macho_tree / ARM, x86)
    assert rpaths_by_arch(lib) == {"x86_64": ["@loader_path"], "arm64": []}
    # One edit of the whole file fails: the x86_64 slice would get a duplicate LC_RPATH.
    naive = subprocess.run(
        [name_tool, "-add_rpath", "@loader_path", str(lib)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert naive.returncode != 0 and "duplicate" in naive.stderr
    plan = bnd.macho_relink_plan(stage, bnd.Layout())
    rpath_steps = [c for c in plan if c[0] != "install_name_tool" or c[1] == "-add_rpath"]
    x86_thin, arm_thin = (
        str(stage / ".libwhisper.dylib.x86_64"),
        str(stage / ".libwhisper.dylib.arm64"),
    )
    assert rpath_steps == [
        ["lipo", str(lib), "-thin", "x86_64", "-output", x86_thin],
        ["lipo", str(lib), "-thin", "arm64", "-output", arm_thin],
        ["install_name_tool", "-add_rpath", "@loader_path", arm_thin],
        ["lipo", "-create", x86_thin, arm_thin, "-output", str(lib)],
        ["rm", "-f", x86_thin, arm_thin],
    ]
    apply(plan, lipo, name_tool)
    assert rpaths_by_arch(lib) == {"x86_64": ["@loader_path"], "arm64": ["@loader_path"]}
    assert sorted(p.name for p in stage.iterdir()) == ["libwhisper.dylib"]
    assert bnd.macho_relink_plan(stage, bnd.Layout()) == []  # nothing left to do
    # LLVM re-signs the edited arm64 slice ad hoc; the Intel slice stays unsigned.
    assert {a: (s.signed, s.valid) for a, s in by_arch(lib).items()} == {
        "x86_64": (False, False),
        "arm64": (True, True),
    }


def test_relink_edits_a_fat_file_once_when_every_slice_lacks_the_rpath(
    macho_tree: Path, macho_x86_tree: Path, lipo: str, name_tool: str, tmp_path: Path
) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    lib = fat(lipo, stage / "libwhisper.dylib", macho_tree / ARM, macho_x86_tree / X86_SIGNED)
    plan = [c for c in bnd.macho_relink_plan(stage, bnd.Layout()) if c[1] == "-add_rpath"]
    assert plan == [["install_name_tool", "-add_rpath", "@loader_path", str(lib)]]
    apply(plan, lipo, name_tool)
    assert rpaths_by_arch(lib) == {"x86_64": ["@loader_path"], "arm64": ["@loader_path"]}


# --- which run path each layout needs -------------------------------------------------------


def test_layout_rpath_defaults_and_refusals() -> None:
    assert Config().bundle.rpath is None
    assert bnd.Layout().exe_rpath == "@loader_path"
    assert bnd.Layout("flat", "").exe_rpath == "@loader_path"  # rpath = "" in TOML: unset
    assert bnd.Layout("macos-app").exe_rpath == "@loader_path/../Frameworks"
    assert bnd.Layout("flat", "@executable_path").exe_rpath == "@executable_path"
    assert bnd.Layout("flat", "@loader_path/.").exe_rpath == "@loader_path/."
    assert bnd.Layout("macos-app", "@executable_path/../Frameworks").lib_dir == "Frameworks"
    with pytest.raises(ConfigError) as info:
        bnd.Layout("flat", "@loader_path/../Frameworks")
    assert (
        info.value.why
        == "the libraries sit beside the executable, and that run path leads elsewhere"
    )
    assert "Remove bundle.rpath, or set it to '@loader_path'" in info.value.fix
    with pytest.raises(ConfigError, match=r"sit in Frameworks/, and .* leads elsewhere") as app:
        bnd.Layout("macos-app", "@loader_path")
    assert "'@loader_path/../Frameworks'" in app.value.fix
    with pytest.raises(ConfigError, match="is not relative to it"):
        bnd.Layout("macos-app", "/usr/local/lib")


def dyld_misses(stage: Path) -> list[str]:
    """Every ``@rpath/`` load, per file and slice, that the file's own run paths do not
    lead to a file in ``stage`` (dyld's lookup for a bundle of leaf libraries)."""
    misses = []
    for path in sorted(stage.rglob("*")):
        if not path.is_file():
            continue
        for header in MachO(str(path)).headers:
            rpaths = [
                data.split(b"\0", 1)[0].decode()
                for load, _c, data in header.commands
                if load.cmd == mach_o.LC_RPATH
            ]
            names = [
                data.split(b"\0", 1)[0].decode()
                for load, _c, data in header.commands
                if load.cmd == mach_o.LC_LOAD_DYLIB
            ]
            dirs = [
                path.parent / rp.replace("@loader_path", ".", 1)
                for rp in rpaths
                if rp.startswith("@loader_path")
            ]
            for name in names:
                if not name.startswith("@rpath/"):
                    continue
                if not any((d / name[len("@rpath/") :]).resolve().is_file() for d in dirs):
                    misses.append(f"{path.relative_to(stage)}: {name} via {rpaths}")
    return misses


@pytest.mark.parametrize(
    ("kind", "exe_at", "libs_at", "rpath"),
    [
        ("flat", ".", ".", "@loader_path"),
        ("macos-app", "MacOS", "Frameworks", "@loader_path/../Frameworks"),
    ],
)
def test_each_layout_gets_the_rpath_that_reaches_its_libraries(
    macho_tree: Path,
    lipo: str,
    name_tool: str,
    tmp_path: Path,
    kind: str,
    exe_at: str,
    libs_at: str,
    rpath: str,
) -> None:
    stage = tmp_path / "stage"
    (stage / exe_at).mkdir(parents=True, exist_ok=True)
    (stage / libs_at).mkdir(parents=True, exist_ok=True)
    exe = stage / exe_at / "llama-server"
    shutil.copy(macho_tree / EXE, exe)
    for lib in (macho_tree / "pywhispercpp/.dylibs").iterdir():
        shutil.copy(lib, stage / libs_at / lib.name)
    layout = bnd.Layout(kind)
    plan = bnd.macho_relink_plan(stage, layout)
    exe_rpaths = [c[2] for c in plan if c[1] == "-add_rpath" and c[-1] == str(exe)]
    assert exe_rpaths == [rpath]
    apply(plan, lipo, name_tool)
    assert dyld_misses(stage) == []
    assert rpaths_by_arch(exe) == {"arm64": [rpath]}
    assert bnd.verify_signatures(stage) == 7  # LLVM re-signed every edited arm64 file
    # The other layout's run path leaves the executable's libraries unreachable.
    wrong = "@loader_path/../Frameworks" if kind == "flat" else "@loader_path"
    subprocess.run([name_tool, "-rpath", rpath, wrong, str(exe)], check=True)
    assert dyld_misses(stage) and all(
        m.startswith(str(exe.relative_to(stage))) for m in dyld_misses(stage)
    )


def test_llvm_tool_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian names the tools llvm-lipo-NN: the newest is taken; a missing one fails loudly."""
    for version in ("9", "17", "x"):
        tool = tmp_path / f"llvm-fake-tool-{version}"
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert llvm_tool("llvm-fake-tool") == str(tmp_path / "llvm-fake-tool-17")
    with pytest.raises(pytest.fail.Exception, match="install Debian's llvm package"):
        llvm_tool("llvm-no-such-tool")
    assert Path(llvm_tool("llvm-lipo")).name.startswith("llvm-lipo")  # /usr/lib/llvm-NN/bin
