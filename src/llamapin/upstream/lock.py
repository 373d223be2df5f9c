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
from llamapin.paths import inside_root
from llamapin.pin import Pin, build_number, write_locators, write_lock
from llamapin.upstream.assets import (
    assets_for,
    missing_error,
    needs,
    resolve_all,
)
from llamapin.upstream.feeds import Build, build_from_release
from llamapin.upstream.github import NotFoundError
from llamapin.upstream.service import Upstream

__all__ = ["Locked", "lock_keys", "locked_dict", "locked_text", "missing_error", "run_lock"]


@dataclass(frozen=True)
class Locked:
    """What ``lock`` wrote."""

    pin: Pin
    lock: str
    notes: list[str] = field(default_factory=list)
    locators: list[str] | None = None  # files rewritten with --write; None without it


def lock_keys(cfg: Config, platforms: list[str]) -> list[str]:
    """The asset keys the engine sources install from, for every target and the named
    platforms."""
    return [n.key for n in needs(cfg, platforms, lock=True)]


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


def resolve_pin(up: Upstream, tag: str, platforms: list[str], current: Pin | None) -> Locked:
    """The pin of build ``tag``: every target's required asset resolved (else one error
    saying which and what exists), other keys the current lock carries re-resolved or
    noted."""
    cfg = up.cfg
    required = needs(cfg, platforms, lock=True)
    names = {n.key for n in required}
    wanted = [k for k in sorted(current.assets) if k not in names] if current else []
    need_release = any(assets_for(n.key).from_release for n in required)
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
    assets, missing, dropped = resolve_all(required, wanted, build, cfg, lookup)
    for need in required:
        if need.key in missing:
            raise missing_error(need.key, missing[need.key], build, need.cfg, lookup)
    notes = [f"dropped asset '{k}' the old lock carried: {why}" for k, why in dropped.items()]
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
