"""`bump --dry-run` and `bump --to` against the local GitHub and a local bare remote.

The engines are the real ELF programs test_sec_bump compiles (its ``release_app``): the
dry run ensures and gates them for real, then publishes nothing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llamapin.config import load_config
from llamapin.upstream.bump import worktree_path
from tests.conftest import CliResult
from tests.fakes.github import FakeGitHub
from tests.gitremote import git
from tests.integration.test_ensure import SOURCE_PIN, project
from tests.integration.test_sec_bump import refs, release_app
from tests.integration.test_upstream import (
    APP,
    LATER,
    LLAMA,
    PUBLISHED,
    commit_of,
    error_line,
    when,
    writes,
)

__all__ = ["release_app"]  # the fixture, shared with test_sec_bump
SOON = "2026-07-23T00:00:00Z"  # b10088 is 0.4 days old: inside the 3-day cooldown


def bump(run_cli: Any, root: Path, *args: str) -> CliResult:
    res: CliResult = run_cli("--root", str(root), "bump", *args)
    return res


@pytest.mark.engine
def test_dry_run_changes_nothing_remote_and_prints_what_it_would_publish(
    release_app: dict[str, Any], github: FakeGitHub, run_cli: Any
) -> None:
    root, bare, log = (release_app[k] for k in ("root", "bare", "log"))
    before = refs(bare)
    res = bump(run_cli, root, "--dry-run", "--now", LATER)
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0].startswith("dry run: would push ")
    assert lines[0].endswith(
        "to llamapin/bump-b10088 and open a draft PR for b10088 (gate fail); "
        "nothing was pushed, opened or commented"
    )
    assert lines[1] == "branch: llamapin/bump-b10088 (base main)"
    commit = lines[2].removeprefix("commit: ")
    assert lines[3] == "    chore(engine): bump llama.cpp b10068 -> b10088"
    assert "    Llamapin-Bump: b10088" in lines
    assert "PR title: chore(engine): bump llama.cpp b10068 -> b10088" in lines
    body = res.out.split("\nPR body:\n", 1)[1]
    assert body.startswith("## llama.cpp b10068 -> b10088\n\n**Gate: FAIL**")
    assert "### Gate report" in body and "llama-b10088-bin-ubuntu-x64.zip" in body
    ran = log.read_text().splitlines()
    assert "10088 --version" in ran and "10068 --version" in ran  # ensured and gated for real
    # nothing remote changed: no push, no PR, no comment, no label, no status
    assert writes(github) == [] and refs(bare) == before
    assert github.repos[APP].pulls == {} and github.repos[APP].comments == []
    # the commit it shows is real (in the local object store), on no branch, and the
    # user's checkout and the throwaway worktree are as they were
    assert git(root, "cat-file", "-t", commit).strip() == "commit"
    assert git(root, "show", f"{commit}:llamapin.lock").count('build = "b10088"') == 1
    assert subprocess.run(["git", "cat-file", "-e", commit], cwd=bare, check=False).returncode != 0
    assert git(root, "status", "--porcelain") == ""
    assert not worktree_path(load_config(root), root, "llamapin/bump-b10088").exists()

    # --to a build inside the cooldown: the plain bump waits, --to proposes it, as JSON
    res = bump(run_cli, root, "--now", SOON, "--json")
    assert res.code == 0 and json.loads(res.out)["action"] == "none"
    assert "inside the 3-day cooldown" in json.loads(res.out)["message"]
    res = bump(run_cli, root, "--dry-run", "--to", "b10088", "--now", SOON, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["action"] == "dry-run" and out["draft"] and out["verdict"] == "fail"
    preview = out["preview"]
    assert preview["would"] == "draft" and preview["branch"] == "llamapin/bump-b10088"
    why = r"Why now: b10088 was chosen with \-\-to \(0\.4 days old \(&lt; 3\)\)"
    said = next(x for x in preview["body"].splitlines() if x.startswith("Why now: "))
    assert said.startswith(why), said  # (the body is Markdown with the text made inert)
    assert writes(github) == [] and refs(bare) == before

    # the real run after the dry runs opens exactly the PR the dry run described
    res = bump(run_cli, root, "--now", LATER)
    assert res.code == 0, res.err
    assert res.out.startswith("opened PR #1 for b10088 (gate fail) as a draft")
    assert github.pr(APP, 1)["body"].split("### Gate report")[0] == body.split("### Gate report")[0]
    # and a dry run now would update that PR in place
    after = refs(bare)
    res = bump(run_cli, root, "--dry-run", "--now", LATER)
    assert res.code == 0, res.err
    assert res.out.startswith("PR #1 already proposes b10088; nothing changed")
    assert refs(bare) == after


def test_to_refuses_older_unknown_and_incomplete_builds(
    release_app: dict[str, Any], github: FakeGitHub, run_cli: Any
) -> None:
    root, bare = release_app["root"], release_app["bare"]
    github.add_release(LLAMA, "b10091", commit_of(10091), when(PUBLISHED[10091]))  # no assets
    before = refs(bare)

    def refused(*args: str) -> str:
        res = bump(run_cli, root, *args, "--now", LATER)
        assert res.code == 2, res.out
        assert writes(github) == [] and refs(bare) == before
        return error_line(res)

    assert refused("--to", "b10000") == (
        "error: cannot bump to b10000: it is older than the pin b10068: bump only moves the "
        "pin forward. To pin b10000 on purpose, run 'llamapin lock b10000' and commit the lock"
    )
    assert refused("--dry-run", "--to", "b10068").startswith(
        "error: cannot bump to b10068: it is the pinned build"
    )
    assert refused("--to", "b10090") == (
        "error: cannot bump to b10090: upstream lists no published build b10090 among the 2 "
        "newer than b10068. Pick a build that 'llamapin check' lists"
    )
    assert refused("--to", "b10091") == (
        "error: cannot bump to b10091: it lacks an asset this project needs: release b10091 "
        "has no asset for linux-x64. Pick a build with every asset ('llamapin check' lists "
        "why each is not ready)"
    )
    assert refused("--to", "latest").startswith("error: bad build id 'latest'")
    out = release_app["tmp"] / "out"
    assert refused("--to", "b10000", "--prepare", str(out)).startswith(
        "error: cannot bump to b10000"
    )
    assert refused("--dry-run", "--prepare", str(out)).startswith(
        "error: --dry-run takes neither --prepare, --publish nor --status"
    )
    assert refused("--to", "b10088", "--publish", str(out)).startswith(
        "error: --publish takes no --to"
    )


def test_to_with_the_index_feed(tmp_path: Path, github: FakeGitHub, run_cli: Any) -> None:
    root = project(
        tmp_path / "app",
        SOURCE_PIN,
        engine={"source": "source"},
        upstream={"feed": "index"},
        forge={"api_url": github.api, "repo": APP},
    )
    res = bump(run_cli, root, "--dry-run", "--to", "b10001", "--now", LATER)
    assert res.code == 2
    assert error_line(res).startswith(
        "error: cannot bump to b10001: it is older than the pin b10068"
    )
    assert github.calls == []  # the index feed reads no tag to refuse it
