"""examples/thuki end to end: the committed example (one config, three targets) copied into a
project and driven through the CLI, target by target, on real files.

- linux-x64 (the CI target): the real b10068 engine from the package-index wheel, ensure,
  verify, drift against ``tauri.linux.conf.json`` and the gate with the real model.
- macos-arm64 (the app): an upstream-shaped macOS release zip of real signed arm64 Mach-O files
  (tests/release_archives.py), relinked into the app layout with LLVM's tools and re-signed;
  verify reads the minimum macOS from ``tauri.conf.json``; drift against Thuki's own
  ``bundle.macOS.frameworks`` list.
- windows-x64 (optional, not gated): an upstream-shaped Windows release zip of real DLLs,
  ensure, verify, drift against ``tauri.windows.conf.json``; the gate refuses the target.

Only what a test machine must change is changed in the copy: the cache, the release server
(a local one on 127.0.0.1) and the lock (the served archives' hashes).
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from llamapin.engine import codesign
from llamapin.engine.bundle import MANIFEST
from llamapin.pin import Pin, write_lock
from tests.conftest import COMMIT_10068, CliResult, FileServer, llvm_tool
from tests.integration.test_ensure import CACHE, WHEEL_PIN
from tests.release_archives import serve_release, upstream_archives
from tests.unit import test_pe_closure
from tests.unit.test_pe_closure import EXPECTED_LIBS

pytestmark = pytest.mark.engine

win_files = test_pe_closure.win_files  # the real Windows DLLs, a session fixture

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "thuki"
TAG = "b10068"
LINUX_DIR = "src-tauri/binaries/linux"
MAC_DIR = "src-tauri/binaries/macos"
WIN_DIR = "src-tauri/binaries/windows"
# Thuki's own list: what upstream's macOS build of this era loads (tauri.conf.json).
THUKI_DYLIBS = [
    "libggml-base.0.dylib",
    "libggml-blas.0.dylib",
    "libggml-cpu.0.dylib",
    "libggml-metal.0.dylib",
    "libggml-rpc.0.dylib",
    "libggml.0.dylib",
    "libllama-common.0.dylib",
    "libllama-server-impl.dylib",
    "libllama.0.dylib",
    "libmtmd.0.dylib",
]


def copy_example(dest: Path, base_url: str, **shared: dict[str, Any]) -> Path:
    """The example as committed, its config pointed at this machine's cache and at release
    downloads from ``base_url``; ``shared`` is merged into its shared sections."""
    shutil.copytree(EXAMPLE, dest)
    assert not (dest / "llamapin.lock").exists()  # the example commits no lock (see README)
    conf = tomllib.loads((dest / "llamapin.toml").read_text())
    conf["cache_dir"] = CACHE
    for section, values in shared.items():
        conf.setdefault(section, {}).update(values)
    for name in ("macos-arm64", "windows-x64"):
        conf["targets"][name]["engine"]["base_url"] = base_url
    (dest / "llamapin.toml").write_text(tomli_w.dumps(conf))
    return dest


def thuki(tmp_path: Path, served: FileServer, macho_tree: Path, win: dict[str, bytes]) -> Path:
    """The example as a project, with the lock for the archives served on 127.0.0.1."""
    llvm_tool("llvm-install-name-tool")  # a missing LLVM fails here on Linux, not later
    # engine start and each request: ten minutes, not 60 s (a loaded shared CI machine)
    slow_machine = {"health_timeout_s": 600.0, "request_timeout_s": 600.0}
    root = copy_example(tmp_path / "thuki", served.url, gate=slow_machine)
    mac, windows = upstream_archives(tmp_path, macho_tree, win, TAG)
    assets = {
        "macos-arm64": serve_release(served, mac, TAG),
        "windows-x64": serve_release(served, windows, TAG),
        **WHEEL_PIN.assets,
    }
    write_lock(root / "llamapin.lock", Pin(TAG, COMMIT_10068, assets))
    return root


def manifest(root: Path, bundle: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / bundle / MANIFEST).read_text())
    return data


def set_list(root: Path, file: str, key_path: str, names: list[str]) -> None:
    """Rewrite the list at ``key_path`` in the project's JSON ``file``."""
    path = root / "src-tauri" / file
    data = json.loads(path.read_text())
    node = data
    *parents, last = key_path.split(".")
    for part in parents:
        node = node[part]
    node[last] = names
    path.write_text(json.dumps(data, indent=2))


