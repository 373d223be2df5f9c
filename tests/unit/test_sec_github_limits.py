"""Rate limits against the fake GitHub: waited out when GitHub says how long and that fits
in max_wait_s, otherwise one line that says when to retry; GitHub's 404 message kept."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from llamapin.config import UpstreamConfig
from llamapin.errors import ForgeError
from llamapin.fetch import client
from llamapin.upstream.github import GitHub
from tests.fakes.github import FakeGitHub
from tests.unit.test_sec_github import Origin

REPO = "ggml-org/llama.cpp"


@pytest.fixture
def api() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


def fake_with_releases(github: FakeGitHub) -> FakeGitHub:
    github.add_release(REPO, "b1", "a" * 40, datetime(2026, 7, 1, tzinfo=UTC))
    return github


def gh(base: str, max_wait_s: float, sleep: Callable[[float], None] = time.sleep) -> GitHub:
    return GitHub(base, REPO, None, client(), wait_max=0.01, max_wait_s=max_wait_s, sleep=sleep)


@pytest.mark.parametrize("status", [403, 429])
def test_a_secondary_limit_with_retry_after_is_waited_out(github: FakeGitHub, status: int) -> None:
    fake_with_releases(github).secondary = [(status, "1")]
    started = time.monotonic()
    releases = gh(github.api, max_wait_s=10).get("repos/{repo}/releases")
    assert [r["tag_name"] for r in releases] == ["b1"]
    assert time.monotonic() - started >= 1.0  # it really waited the second GitHub asked
    assert [c.status for c in github.calls] == [status, 200]


def test_a_wait_longer_than_the_cap_fails_at_once_with_the_time(github: FakeGitHub) -> None:
    fake_with_releases(github).secondary = [(403, "120")]
    started = time.monotonic()
    with pytest.raises(ForgeError) as info:
        gh(github.api, max_wait_s=10).get("repos/{repo}/releases")
    assert time.monotonic() - started < 30  # no waiting (generous: a loaded machine)
    text = info.value.render()
    assert "GitHub's rate limit is exhausted" in text and "\n" not in text
    assert "GitHub asks to wait 120 s (Retry-After), more than upstream.max_wait_s (10 s)" in text
    assert len(github.calls) == 1


def test_no_cap_means_no_wait(github: FakeGitHub) -> None:
    fake_with_releases(github).secondary = [(429, "1")]
    with pytest.raises(
        ForgeError, match=r"answered 429; GitHub asks to wait 1 s \(Retry-After\)\."
    ):
        gh(github.api, max_wait_s=0).get("repos/{repo}/releases")


def test_the_waits_are_bounded(github: FakeGitHub) -> None:
    """A server that keeps answering Retry-After: 0 does not make the client spin: each wait
    is at least a second, and there are five at most."""
    fake_with_releases(github).secondary = [(429, "0")] * 10
    slept: list[float] = []
    with pytest.raises(ForgeError, match="rate limit is exhausted"):
        gh(github.api, max_wait_s=3600, sleep=slept.append).get("repos/{repo}/releases")
    assert slept == [1.0] * 5 and len(github.calls) == 6


def test_without_retry_after_github_says_wait_a_minute(github: FakeGitHub) -> None:
    fake_with_releases(github).secondary = [(403, None)]
    slept: list[float] = []
    gh(github.api, max_wait_s=60, sleep=slept.append).get("repos/{repo}/releases")
    assert slept == [60.0]


def test_the_primary_limit_waits_for_its_reset_when_that_fits(github: FakeGitHub) -> None:
    fake_with_releases(github).rate_limited = True  # resets in 30 minutes
    slept: list[float] = []
    with pytest.raises(ForgeError, match=r"the limit resets at \d\d:\d\d UTC \(in 30 min\)"):
        gh(github.api, max_wait_s=60, sleep=slept.append).get("repos/{repo}/releases")
    assert slept == []
    github.rate_reset = str(int(time.time()) + 2)
    waiting = gh(github.api, max_wait_s=60, sleep=slept.append)
    github.rate_limited = True
    with pytest.raises(ForgeError):  # the fake stays limited: waited once, then the cap
        waiting.get("repos/{repo}/releases")
    assert len(slept) >= 1 and all(0 < s <= 3 for s in slept)


@pytest.mark.parametrize("reset", ["99999999999999999999", "-5", "soon", "²"])
def test_an_out_of_range_reset_ends_in_one_line(github: FakeGitHub, reset: str) -> None:
    fake_with_releases(github).rate_limited = True
    github.rate_reset = reset
    with pytest.raises(ForgeError) as info:
        gh(github.api, max_wait_s=0).get("repos/{repo}/releases")
    text = info.value.render()
    assert "\n" not in text and "the limit resets at an unreadable time" in text


def test_githubs_own_404_message_is_kept(github: FakeGitHub, api: Origin) -> None:
    with pytest.raises(ForgeError, match=r"answered 404 \(Not Found\)\. Check the repository"):
        gh(github.api, max_wait_s=0).get("repos/{repo}")
    api.add(
        f"/repos/{REPO}/commits/abc",
        404,
        body=json.dumps({"message": "No commit found for SHA: abc"}).encode(),
    )
    with pytest.raises(ForgeError, match=r"answered 404 \(No commit found for SHA: abc\)"):
        gh(api.url, max_wait_s=0).get("repos/{repo}/commits/abc")
    api.add(f"/repos/{REPO}/page", 404, body=b"<html><body>Not here</body></html>")
    with pytest.raises(ForgeError) as info:
        gh(api.url, max_wait_s=0).get("repos/{repo}/page")
    assert info.value.why.endswith("answered 404") and "<html>" not in info.value.render()


def test_the_config_bounds_the_wait() -> None:
    assert UpstreamConfig().max_wait_s == 60.0
    assert UpstreamConfig(max_wait_s=0).max_wait_s == 0
    for bad in (-1, 3601, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_wait_s"):
            UpstreamConfig(max_wait_s=bad)
