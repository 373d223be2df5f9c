"""A GitHub answer with a missing or mistyped field ends `check` and `bump` in one line.

The fake GitHub serves real-shaped answers and ``tamper`` corrupts exactly one of them
(a release without ``tag_name``, an asset whose ``size`` is text, a ref without
``object.sha``, a pull request without ``number``...). The real CLI runs against it;
nothing here needs an engine (the release source and a package index that has
nothing keep every step before the gate).
The bump steps after the gate (open, update, supersede, status) run as functions
against the fake and a real bare git remote.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamapin.config import load_config
from llamapin.fetch import Cache, client
from llamapin.pin import Asset, Pin, lock_text
from llamapin.upstream import bump as bp
from llamapin.upstream.github import EtagStore, GitHub
from llamapin.upstream.service import Upstream, summarize
from tests.conftest import COMMIT_10068, CliResult
from tests.fakes.github import FakeGitHub
from tests.gitremote import git, publish
from tests.integration.test_ensure import project

LLAMA = "ggml-org/llama.cpp"
APP = "acme/app"
PIN = Pin("b10068", COMMIT_10068, {"linux-x64": Asset("llama-b10068-bin-ubuntu-x64.zip", "0" * 64)})
NEW = "b" * 40  # b10092's commit in these fixtures (stated, not real)
NOW = "2026-07-30T00:00:00Z"


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)


def sections(github: FakeGitHub) -> dict[str, Any]:
    return {
        # The fake has no package index: every lookup there finds nothing (a 404).
        "engine": {"source": "release", "platform": "linux-x64", "index_url": github.url + "/x"},
        "upstream": {"api_url": github.api, "html_url": github.url},
        "forge": {"api_url": github.api, "repo": APP},
    }


def upstream_fixtures(github: FakeGitHub) -> None:
    """The pinned release, and b10092 with a vouched-for asset and a relevant change."""
    day = datetime(2026, 7, 19, tzinfo=UTC)
    github.add_release(LLAMA, "b10068", COMMIT_10068, day)
    name = "llama-b10092-bin-ubuntu-x64.zip"
    github.add_release(LLAMA, "b10092", NEW, day + timedelta(days=4), [(name, b"zip", True)])
    github.add_compare(LLAMA, COMMIT_10068, NEW, ["server : a fix"], ["tools/server/server.cpp"])


def app(tmp_path: Path, github: FakeGitHub) -> tuple[Path, Path]:
    """A project whose remote is a local bare repository the fake knows as acme/app."""
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], check=True)
    # Its own cache: an ETag remembered by another test would turn a tampered answer
    # into a 304.
    root = project(tmp_path / "app", PIN, cache=str(tmp_path / "cache"), **sections(github))
    (root / ".gitignore").write_text(".llamapin/\n")
    publish(root, bare, github, APP)
    upstream_fixtures(github)
    return root, bare


def one_error(res: CliResult) -> str:
    """The run failed with exactly one error line and no traceback; that line."""
    assert res.code == 2, res.out + res.err
    lines = [x for x in res.err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in res.err, res.err
    return lines[0]


def writes(github: FakeGitHub) -> list[str]:
    return [c.line for c in github.calls if c.method != "GET"]


def edit(change: Any) -> Any:
    def apply(data: Any) -> Any:
        change(data)
        return data

    return apply


@pytest.mark.parametrize(
    ("method", "path", "change", "expected"),
    [
        (
            "GET",
            r"/git/ref/tags/b10068$",
            edit(lambda ref: ref["object"].pop("sha")),
            "error: a git ref in GitHub's answer has an unexpected shape: GET {api}/repos/"
            "ggml-org/llama.cpp/git/ref/tags/b10068: field object.sha is missing. ",
        ),
        (
            "GET",
            r"/releases$",
            edit(lambda items: items[0].pop("tag_name")),
            "error: a release in GitHub's answer has an unexpected shape: GET {api}/repos/"
            "ggml-org/llama.cpp/releases (item 1): field tag_name is missing. ",
        ),
        (
            "GET",
            r"/releases$",
            edit(lambda items: items[0]["assets"][0].update(size="3")),
            "error: a release in GitHub's answer has an unexpected shape: GET {api}/repos/"
            "ggml-org/llama.cpp/releases (item 1): field assets.0.size: Input should be a "
            "valid integer (got str). ",
        ),
        (
            "GET",
            r"/compare/",
            edit(lambda cmp: cmp["files"][0].update(filename=["tools", "server"])),
            "error: a comparison in GitHub's answer has an unexpected shape: GET {api}/repos/"
            f"ggml-org/llama.cpp/compare/{COMMIT_10068}...{NEW}: field files.0.filename: "
            "Input should be a valid string (got list). ",
        ),
    ],
)
def test_check_ends_in_one_line_on_a_mistyped_answer(
    tmp_path: Path,
    github: FakeGitHub,
    run_cli: Any,
    method: str,
    path: str,
    change: Any,
    expected: str,
) -> None:
    root, _ = app(tmp_path, github)
    ok = run_cli("--root", str(root), "check", "--json", "--now", NOW)
    assert ok.code == 0 and json.loads(ok.out)["target"] == "b10092", ok.err  # untampered
    root = project(tmp_path / "again", PIN, cache=str(tmp_path / "c2"), **sections(github))
    github.tamper(method, path, change)
    line = one_error(run_cli("--root", str(root), "check", "--now", NOW))
    assert line.startswith(expected.format(api=github.api)), line
    assert [c for c in github.calls if c.tampered]  # the corrupt answer was sent


@pytest.mark.parametrize(
    ("path", "change", "expected"),
    [
        (
            r"^/repos/acme/app$",
            edit(lambda repo: repo.pop("default_branch")),
            "error: a repository in GitHub's answer has an unexpected shape: GET {api}/repos/"
            "acme/app: field default_branch is missing. ",
        ),
        (
            r"^/repos/acme/app/pulls$",
            edit(lambda prs: prs[0].pop("number")),
            "error: a pull request in GitHub's answer has an unexpected shape: GET {api}/repos/"
            "acme/app/pulls?state=open&base=main (item 1): field number is missing. ",
        ),
        (
            r"^/repos/acme/app/pulls$",
            edit(lambda prs: prs[0].update(head=None)),
            "error: a pull request in GitHub's answer has an unexpected shape: GET {api}/repos/"
            "acme/app/pulls?state=open&base=main (item 1): field head: Input should be a valid "
            "dictionary or instance of Branch (got null). ",
        ),
    ],
)
def test_bump_ends_in_one_line_and_changes_nothing_on_a_mistyped_answer(
    tmp_path: Path, github: FakeGitHub, run_cli: Any, path: str, change: Any, expected: str
) -> None:
    root, bare = app(tmp_path, github)
    someone = {"title": "a person's PR", "head": "main", "base": "main"}
    assert httpx.post(f"{github.api}/repos/{APP}/pulls", json=someone).status_code == 201
    before, made = git(bare, "for-each-ref"), writes(github)
    github.tamper("GET", path, change)
    line = one_error(run_cli("--root", str(root), "bump", "--now", NOW))
    assert line.startswith(expected.format(api=github.api)), line
    assert git(bare, "for-each-ref") == before and writes(github) == made  # nothing written


def test_check_reads_many_pages_of_id_based_links(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    """150 newer releases: check follows GitHub's /repositories/{id} Link to page 2."""
    root, _ = app(tmp_path, github)
    start = datetime(2026, 7, 20, tzinfo=UTC)
    for n in range(10093, 10243):
        github.add_release(LLAMA, f"b{n}", f"{n:040x}", start + timedelta(minutes=n - 10093))
    github.add_compare(LLAMA, COMMIT_10068, NEW, ["server : a fix"], ["tools/server/server.cpp"])
    res = run_cli("--root", str(root), "check", "--json", "--now", NOW)
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert len(out["candidates"]) == 151 and out["target"] == "b10092"
    listed = [c for c in github.calls if c.path.endswith("/releases")]
    rid = github.repos[LLAMA].id
    assert [c.path for c in listed] == [
        f"/repos/{LLAMA}/releases",
        f"/repositories/{rid}/releases",
    ]
    assert listed[1].query == {"per_page": ["100"], "page": ["2"]}


