"""GitHub as it really answers: id-based Link pagination, rate-limit headers on every answer,
Location on 201, GitHub's 422 error items, and typed answers.

Everything runs against the fake GitHub (a real HTTP server on 127.0.0.1, its answers
checked against GitHub's OpenAPI description) or a plain local server; ``tamper``
corrupts one answer where a test needs GitHub to send something unexpected.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamapin.errors import ForgeError
from llamapin.fetch import client
from llamapin.upstream import github_models as api
from llamapin.upstream.feeds import build_from_release, github_builds
from llamapin.upstream.github import EtagStore, GitHub
from tests.conftest import FileServer
from tests.fakes.github import RATE_HEADERS, Call, FakeGitHub

LLAMA = "ggml-org/llama.cpp"
TOKEN = "ghp_realShapedTokenForTheFake0001"  # noqa: S105 (made up for the tests)


def gh(github: FakeGitHub, repo: str = LLAMA, token: str | None = None, **kw: Any) -> GitHub:
    return GitHub(github.api, repo, token, client(), kw.pop("etags", EtagStore(None)), **kw)


def many_releases(github: FakeGitHub, count: int) -> None:
    """Releases b1..b``count``, one a minute: GitHub lists them newest first."""
    for n in range(1, count + 1):
        when = datetime(2026, 7, 1, tzinfo=UTC) + timedelta(minutes=n)
        github.add_release(LLAMA, f"b{n}", f"{n:040x}", when, [("a.zip", b"a", True)])


# --- the fake sends what GitHub sends ---------------------------------------------------------


def test_link_headers_name_every_page_by_repository_id(github: FakeGitHub) -> None:
    many_releases(github, 250)
    rid = github.repos[LLAMA].id
    first = httpx.get(f"{github.api}/repos/{LLAMA}/releases?per_page=100")
    by_id = f"{github.api}/repositories/{rid}/releases"
    assert first.headers["link"] == (
        f'<{by_id}?per_page=100&page=2>; rel="next", <{by_id}?per_page=100&page=3>; rel="last"'
    )
    middle = httpx.get(f"{by_id}?per_page=100&page=2")
    assert middle.status_code == 200 and len(middle.json()) == 100
    assert middle.headers["link"] == (
        f'<{by_id}?per_page=100&page=1>; rel="prev", <{by_id}?per_page=100&page=3>; rel="next", '
        f'<{by_id}?per_page=100&page=3>; rel="last", <{by_id}?per_page=100&page=1>; rel="first"'
    )
    last = httpx.get(f"{by_id}?per_page=100&page=3")
    assert len(last.json()) == 50
    assert 'rel="next"' not in last.headers["link"] and 'rel="first"' in last.headers["link"]
    single = httpx.get(f"{github.api}/repos/{LLAMA}/releases?per_page=100&page=1&x=1")
    assert "link" in single.headers  # more pages: the other query parameters are kept
    assert "x=1" in single.headers["link"]
    github.repo("acme/empty")
    assert "link" not in httpx.get(f"{github.api}/repos/acme/empty/releases").headers


def test_every_answer_carries_the_rate_limit_headers(github: FakeGitHub) -> None:
    many_releases(github, 2)
    for url in (f"{github.api}/repos/{LLAMA}", f"{github.api}/repos/nobody/nothing"):
        answer = httpx.get(url)
        assert all(answer.headers.get(h) for h in RATE_HEADERS), answer.headers
    answer = httpx.get(f"{github.api}/repos/{LLAMA}/releases")
    assert answer.headers["x-ratelimit-limit"] == "60"  # unauthenticated
    assert answer.headers["x-ratelimit-resource"] == "core"
    used, left = int(answer.headers["x-ratelimit-used"]), answer.headers["x-ratelimit-remaining"]
    assert int(left) == 60 - used
    again = httpx.get(answer.url, headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.headers["x-ratelimit-used"] == str(used)
    authed = httpx.get(answer.url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert authed.headers["x-ratelimit-limit"] == "5000"
    reset = int(answer.headers["x-ratelimit-reset"])
    assert 0 < reset - datetime.now(UTC).timestamp() <= 3600


def test_created_things_answer_201_with_a_location(github: FakeGitHub, tmp_path: Path) -> None:
    github.repo("acme/app")
    client_ = gh(github, "acme/app")
    pr = api.post(
        client_, api.PullRequest, "repos/{repo}/pulls", {"title": "t", "head": "x", "base": "main"}
    )
    comment = api.post(
        client_, api.Comment, f"repos/{{repo}}/issues/{pr.number}/comments", {"body": "b"}
    )
    sha = "a" * 40
    status = api.post(client_, api.Status, f"repos/{{repo}}/statuses/{sha}", {"state": "success"})
    assert status.state == "success"
    made = [c for c in github.calls if c.status == 201]
    assert [c.headers["location"] for c in made] == [
        f"{github.api}/repos/acme/app/pulls/{pr.number}",
        f"{github.api}/repos/acme/app/issues/comments/{comment.id}",
        f"{github.api}/repos/acme/app/statuses/{sha}",
    ]


def test_the_description_check_catches_a_missing_location_or_rate_header(
    github: FakeGitHub,
) -> None:
    """The fake's own check is not vacuous: an answer without what GitHub documents fails it."""
    good = dict.fromkeys(RATE_HEADERS, "1")
    body = github.spec.example("pull-request")
    github.calls.append(Call("POST", "/repos/a/b/pulls", {}, {}, 201, body, None, dict(good)))
    github.calls.append(Call("GET", "/repos/a/b", {}, None, 404, {"message": "Not Found"}, None))
    problems = github.invalid_responses()
    assert "POST /repos/a/b/pulls -> 201: no Location header" in problems
    assert any(p.startswith("GET /repos/a/b -> 404: no x-ratelimit-limit, ") for p in problems)
    github.calls.clear()


