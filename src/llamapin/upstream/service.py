"""Everything check, bump and lock read from upstream: the I/O around the pure rules.

One :class:`Upstream` per command, for the view of the config the command acts on; the
assets it resolves are every target's (``cfg.shared.views()``), each with its own
target's engine settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llamapin.config import Config
from llamapin.engine.sources import source_of
from llamapin.errors import ForgeError, IntegrityError, PackageIndexError
from llamapin.fetch import Cache, IndexFile, download, index_files
from llamapin.pin import Pin
from llamapin.upstream import archs as arch_table
from llamapin.upstream import github_models as api
from llamapin.upstream.assets import Lookup, Need, needs, resolve_all, sdist_file
from llamapin.upstream.changes import Relevance, backends_for, group_commits, relevance, tree_diff
from llamapin.upstream.feeds import Build, Feed, GitHubFeed, IndexFeed
from llamapin.upstream.github import GitHub
from llamapin.upstream.render import Summary


@dataclass
class Upstream:
    """Everything check and bump read from upstream, for one project config."""

    cfg: Config
    pin: Pin
    http: httpx.Client
    cache: Cache
    gh: GitHub
    say: Callable[[str], None]
    _index: dict[tuple[str, str], list[IndexFile]] = field(default_factory=dict)

    @property
    def views(self) -> list[Config]:
        """Every target's view of the config (the config itself without targets)."""
        return self.cfg.shared.views()

    def files(self, package: str, index_url: str | None = None) -> list[IndexFile]:
        url = index_url or self.cfg.engine.index_url
        if (url, package) not in self._index:
            try:
                self._index[url, package] = index_files(url, package, self.http)
            except PackageIndexError:
                self._index[url, package] = []
        return self._index[url, package]

    @property
    def feed(self) -> Feed:
        """The configured feed (``upstream.feed``)."""
        feeds: dict[str, Callable[[], Feed]] = {
            "github": lambda: GitHubFeed(self.gh, self.cfg.upstream.max_pages),
            "index": lambda: IndexFeed(lambda: self.files(self.cfg.engine.source_package)),
        }
        return feeds[self.cfg.upstream.feed]()

    def lookup(self, build: Build) -> Lookup:
        """The build's release assets, and the index files of every package a target
        installs from."""
        wheels: list[IndexFile] = []
        sdists: list[IndexFile] = []
        seen: set[tuple[str, str]] = set()
        for view in [self.cfg, *self.views]:
            eng = view.engine
            for package, out in ((eng.package, wheels), (eng.source_package, sdists)):
                if (eng.index_url, package) not in seen:
                    seen.add((eng.index_url, package))
                    out.extend(self.files(package, eng.index_url))
        return Lookup({a.name: a for a in build.assets}, wheels, sdists)

    def keys(self) -> tuple[list[Need], list[str]]:
        """(required, wanted): the keys every target's engine source needs; other keys the
        pin carries."""
        required = needs(self.cfg)
        names = {n.key for n in required}
        return required, [k for k in sorted(self.pin.assets) if k not in names]

    def missing(self, build: Build) -> list[str]:
        """Why a build cannot be adopted: each target's asset that does not resolve."""
        required, _ = self.keys()
        return list(resolve_all(required, [], build, self.cfg, self.lookup(build))[1].values())

    def sdist(self, number: int) -> Path | None:
        """The cached source archive of a build, or None when the index has none."""
        eng = self.cfg.engine
        f = sdist_file(self.files(eng.source_package, eng.index_url), self.cfg, number)
        if f is None:
            return None
        return download(f.url, f.sha256, self.cache, size=f.size, label=f.filename, http=self.http)

    def compare(self, base: str, head: str) -> api.Comparison:
        return api.get(self.gh, api.Comparison, f"repos/{{repo}}/compare/{base}...{head}")

    def backends(self) -> frozenset[str]:
        """The ggml backends the targets' builds compile, together."""
        out: frozenset[str] = frozenset()
        for view in self.views:
            eng = view.engine
            names = source_of(eng, view.ensure).backend_names(eng)
            out |= backends_for(
                view.upstream.backends, names, eng.resolved_platform(), eng.cmake_args
            )
        return out

    def relevance(self, build: Build) -> Relevance | None:
        backends = self.backends()
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
        """The pin a bump writes (every target's assets), and notes about assets that could
        not be carried over."""
        required, wanted = self.keys()
        # screening already proved the required ones resolve
        assets, missing, dropped = resolve_all(
            required, wanted, build, self.cfg, self.lookup(build)
        )
        notes = [f"dropped asset '{k}': {why}" for k, why in {**missing, **dropped}.items()]
        return Pin(build.tag, self.commit_of(build), assets), notes


def summarize(up: Upstream, target: Pin, rel: Relevance | None) -> Summary:
    """What changed between the pin and ``target`` upstream, read from the compare API and
    the two builds' sources."""
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
