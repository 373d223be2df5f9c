"""The GitHub client against the fake GitHub and a server that misbehaves on purpose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamapin.errors import ForgeError
from llamapin.fetch import client
from llamapin.upstream.github import EtagStore, GitHub, redact
from tests.conftest import FileServer
from tests.fakes.github import FakeGitHub


def gh(api: str, repo: str = "ggml-org/llama.cpp", token: str | None = None) -> GitHub:
    return GitHub(api, repo, token, client(), EtagStore(None), wait_max=0.01)


def test_pagination_and_conditional_requests(github: FakeGitHub, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    for n in range(20):
        github.add_release(
            "ggml-org/llama.cpp", f"b{n + 1}", "a" * 40, datetime(2026, 7, 1, tzinfo=UTC)
        )
    store = EtagStore.open(tmp_path / "etags.json")
    api = GitHub(github.api, "ggml-org/llama.cpp", None, client(), store)
    assert len(list(api.paginate("repos/{repo}/releases", per_page=7))) == 20
    assert len(list(api.paginate("repos/{repo}/releases", per_page=7, max_pages=2))) == 14
    store.save()
    again = GitHub(github.api, "ggml-org/llama.cpp", None, client(), EtagStore.open(store.path))
    assert len(list(again.paginate("repos/{repo}/releases", per_page=7))) == 20
    assert again.not_modified == 3  # every page answered 304 from the remembered ETags
    (tmp_path / "etags.json").write_text("{not json")
    assert EtagStore.open(tmp_path / "etags.json").entries == {}
    EtagStore(None).save()  # no file, nothing to do


def test_errors_say_what_to_do(github: FakeGitHub, served: FileServer) -> None:
    with pytest.raises(ForgeError, match=r"GitHub has no such resource: GET .* answered 404"):
        gh(github.api, "nobody/nothing").get("repos/{repo}")
    github.repo("acme/app", bare=Path("/nonexistent.git"))
    with pytest.raises(ForgeError) as info:
        gh(github.api, "acme/app").post(
            "repos/{repo}/pulls", {"title": "t", "head": "missing", "base": "main"}
        )
    assert info.value.what == "GitHub refused the request"
    assert "answered 422 (Validation Failed)" in info.value.why
    assert '"field": "head"' in info.value.detail
    served.add(
        "/forbidden",
        json.dumps({"message": "Resource not accessible by integration"}).encode(),
        status=403,
    )
    with pytest.raises(ForgeError, match=r"Resource not accessible by integration.*permission"):
        gh(served.url).get(served.url + "/forbidden")
    served.add("/limited", json.dumps({"message": "API rate limit exceeded"}).encode(), status=403)
    with pytest.raises(ForgeError, match="the limit resets later"):
        gh(served.url).get(served.url + "/limited")
    served.add("/teapot", b"[1, 2]", status=418)
    with pytest.raises(ForgeError, match=r"answered 418 \(\)"):
        gh(served.url).get(served.url + "/teapot")
    with pytest.raises(ForgeError, match="answered 404"):
        gh(served.url).get(served.url + "/nothing-here")  # an HTML error page, not JSON


def test_transient_failures_are_retried(served: FileServer) -> None:
    served.add("/flaky", b'{"ok": true}', script=["500", "ok"])
    assert gh(served.url).get(served.url + "/flaky") == {"ok": True}
    served.add("/down", b"{}", script=["500"] * 5)
    with pytest.raises(ForgeError, match=r"cannot reach GitHub's API: .*HTTP 500 \(after 3"):
        gh(served.url).get(served.url + "/down")
    served.add("/reset", b'{"ok": true}' * 100, script=["reset"] * 5)
    with pytest.raises(ForgeError, match="cannot reach GitHub's API"):
        gh(served.url).get(served.url + "/reset")


def test_redact() -> None:
    assert redact("token abc in text abc", "abc") == "token *** in text ***"
    assert redact("nothing", None) == "nothing"


def test_the_fake_is_checked_against_the_description(github_spec: Any) -> None:
    """The check that keeps the fake honest can fail: a mutilated response is caught."""
    release = github_spec.example("release")
    path = "/repos/o/r/releases"
    assert github_spec.response_errors("GET", path, 200, [release]) == []
    del release["tag_name"]
    release["assets"][0]["size"] = "big"
    errors = github_spec.response_errors("GET", path, 200, [release])
    assert "0: 'tag_name' is a required property" in errors
    assert any("'big' is not of type 'integer'" in e for e in errors)
    assert github_spec.response_errors("GET", "/no/such/path", 200, {}) == [
        "GET /no/such/path is not in GitHub's API"
    ]
    assert github_spec.request_errors("POST", "/repos/o/r/pulls", {"title": 1})[0].startswith(
        "title: 1 is not of type 'string'"
    )
    assert github_spec.response_errors("DELETE", path, 204, None) == [
        "DELETE /repos/o/r/releases is not in GitHub's API"
    ]


def test_answers_that_are_not_github_shaped(served: FileServer) -> None:
    """An API base that points at a web page, or a list that is not releases: one line each."""
    from llamapin.upstream.feeds import github_builds

    served.add("/page", b"<html>a login page</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(ForgeError, match=r"not JSON: GET .*/page answered 200 \(text/html\)"):
        gh(served.url).get(served.url + "/page")
    served.add("/api/repos/o/r/releases", b'[{"tag_name": "b5", "assets": [{"size": 1}]}]')
    with pytest.raises(ForgeError, match="a release in GitHub's answer has an unexpected shape"):
        github_builds(gh(served.url + "/api", "o/r"), 1, 1)
