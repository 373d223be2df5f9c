"""check, lock and bump of one config with three targets (linux-x64, macos-arm64 and
windows-x64) against the local GitHub, with a local bare repository as the app's remote.

Real: the Linux engines are ELF programs compiled here (tests/integration/test_sec_bump.py's
``engine_zip``); the macOS archive holds a macOS wheel's real arm64 Mach-O files and the
Windows zip a Windows wheel's real DLLs (tests/release_archives.py), all served as release
assets with their digests by the fake. The Linux target is gated (its engine does not start:
a failing gate, a draft PR); the Windows one is ensured on this host and its closure
compared; the macOS one cannot be finished here (its LLVM directory is empty) and is
reported as not ensured. A digest that does not match, on any target, still fails the bump.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from llamapin.engine.sources import cudart_asset_name, windows_asset_name
from llamapin.pin import Asset, Pin, read_lock, write_lock
from tests.conftest import COMMIT_10068, CliResult
from tests.fakes.github import FakeGitHub
from tests.gitremote import git, publish
from tests.integration.test_sec_bump import engine_zip
from tests.integration.test_upstream import (
    APP,
    LATER,
    LLAMA,
    PUBLISHED,
    SUBJECTS,
    commit_of,
    error_line,
    upstream_cfg,
    when,
    writes,
)
from tests.release_archives import macos_release_zip, zip_tree
from tests.unit import test_pe_closure
from tests.unit.test_pe_closure import release_tree

win_files = test_pe_closure.win_files  # the real Windows DLLs, a session fixture

pytestmark = pytest.mark.engine  # the gate loads the real model

VARIANT = "cuda-12.4"
Assets = list[tuple[str, bytes, bool | str]]


def archives(tmp: Path, macho_tree: Path, win: dict[str, bytes]) -> dict[int, Assets]:
    """Every build's release assets: a Linux zip with a real ELF engine, the macOS zip, the
    Windows CUDA zip and its runtime (the same real files in each build)."""
    tools = tmp / "tools"
    tools.mkdir()
    mac = macos_release_zip(macho_tree, tmp / "mac.zip").read_bytes()
    tree = release_tree(win, tmp / "win-tree")
    windows = zip_tree(tree, tmp / "win.zip").read_bytes()
    runtime_tree = tmp / "cudart"
    runtime_tree.mkdir()
    (runtime_tree / "cudart64_12.dll").write_bytes(win["ggml.dll"])
    runtime = zip_tree(runtime_tree, tmp / "cudart.zip").read_bytes()
    out: dict[int, Assets] = {}
    for n in (10068, 10078, 10088, 10091):
        linux = engine_zip(tools, n, tmp / "runs.log", tmp / "never", tamper=False)
        tag = f"b{n}"
        out[n] = [
            (f"llama-{tag}-bin-ubuntu-x64.zip", linux, True),
            (f"llama-{tag}-bin-macos-arm64.zip", mac, True),
            (windows_asset_name(tag, VARIANT, "windows-x64"), windows, True),
            (windows_asset_name(tag, "cpu", "windows-x64"), b"the cpu build", True),
            (cudart_asset_name(VARIANT, "windows-x64"), runtime, True),
        ]
    return out


def pin_of(assets: Assets, number: int) -> Pin:
    keys = ["linux-x64", "macos-arm64", "windows-x64", None, "windows-x64-cudart"]
    return Pin(
        f"b{number}",
        commit_of(number),
        {
            key: Asset(name, hashlib.sha256(data).hexdigest(), len(data))
            for key, (name, data, _) in zip(keys, assets, strict=True)
            if key is not None
        },
    )


@pytest.fixture
def app(
    tmp_path: Path,
    github: FakeGitHub,
    macho_tree: Path,
    win_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    built = archives(tmp_path, macho_tree, win_files)
    (tmp_path / "no-llvm").mkdir()
    config = {
        "cache_dir": str(tmp_path / "cache"),
        "engine": {
            "source": "release",
            "base_url": github.url,
            "package": "llamapin-no-such-package",
        },
        "upstream": upstream_cfg(github),
        "forge": {"api_url": github.api, "repo": APP, "labels": []},
        "targets": {
            "linux-x64": {"platform": "linux-x64", "bundle": {"dir": ".llamapin/linux"}},
            "macos-arm64": {
                "platform": "macos-arm64",
                "gated": False,
                "bundle": {"dir": ".llamapin/macos", "llvm_dir": str(tmp_path / "no-llvm")},
            },
            "windows-x64": {
                "platform": "windows-x64",
                "gated": False,
                "engine": {"windows_variant": VARIANT},
                "bundle": {"dir": ".llamapin/windows"},
            },
        },
    }
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(bare))
    root = tmp_path / "app"
    root.mkdir()
    write_lock(root / "llamapin.lock", pin_of(built[10068], 10068))
    (root / "llamapin.toml").write_text(tomli_w.dumps(config))
    (root / ".gitignore").write_text(".llamapin/\n")
    publish(root, bare, github, APP)
    for n in (10068, 10088):
        github.add_release(LLAMA, f"b{n}", commit_of(n), when(PUBLISHED[n]), built[n])
        github.add_compare(LLAMA, COMMIT_10068, commit_of(n), SUBJECTS, ["src/llama.cpp"])
    # b10078 lacks the macOS archive
    no_mac = [a for a in built[10078] if "macos" not in a[0]]
    github.add_release(LLAMA, "b10078", commit_of(10078), when(PUBLISHED[10078]), no_mac)
    return {"root": root, "bare": bare, "built": built}


def run(run_cli: Any, root: Path, *args: str) -> CliResult:
    res: CliResult = run_cli("--root", str(root), *args)
    return res


def test_check_lock_and_bump_pin_every_target(
    app: dict[str, Any], github: FakeGitHub, run_cli: Any
) -> None:
    root, bare, built = app["root"], app["bare"], app["built"]
    # check: the build without the macOS archive is no candidate, and says which target
    res = run(run_cli, root, "check", "--json", "--now", LATER)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["decision"] == "bump" and out["target"] == "b10088", out
    reasons = {c["build"]: c["reasons"] for c in out["candidates"]}
    assert reasons["b10078"][1:] == [
        "target macos-arm64: release b10078 has no asset for macos-arm64"
    ]
    # lock: every target's assets, the Windows ones by their exact names
    res = run(run_cli, root, "lock", "b10078")
    assert res.code == 2
    assert error_line(res).startswith(
        "error: target macos-arm64: release b10078 has no asset for macos-arm64: "
        "upstream.asset_patterns.macos-arm64 is "
    )
    assert read_lock(root / "llamapin.lock") == pin_of(built[10068], 10068)  # not rewritten

    # bump: every target pinned; the Linux one gated, the Windows one ensured, the macOS
    # one reported as not ensured
    res = run(run_cli, root, "bump", "--now", LATER, "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["action"] == "opened" and result["verdict"] == "fail" and result["draft"]
    lock = git(bare, "show", "refs/heads/llamapin/bump-b10088:llamapin.lock")
    (root / "proposed.lock").write_text(lock)
    want = pin_of(built[10088], 10088)
    assert read_lock(root / "proposed.lock") == want
    body = github.pr(APP, result["pr"])["body"]
    (root.parent / "pr-body.md").write_text(body)  # for a person reading the test's output
    old = pin_of(built[10068], 10068)
    for target, key in (
        ("linux-x64", "linux-x64"),
        ("macos-arm64", "macos-arm64"),
        ("windows-x64", "windows-x64"),
        ("windows-x64", "windows-x64-cudart"),
    ):
        row = next(x for x in body.splitlines() if x.startswith(f"| `{target}` | `{key}` |"))
        new_sha, old_sha = want.assets[key].sha256, old.assets[key].sha256
        if new_sha == old_sha:
            assert row.endswith(f"| `{new_sha}` (unchanged) |"), row
        else:
            assert row.endswith(f"| `{old_sha}` -> `{new_sha}` |"), row
    assert want.assets["windows-x64"].name == "llama-b10088-bin-win-cuda-12.4-x64.zip"
    sections = body.split("### Shared libraries\n\n", 1)[1].split("\n\n### Gate report", 1)[0]
    linux, mac, windows = sections.split("\n\n#### ")
    assert linux.startswith("#### `linux-x64` (linux-x64) (gated)\n\n")
    assert mac.startswith(
        "`macos-arm64` (macos-arm64)\n\nNot ensured on this host: `cannot relink a Mach-O "
        "bundle on Linux:"
    ), mac
    assert "llvm-install-name-tool and llvm-lipo not found in bundle.llvm_dir" in mac
    assert windows == (
        "`windows-x64` (windows-x64)\n\n"
        "The shared-library closure is unchanged: nothing to re-bundle or re-sign."
    )
    manifest = json.loads((root / ".llamapin/windows/llamapin-manifest.json").read_text())
    assert manifest["pin"]["build"] == "b10068"  # the Windows baseline, ensured here
    assert manifest["source"]["asset"] == "llama-b10068-bin-win-cuda-12.4-x64.zip"
    # the CUDA runtime came with it (merged, then pruned: nothing here imports it)
    assert "+ cudart-llama-bin-win-cuda-12.4-x64.zip sha256 " in manifest["source"]["detail"]
    assert not (root / ".llamapin/macos/llamapin-manifest.json").exists()

    # a digest that does not match, on a target that is not gated, fails the whole bump
    win_name = windows_asset_name("b10091", VARIANT, "windows-x64")
    claimed = "sha256:" + hashlib.sha256(b"the bytes upstream vouched for").hexdigest()
    bad: Assets = [
        (name, b"other bytes", claimed) if name == win_name else (name, data, True)
        for name, data, _ in built[10091]
    ]
    github.add_release(LLAMA, "b10091", commit_of(10091), when(PUBLISHED[10091]), bad)
    github.add_compare(LLAMA, COMMIT_10068, commit_of(10091), SUBJECTS, ["src/llama.cpp"])
    before, refs = len(writes(github)), git(bare, "for-each-ref")
    res = run(run_cli, root, "bump", "--now", "2026-08-05T00:00:00Z")
    assert res.code == 2
    last = [x for x in res.err.splitlines() if x.startswith("error: ")][-1]  # after the gate's
    assert last.startswith(f"error: sha256 mismatch for {win_name}: expected {claimed[7:]}, got ")
    assert len(writes(github)) == before and git(bare, "for-each-ref") == refs