def test_forbidden_calls_are_caught_by_repository_id_too(github: FakeGitHub) -> None:
    merge = Call("PUT", "/repositories/1001/pulls/3/merge", {}, None, 403, None, None)
    assert FakeGitHub.is_forbidden(merge)
    github.repo("acme/app")
    rid = github.repos["acme/app"].id
    answer = httpx.put(f"{github.api}/repositories/{rid}/pulls/3/merge")
    assert answer.status_code == 403 and github.forbidden_calls()
    github.calls.clear()  # the session-wide scan would (rightly) fail on this deliberate call


# --- the client reads it ------------------------------------------------------------------------


def test_pagination_follows_id_based_links_on_the_api_origin(
    github: FakeGitHub, tmp_path: Path
) -> None:
    many_releases(github, 250)
    github.token = TOKEN
    store = EtagStore.open(tmp_path / "etags.json")
    client_ = gh(github, token=TOKEN, etags=store)
    got = list(api.items(client_, api.Release, "repos/{repo}/releases"))
    assert [r.tag_name for r in got] == [f"b{n}" for n in range(250, 0, -1)]  # all, in order
    rid = github.repos[LLAMA].id
    pages = [(c.path, c.query.get("page"), c.authorization) for c in github.calls]
    assert pages == [
        (f"/repos/{LLAMA}/releases", None, f"Bearer {TOKEN}"),
        (f"/repositories/{rid}/releases", ["2"], f"Bearer {TOKEN}"),
        (f"/repositories/{rid}/releases", ["3"], f"Bearer {TOKEN}"),
    ]
    store.save()
    again = gh(github, token=TOKEN, etags=EtagStore.open(store.path))
    assert len(list(api.items(again, api.Release, "repos/{repo}/releases"))) == 250
    assert again.not_modified == 3  # the id-based pages are remembered by their own URLs
    github.calls.clear()
    builds = github_builds(gh(github, token=TOKEN), 40, max_pages=5)
    assert [b.number for b in builds] == list(range(250, 40, -1))
    assert len(github.calls) == 3  # it stops on the page that reaches the pin


def test_a_list_endpoint_that_answers_no_list_is_one_error(github: FakeGitHub) -> None:
    many_releases(github, 1)
    github.tamper("GET", r"/releases$", lambda _: {"message": "a list was expected"})
    with pytest.raises(ForgeError) as info:
        list(gh(github).paginate("repos/{repo}/releases"))
    assert info.value.what == "GitHub's answer has an unexpected shape"
    assert "answered a dict where a list endpoint answers a JSON array" in info.value.why
    github.tamper("GET", r"/releases$", lambda _: None)
    with pytest.raises(ForgeError, match="answered a null where"):
        list(gh(github).paginate("repos/{repo}/releases"))


@pytest.mark.parametrize(
    ("change", "what", "why"),
    [
        (lambda r: r[0].pop("tag_name"), "a release", "(item 1): field tag_name is missing"),
        (
            lambda r: r[0]["assets"][0].update(size="3"),
            "a release",
            "(item 1): field assets.0.size: Input should be a valid integer (got str)",
        ),
        (
            lambda r: r[0].update(created_at="last tuesday", published_at=None),
            "a release",
            "field created_at: Value error, not an ISO 8601 time (got str)",
        ),
        (
            lambda r: r.__setitem__(0, None),
            "a release",
            "(item 1): it is not a JSON object (got null)",
        ),
        (
            lambda r: r[0].update(tag_name=5, draft="no"),
            "a release",
            "field tag_name: Input should be a valid string (got int) (and 1 more)",
        ),
    ],
)
def test_a_mistyped_release_is_one_error_naming_the_request_and_field(
    github: FakeGitHub, change: Any, what: str, why: str
) -> None:
    many_releases(github, 1)

    def corrupt(items: Any) -> Any:
        change(items)
        return items

    github.tamper("GET", r"/releases$", corrupt)
    with pytest.raises(ForgeError) as info:
        github_builds(gh(github), 0, 1)
    assert info.value.what == f"{what} in GitHub's answer has an unexpected shape"
    assert info.value.why.startswith(f"GET {github.api}/repos/{LLAMA}/releases")
    assert why in info.value.why and "\n" not in info.value.line()
    assert [c.tampered for c in github.calls] == [True]  # exempt from the description check