# --- the bump steps that need no engine, as functions -----------------------------------------


def test_remote_state_open_update_supersede_and_status(tmp_path: Path, github: FakeGitHub) -> None:
    root, bare = app(tmp_path, github)
    cfg = load_config(root)
    forge = bp.forge_for(cfg, root, None)
    assert forge.base() == "main"

    def branch(name: str, lock: str) -> str:
        git(root, "checkout", "--quiet", "-B", name, "main")
        (root / "llamapin.lock").write_text(lock)
        build = name.rsplit("-", 1)[1]
        git(root, "commit", "--quiet", "-am", f"llamapin: {build}", "-m", f"{bp.TRAILER}: {build}")
        sha = git(root, "rev-parse", "HEAD").strip()
        git(root, "checkout", "--quiet", "main")
        return sha

    new_pin = Pin("b10092", NEW, {"linux-x64": Asset("llama-b10092-bin-ubuntu-x64.zip", "1" * 64)})
    old_sha = branch("llamapin/bump-b10080", "older proposal\n")
    git(root, "push", "--quiet", "origin", "llamapin/bump-b10080")
    older = forge.gh.post(
        "repos/{repo}/pulls", {"title": "old", "head": "llamapin/bump-b10080", "base": "main"}
    )
    head = branch("llamapin/bump-b10092", lock_text(new_pin))
    remote = bp.remote_state(forge, "main", "llamapin/bump-b10092", "b10092")
    assert isinstance(remote, bp.Remote) and remote.mine is None
    assert [p.number for p in remote.prs] == [older["number"]]
    prop = bp.Proposal(
        "llamapin/bump-b10092", "main", head, "b10092", "t", "body", "fail", ["slower"]
    )
    opened = bp.push_and_propose(forge, remote, prop, post_status=True)
    assert opened.pr is not None
    assert (opened.action, opened.draft, opened.superseded) == ("opened", True, [older["number"]])
    assert github.pr(APP, older["number"])["state"] == "closed"
    assert github.repos[APP].statuses[-1]["state"] == "failure"
    assert github.repos[APP].comments[-1]["body"].startswith(f"Superseded by #{opened.pr}")
    # The same lock again: up to date. A PR that is not a draft and now fails gets a notice.
    remote = bp.remote_state(forge, "main", "llamapin/bump-b10092", "b10092")
    assert isinstance(remote, bp.Remote) and remote.mine is not None
    same = bp.up_to_date(forge, remote, "llamapin/bump-b10092", "b10092", lock_text(new_pin))
    assert same is not None and same.action == "up-to-date" and same.pr == opened.pr
    assert bp.up_to_date(forge, remote, "llamapin/bump-b10092", "b10092", "other") is None
    github.pr(APP, opened.pr)["draft"] = False
    updated = bp.push_and_propose(
        forge,
        bp.Remote(remote.existing_sha, remote.prs, remote.mine.model_copy(update={"draft": False})),
        prop,
        post_status=False,
    )
    assert updated.action == "updated" and updated.url == opened.url
    assert github.pr(APP, opened.pr)["body"].startswith("> **The gate now fails")
    # A person closed the older PR without merging: its branch is never proposed again.
    declined = bp.remote_state(forge, "main", "llamapin/bump-b10080", "b10080")
    assert isinstance(declined, bp.BumpResult) and declined.action == "declined"
    assert declined.pr == older["number"]
    assert git(bare, "rev-parse", "refs/heads/llamapin/bump-b10080").strip() == old_sha


