"""The gate report as one PR comment, through the CLI: the split bump (prepare, then
publish) posts it and edits it in place on the next run, leaves a forged copy alone, and
a token that may not comment still opens the PR, with a warning.

The engines are the real ELF programs test_sec_bump compiles (its ``release_app``); the
remote is a local bare repository and GitHub is the local fake.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from llamapin.upstream.pr_comment import MARKER
from tests.fakes.github import FakeGitHub
from tests.gitremote import git
from tests.integration.test_sec_bump import SECRET, prepare, publish, release_app
from tests.integration.test_upstream import APP, LATER

__all__ = ["release_app"]  # the fixture, shared with test_sec_bump


def reports(github: FakeGitHub) -> list[dict[str, Any]]:
    return [c for c in github.repos[APP].comments if str(c["body"]).startswith(MARKER)]


@pytest.mark.engine
def test_publish_posts_the_report_once_and_edits_it_in_place(
    release_app: dict[str, Any], github: FakeGitHub, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, bare, tmp = release_app["root"], release_app["bare"], release_app["tmp"]
    out = tmp / "out"
    res = prepare(run_cli, root, out)
    assert res.code == 0, res.err
    # the report carries text a hostile build could have put there
    gate_md = (out / "gate.md").read_text() + "\n@octocat <img src=x> [x](https://evil.example)\n"
    (out / "gate.md").write_text(gate_md)
    monkeypatch.setenv("LLAMAPIN_BUMP_TOKEN", SECRET)
    res = publish(run_cli, root, out)
    assert res.code == 0, res.err
    assert res.out.startswith("opened PR #1 for b10088") and "warning" not in res.err
    [first] = reports(github)
    assert first["number"] == 1 and first["user"]["login"] == "llamapin-bot"
    body = str(first["body"])
    assert body.startswith(MARKER + "\n## llamapin gate: ")
    assert "@octocat" not in body and "<img" not in body and "](https://evil" not in body
    # someone copies the marker into a comment of their own
    forged = github.add_comment(APP, 1, MARKER + "\nnot llamapin's", "mallory")
    # the next run: the branch holds an older proposal, so publish updates the PR in place
    tip = git(bare, "rev-parse", "refs/heads/llamapin/bump-b10088").strip()
    wt = tmp / "older"
    git(root, "worktree", "add", "--quiet", "--detach", str(wt), tip)
    with (wt / "llamapin.lock").open("a") as lock:
        lock.write("# an older proposal\n")
    git(wt, "commit", "--quiet", "-a", "-m", "older\n\nLlamapin-Bump: b10088")
    git(wt, "push", "--quiet", "--force", str(bare), "HEAD:refs/heads/llamapin/bump-b10088")
    (out / "gate.md").write_text("## llamapin gate: FAIL\n\nthe second run's report\n")
    res = publish(run_cli, root, out, "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["action"] == "updated" and result["warnings"] == []
    assert [c["id"] for c in reports(github)] == [first["id"], forged["id"]]
    assert first["edits"] == 1 and "the second run's report" in str(first["body"])
    assert forged["edits"] == 0 and forged["body"] == MARKER + "\nnot llamapin's"
    patched = [c.line for c in github.calls if c.method == "PATCH" and "/comments/" in c.path]
    assert patched == [f"PATCH /repos/{APP}/issues/comments/{first['id']}"]
    # gate.md gone from the artifact: the comment says so instead of failing the publish
    git(wt, "push", "--quiet", "--force", str(bare), "HEAD:refs/heads/llamapin/bump-b10088")
    (out / "gate.md").unlink()
    res = publish(run_cli, root, out)
    assert res.code == 0, res.err
    assert "could not be read from the prepared change: gate.md is missing" in str(first["body"])
    assert len(reports(github)) == 2 and SECRET not in res.out + res.err
    assert not github.forbidden_calls()


@pytest.mark.engine
def test_a_token_that_may_not_comment_still_opens_the_pr(
    release_app: dict[str, Any], github: FakeGitHub, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = release_app["root"]
    monkeypatch.setenv("LLAMAPIN_BUMP_TOKEN", SECRET)
    github.user_visible = False  # Actions' own token: GET /user answers 403
    github.denied.append(("GET", re.compile(r"/issues/\d+/comments$")))
    res = run_cli("--root", str(root), "bump", "--now", LATER, "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["action"] == "opened" and result["pr"] == 1
    [warning] = result["warnings"]
    assert warning.startswith("the gate report was not posted as a comment on PR #1 (")
    assert "403 (Resource not accessible by integration)" in warning
    assert f"bump: warning: {warning}" in res.err
    assert github.pr(APP, 1)["state"] == "open" and github.repos[APP].comments == []
    assert SECRET not in res.out + res.err