def test_each_answer_kind_names_its_field(github: FakeGitHub) -> None:
    github.add_release(LLAMA, "b1", "a" * 40, datetime(2026, 7, 1, tzinfo=UTC), annotated=True)
    github.repo("acme/app")
    client_ = gh(github)
    obj = api.get(client_, api.GitRef, "repos/{repo}/git/ref/tags/b1").object
    assert obj.type == "tag"
    assert api.get(client_, api.GitTag, f"repos/{{repo}}/git/tags/{obj.sha}").object.sha == "a" * 40
    github.tamper("GET", r"/git/ref/tags/b1$", lambda ref: {**ref, "object": {"type": "commit"}})
    with pytest.raises(
        ForgeError, match=r"a git ref in .*ref/tags/b1: field object\.sha is missing"
    ):
        api.get(gh(github), api.GitRef, "repos/{repo}/git/ref/tags/b1")  # no ETag: a 200
    github.tamper("GET", r"^/repos/acme/app$", lambda repo: {**repo, "default_branch": None})
    with pytest.raises(ForgeError, match=r"a repository .*: field default_branch: .* \(got null\)"):
        api.get(gh(github, "acme/app"), api.Repository, "repos/{repo}")
    github.tamper("POST", r"/pulls$", lambda pr: {k: v for k, v in pr.items() if k != "number"})
    with pytest.raises(ForgeError, match=r"a pull request in .*POST .*/pulls: field number is"):
        api.post(
            gh(github, "acme/app"),
            api.PullRequest,
            "repos/{repo}/pulls",
            {"title": "t", "head": "h", "base": "main"},
        )
    github.tamper("PATCH", r"/pulls/1$", lambda pr: {**pr, "head": "h"})
    with pytest.raises(ForgeError, match=r"PATCH .*/pulls/1: field head: Input should be a valid"):
        api.patch(gh(github, "acme/app"), api.PullRequest, "repos/{repo}/pulls/1", {"title": "u"})


def test_build_from_release_reads_a_valid_release() -> None:
    release = {
        "tag_name": "b7",
        "created_at": "2026-07-01T00:00:00Z",
        "published_at": None,
        "assets": [{"name": "a.zip", "size": None, "browser_download_url": "u"}],
    }
    build = build_from_release(release)
    assert build is not None and build.assets[0].size is None and build.url == ""
    assert build.published == datetime(2026, 7, 1, tzinfo=UTC)


# --- GitHub's 422 error items -------------------------------------------------------------------


def test_422_items_are_rendered_with_or_without_a_message(github: FakeGitHub) -> None:
    github.repo("acme/app", bare=Path("/nonexistent.git"))
    with pytest.raises(ForgeError) as info:
        gh(github, "acme/app").post(
            "repos/{repo}/pulls", {"title": "t", "head": "missing", "base": "main"}
        )
    assert info.value.why.endswith("answered 422 (Validation Failed): PullRequest.head: invalid")
    github.repos["acme/app"].bare = None
    body = {"title": "t", "head": "twice", "base": "main"}
    gh(github, "acme/app").post("repos/{repo}/pulls", body)
    with pytest.raises(ForgeError) as info:
        gh(github, "acme/app").post("repos/{repo}/pulls", body)
    assert info.value.why.endswith(
        "answered 422 (Validation Failed): A pull request already exists for twice."
    )
    with pytest.raises(ForgeError) as info:
        gh(github, "acme/app").post("repos/{repo}/pulls", {"title": 5, "head": "h", "base": "b"})
    assert "answered 422 (Validation Failed): title: 5 is not of type 'string'" in info.value.why


def test_odd_422_items_still_make_one_line(served: FileServer) -> None:
    errors = [
        "a bare string",
        {"resource": "Issue", "field": "title", "code": "missing_field"},
        {"resource": "Label", "code": ""},
        {"code": "custom", "message": "  "},
        {"field": "base", "code": "invalid", "message": "base is\nnot a branch"},
    ]
    served.add(
        "/v", json.dumps({"message": "Validation Failed", "errors": errors}).encode(), status=422
    )
    with pytest.raises(ForgeError) as info:
        GitHub(served.url, "o/r", None, client()).get(served.url + "/v")
    assert info.value.why.endswith(
        "answered 422 (Validation Failed): Issue.title: missing_field; Label: invalid; "
        "request: custom; base is not a branch"
    )
    served.add(
        "/w", json.dumps({"message": "Validation Failed", "errors": "no list"}).encode(), status=422
    )
    with pytest.raises(ForgeError) as info:
        GitHub(served.url, "o/r", None, client()).get(served.url + "/w")
    assert info.value.why.endswith("answered 422 (Validation Failed)")
