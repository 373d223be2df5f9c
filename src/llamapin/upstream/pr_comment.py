"""The gate report as one comment on a bump PR, edited in place on every run.

The comment starts with a hidden marker so the next run finds it. Only a comment that
carries the marker *and* was written by llamapin's own identity is edited: the login the
token belongs to (``GET /user``), or, for an app or Actions token that ``GET /user``
refuses, the account that opened the bump PR. Someone else's comment is never edited,
whatever it carries. The report is made inert (it may hold text from an upstream build
or from the job that ran upstream code) and bounded to what GitHub accepts.

Posting the comment is a convenience on top of the PR: a failure (a token without
pull-requests write, a rate limit) becomes a warning, never a failed bump.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llamapin.errors import ForgeError
from llamapin.inert import republished
from llamapin.upstream import github_models as api
from llamapin.upstream.github import GitHub, one_line

MARKER = "<!-- llamapin:gate-report -->"
MAX_COMMENT_CHARS = 65_000  # GitHub refuses comment bodies over 65536 characters
FENCE = "```"


@dataclass(frozen=True)
class CommentFact:
    """A comment on the PR, as the choice needs it."""

    id: int
    author: str | None
    body: str


def ours(comments: Iterable[CommentFact], logins: frozenset[str]) -> int | None:
    """The id of the report comment to edit: the oldest one that starts with the marker and
    was written by one of ``logins``; None when there is none (post a new one)."""
    mine = [
        c.id
        for c in comments
        if c.body.startswith(MARKER) and c.author is not None and c.author in logins
    ]
    return min(mine) if mine else None


def comment_body(
    report: str, allowed_links: tuple[str, ...], limit: int = MAX_COMMENT_CHARS
) -> str:
    """The comment: the marker, then the report made inert, cut to ``limit`` characters (at
    a line end, closing an open code fence) with a note saying where the whole one is."""
    head = MARKER + "\n"
    text = republished(report, allowed_links, limit=len(report) + 1)
    if len(head) + len(text) <= limit:
        return head + text
    note = (
        f"\n\n_The report was cut to fit a comment ({len(text)} characters). The whole "
        "report is gate.md in the bump workflow's llamapin-bump artifact._"
    )
    budget = limit - len(head) - len(note) - len(FENCE) - 1
    cut = text[:budget]
    line_end = cut.rfind("\n")
    if line_end > 0:
        cut = cut[:line_end]
    if sum(1 for line in cut.splitlines() if line.lstrip().startswith(FENCE)) % 2:
        cut += "\n" + FENCE
    return head + cut + note


def _logins(gh: GitHub, pr_author: str | None) -> frozenset[str]:
    """Who llamapin is on this forge: the token's user, else the bump PR's author."""
    try:
        data = gh.get("user")
    except ForgeError:
        data = None  # an app installation token (Actions' own included) cannot read /user
    login = data.get("login") if isinstance(data, dict) else None
    if isinstance(login, str) and login:
        return frozenset({login})
    return frozenset({pr_author}) if pr_author else frozenset()


def post_report(
    gh: GitHub, number: int, report: str, allowed_links: tuple[str, ...], pr_author: str | None
) -> str | None:
    """Post or edit the report comment on PR ``number``. Returns a warning line when it
    could not, None when it did."""
    body = comment_body(report, allowed_links)
    path = f"repos/{{repo}}/issues/{number}/comments"
    try:
        logins = _logins(gh, pr_author)
        listed = [
            CommentFact(c.id, c.user.login if c.user else None, c.body or "")
            for c in api.items(gh, api.IssueComment, path)
        ]
        found = ours(listed, logins)
        if found is None:
            api.post(gh, api.IssueComment, path, {"body": body})
        else:
            api.patch(
                gh, api.IssueComment, f"repos/{{repo}}/issues/comments/{found}", {"body": body}
            )
    except ForgeError as exc:
        return one_line(
            f"the gate report was not posted as a comment on PR #{number} ({exc.why}). "
            "Give the bump token 'Pull requests: write' (or 'Issues: write') on this "
            "repository to have it there; the PR body and the bump workflow's artifact "
            "(gate.md) still hold the report",
            600,
        )
    return None
