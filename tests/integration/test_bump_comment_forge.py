"""The gate report comment against the local GitHub: posted once, then edited in place,
never someone else's, and a refusal is a warning (no engine runs here)."""

from __future__ import annotations

import json

from llamapin.fetch import client
from llamapin.upstream.github import EtagStore, GitHub
from llamapin.upstream.pr_comment import MARKER, post_report
from tests.fakes.github import FakeGitHub

APP = "acme/app"
LINKS = ("https://github.com/ggml-org/llama.cpp/compare/",)


def forge(github: FakeGitHub) -> tuple[GitHub, int]:
    github.repo(APP)
    made = github.handle(
        "POST",
        f"/api/v3/repos/{APP}/pulls",
        {},
        json.dumps({"title": "bump", "head": "llamapin/bump-b10088", "base": "main"}).encode(),
    )
    assert made[0] == 201
    return GitHub(github.api, APP, None, client(), EtagStore(None), wait_max=0.01), made[2][
        "number"
    ]


def comments(github: FakeGitHub) -> list[dict[str, object]]:
    return github.repos[APP].comments


def test_posted_once_then_edited_in_place(github: FakeGitHub) -> None:
    gh, number = forge(github)
    github.add_comment(APP, number, "nice", "alice")
    assert post_report(gh, number, "## llamapin gate: FAIL\n@octocat", LINKS, None) is None
    mine = [c for c in comments(github) if c["user"]["login"] == "llamapin-bot"]  # type: ignore[index]
    assert len(mine) == 1 and str(mine[0]["body"]).startswith(MARKER + "\n## llamapin gate: FAIL")
    assert "@octocat" not in str(mine[0]["body"])
    # the second run: the same comment, edited, with the new report
    assert post_report(gh, number, "## llamapin gate: PASS", LINKS, None) is None
    assert len(comments(github)) == 2 and mine[0]["edits"] == 1
    assert mine[0]["body"] == MARKER + "\n## llamapin gate: PASS"
    assert [c.line for c in github.calls if c.method == "PATCH"] == [
        f"PATCH /repos/{APP}/issues/comments/{mine[0]['id']}"
    ]


def test_many_comments_are_read_page_by_page(github: FakeGitHub) -> None:
    gh, number = forge(github)
    for i in range(130):
        github.add_comment(APP, number, f"chatter {i}", "alice")
    github.add_comment(APP, number, MARKER + "\nold report", "llamapin-bot")
    assert post_report(gh, number, "new report", LINKS, None) is None
    assert comments(github)[-1]["body"] == MARKER + "\nnew report"
    assert len(comments(github)) == 131
    pages = [c for c in github.calls if c.method == "GET" and c.path.endswith("/comments")]
    assert len(pages) == 2 and pages[1].path.startswith("/repositories/")


def test_a_foreign_comment_with_the_marker_is_left_alone(github: FakeGitHub) -> None:
    gh, number = forge(github)
    forged = github.add_comment(APP, number, MARKER + "\nmallory's text", "mallory")
    assert post_report(gh, number, "the report", LINKS, None) is None
    assert forged["body"] == MARKER + "\nmallory's text" and forged["edits"] == 0
    assert len(comments(github)) == 2
    assert not [c for c in github.calls if c.method == "PATCH"]


def test_an_app_token_is_known_by_the_pr_it_opened(github: FakeGitHub) -> None:
    gh, number = forge(github)
    github.user_visible = False  # an installation token: GET /user answers 403
    github.login = "my-app[bot]"
    earlier = github.add_comment(APP, number, MARKER + "\nolder report", "my-app[bot]")
    foreign = github.add_comment(APP, number, MARKER + "\nforged", "mallory")
    assert post_report(gh, number, "new", LINKS, "my-app[bot]") is None
    assert earlier["body"] == MARKER + "\nnew" and foreign["edits"] == 0
    # with no known author at all, nothing is edited: a new comment is posted
    assert post_report(gh, number, "newer", LINKS, None) is None
    assert comments(github)[-1]["body"] == MARKER + "\nnewer" and foreign["edits"] == 0
    assert len(comments(github)) == 3


def test_a_token_without_the_permission_gets_a_warning(github: FakeGitHub) -> None:
    gh, number = forge(github)
    github.denied.append(("POST", __import__("re").compile(r"/issues/\d+/comments$")))
    warning = post_report(gh, number, "the report", LINKS, None)
    assert warning is not None and warning.startswith(
        f"the gate report was not posted as a comment on PR #{number} ("
    )
    assert "answered 403 (Resource not accessible by integration)" in warning
    assert "Pull requests: write" in warning and "\n" not in warning
    assert comments(github) == []