def test_summarize_reads_the_typed_comparison(tmp_path: Path, github: FakeGitHub) -> None:
    root, _ = app(tmp_path, github)
    cfg = load_config(root)
    http = client()
    gh = GitHub(github.api, LLAMA, None, http, EtagStore(None))
    up = Upstream(cfg, PIN, http, Cache(tmp_path / "cache"), gh, lambda _: None)
    target = Pin("b10092", NEW, {})
    summary = summarize(up, target, None)
    assert summary.total_commits == 1 and summary.groups == {"server": ["server : a fix"]}

    def odd(cmp: dict[str, Any]) -> dict[str, Any]:
        cmp.pop("total_commits")
        cmp["commits"][0]["commit"]["message"] = ""
        return cmp

    github.tamper("GET", r"/compare/", odd)
    fresh = GitHub(github.api, LLAMA, None, http)  # no remembered ETag: the answer is a 200
    up = Upstream(cfg, PIN, http, Cache(tmp_path / "cache"), fresh, lambda _: None)
    summary = summarize(up, target, None)
    assert summary.total_commits == 1 and summary.groups == {"other": [""]}
    assert [c.tampered for c in github.calls if "/compare/" in c.path] == [False, True]


def test_bump_names_the_open_pr_it_would_update_in_place(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    """An open bump PR whose branch holds an older lock is updated in place (and named): read
    from the typed pull-request list. The install of the fixture's made-up asset then stops
    the run, in one line, before anything is pushed."""
    root, bare = app(tmp_path, github)
    git(root, "checkout", "--quiet", "-b", "llamapin/bump-b10092")
    (root / "llamapin.lock").write_text("an older proposal\n")
    git(root, "commit", "--quiet", "-am", "llamapin: b10092", "-m", f"{bp.TRAILER}: b10092")
    git(root, "push", "--quiet", "origin", "llamapin/bump-b10092")
    git(root, "checkout", "--quiet", "main")
    pr = {"title": "t", "head": "llamapin/bump-b10092", "base": "main"}
    number = httpx.post(f"{github.api}/repos/{APP}/pulls", json=pr).json()["number"]
    before = git(bare, "for-each-ref")
    res = run_cli("--root", str(root), "bump", "--now", NOW)
    assert f"PR #{number} proposes an older pin of b10092: updating it in place" in res.err
    one_error(res)
    assert git(bare, "for-each-ref") == before
