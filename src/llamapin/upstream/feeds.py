"""Feeds: where upstream builds are noticed. One small interface, two feeds.

``Feed.builds(after)`` lists the builds newer than a build number, newest first, as plain
values (:class:`Build`, each with the files it offers as :class:`FeedAsset`). GitHub's
releases and a package index's sdists are the two feeds; the parsing of what each one
answers is pure and tested on its own.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llamapin.fetch import IndexFile
from llamapin.pin import BUILD_RE, COMMIT_RE, SHA256_RE
from llamapin.upstream import github_models as api
from llamapin.upstream.github import GitHub


@dataclass(frozen=True)
class FeedAsset:
    """One file a feed offers for a build; ``sha256`` is None when the feed vouches for none."""

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


# --- the interface ---------------------------------------------------------------------------


class Feed(ABC):
    """A source of builds."""

    kind: str
    # Whether its builds are git tags on the upstream repository, whose commits can be
    # checked (the pinned tag must not have moved; a candidate's tag and release agree).
    tagged: bool

    @abstractmethod
    def builds(self, after: int) -> list[Build]:
        """The builds newer than build number ``after``, newest first."""


class GitHubFeed(Feed):
    """The upstream repository's releases."""

    kind = "github"
    tagged = True

    def __init__(self, gh: GitHub, max_pages: int) -> None:
        self.gh, self.max_pages = gh, max_pages

    def builds(self, after: int) -> list[Build]:
        return github_builds(self.gh, after, self.max_pages)


class IndexFeed(Feed):
    """A package index's source archives (one per build)."""

    kind = "index"
    tagged = False

    def __init__(self, files: Callable[[], list[IndexFile]]) -> None:
        self.files = files

    def builds(self, after: int) -> list[Build]:
        return index_builds(self.files(), after)