@pytest.fixture
def app(tmp_path: Path, served: FileServer, macho_tree: Path, win_files: dict[str, bytes]) -> Path:
    return thuki(tmp_path, served, macho_tree, win_files)


def test_linux_target_ensure_verify_drift_gate(
    app: Path, run_cli: Any, model: Path, tmp_path: Path
) -> None:
    # No --target: on this (Linux) host the linux-x64 target is the default.
    res: CliResult = run_cli("--root", str(app), "ensure", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["binary"] == str(app / LINUX_DIR / "llama-server")
    found = manifest(app, LINUX_DIR)
    assert found["source"]["platform"] == "linux-x64"
    assert found["pin"]["build"] == TAG and found["pin"]["commit"] == COMMIT_10068
    assert found["provenance"]["checked"] is True  # it ran here: --version matched the pin
    assert not (app / MAC_DIR).exists() and not (app / WIN_DIR).exists()
    res = run_cli("--root", str(app), "ensure", "--target", "linux-x64")
    assert res.code == 0 and "ok (no-op)" in res.out

    res = run_cli("--root", str(app), "verify", "--target", "linux-x64")
    assert res.code == 0, res.err
    assert f"files in {app / LINUX_DIR} match the manifest (pin {TAG})" in res.out
    # The example's Linux list is exactly this build's closure.
    res = run_cli("--root", str(app), "drift")
    assert res.code == 0, res.err
    assert "ok: 10 listed libraries match the closure" in res.out
    libs = found["closure"]["libs"]
    set_list(app, "tauri.linux.conf.json", "bundle.resources", libs[1:])
    res = run_cli("--root", str(app), "drift", "--target", "linux-x64")
    assert res.code == 1 and f"needed but not listed: {libs[0]}" in res.out

    report = tmp_path / "gate.json"
    res = run_cli("--root", str(app), "gate", "--target", "linux-x64", "--report-json", str(report))
    assert res.code == 0, res.err
    assert "gate: PASS" in res.err
    verdict = json.loads(report.read_text())
    assert verdict["outcome"] == "pass"
    assert verdict["prompts"] and all(p["passed"] for p in verdict["prompts"])


def test_macos_target_relinks_verifies_and_drifts(app: Path, run_cli: Any) -> None:
    res: CliResult = run_cli("--root", str(app), "ensure", "--target", "macos-arm64", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    found = manifest(app, MAC_DIR)
    libs = found["closure"]["libs"]
    assert found["source"]["platform"] == "macos-arm64"
    assert found["binary"] == "MacOS/llama-server"
    assert set(found["files"]) == {"MacOS/llama-server", *(f"Frameworks/{n}" for n in libs)}
    assert len(libs) == 6 and all(n.endswith(".dylib") for n in libs)
    # Relinked and re-signed with LLVM's tools, all the way (no step left for a Mac).
    assert sum(step.startswith("llvm-install-name-tool") for step in out["relinked"]) >= 7
    assert out["signatures"] == 7
    for rel in found["files"]:
        (check,) = codesign.check(app / MAC_DIR / rel)
        assert (check.arch, check.signed, check.valid) == ("arm64", True, True), rel
    assert found["provenance"]["checked"] is False  # a Mach-O engine does not run here
    assert not (app / LINUX_DIR).exists()

    # verify reads the app's floor from tauri.conf.json (Thuki declares 13.4).
    res = run_cli("--root", str(app), "verify", "--target", "macos-arm64")
    assert res.code == 0, res.err
    assert (
        "macOS: the bundle's files need macOS 11.0, the app declares 13.4 "
        "(bundle.macOS.minimumSystemVersion in tauri.conf.json)" in res.out
    )

    # Thuki's list names upstream's dylibs; this stand-in build loads others: drift names
    # every one of both, and fails.
    res = run_cli("--root", str(app), "drift", "--target", "macos-arm64", "--json")
    assert res.code == 1
    data = json.loads(res.out)
    assert data["needed"] == sorted(libs) and data["extra"] == THUKI_DYLIBS
    assert data["error"]["what"] == "the bundle's closure and bundle.macOS.frameworks differ"
    # The list written as drift says: it passes.
    listed = [f"binaries/macos/Frameworks/{n}" for n in libs]
    set_list(app, "tauri.conf.json", "bundle.macOS.frameworks", listed)
    res = run_cli("--root", str(app), "drift", "--target", "macos-arm64")
    assert res.code == 0 and "ok: 6 listed libraries match the closure" in res.out

    res = run_cli("--root", str(app), "ensure", "--target", "macos-arm64")
    assert res.code == 0 and "ok (no-op)" in res.out
    # One changed byte in a bundled dylib: verify names it.
    victim = app / MAC_DIR / "Frameworks" / libs[0]
    data_bytes = bytearray(victim.read_bytes())
    data_bytes[20000] ^= 0xFF
    victim.write_bytes(bytes(data_bytes))
    res = run_cli("--root", str(app), "verify", "--target", "macos-arm64")
    assert res.code == 1 and f"changed: Frameworks/{libs[0]}" in res.err


def test_windows_target_is_installed_and_checked_not_gated(app: Path, run_cli: Any) -> None:
    res: CliResult = run_cli("--root", str(app), "ensure", "--target", "windows-x64", "--json")
    assert res.code == 0, res.err
    found = manifest(app, WIN_DIR)
    assert found["source"]["platform"] == "windows-x64"
    assert found["closure"]["format"] == "pe"
    assert found["closure"]["libs"] == sorted(EXPECTED_LIBS)
    assert set(found["files"]) == {"llama-server.exe", *EXPECTED_LIBS}
    assert found["provenance"]["checked"] is False  # a PE engine does not run here
    res = run_cli("--root", str(app), "ensure", "--target", "windows-x64")
    assert res.code == 0 and "ok (no-op)" in res.out

    res = run_cli("--root", str(app), "verify", "--target", "windows-x64")
    assert res.code == 0, res.err
    assert "Authenticode: 2 of 8 PE files signed" in res.out  # Microsoft's two runtime DLLs
    # The example's Windows list (tauri.windows.conf.json) names this build's DLLs, in the
    # case it likes: Windows compares names in any case, and so does drift.
    res = run_cli("--root", str(app), "drift", "--target", "windows-x64")
    assert res.code == 0, res.err
    assert "ok: 7 listed libraries match the closure" in res.out
    set_list(app, "tauri.windows.conf.json", "bundle.resources", ["binaries/windows/ggml.dll"])
    res = run_cli("--root", str(app), "drift", "--target", "windows-x64")
    assert res.code == 1 and "needed but not listed: llama.dll" in res.out

    # A Windows target is not gated: the gate refuses it, says why and what CI runs instead.
    res = run_cli("--root", str(app), "gate", "--target", "windows-x64")
    assert res.code == 2
    assert "target windows-x64 is not gated: a Windows target is not gated" in res.err
    assert "CI runs ensure, verify and drift for it, and no gate" in res.err


def test_every_target_side_by_side_in_one_checkout(app: Path, run_cli: Any) -> None:
    """One lock, three bundles: each target installs its own asset into its own directory,
    and a change to one bundle fails that target's verify only."""
    for target in ("macos-arm64", "linux-x64", "windows-x64"):
        res = run_cli("--root", str(app), "ensure", "--target", target)
        assert res.code == 0, f"{target}: {res.err}"
    formats = {d: manifest(app, d)["closure"]["format"] for d in (MAC_DIR, LINUX_DIR, WIN_DIR)}
    assert formats == {MAC_DIR: "macho", LINUX_DIR: "elf", WIN_DIR: "pe"}
    assert {manifest(app, d)["pin"]["commit"] for d in formats} == {COMMIT_10068}
    (app / WIN_DIR / "ggml.dll").write_bytes(b"MZ not the pinned file")
    codes = {
        t: run_cli("--root", str(app), "verify", "--target", t).code
        for t in ("macos-arm64", "linux-x64", "windows-x64")
    }
    assert codes == {"macos-arm64": 0, "linux-x64": 0, "windows-x64": 1}
    # Without --target on this host: the Linux bundle.
    res = run_cli("--root", str(app), "verify", "--json")
    assert res.code == 0 and json.loads(res.out)["bundle"] == str(app / LINUX_DIR)
    assert (app / MAC_DIR / "Frameworks").is_dir()
