"""check and bump, as a user runs them, against a hostile API and with unusable tokens:
one line on stderr, exit 2, no traceback, and the token nowhere in the output.

Each run is a separate process with its own environment: llamapin reads a token once
per process (and removes it from its environment), as a real run does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import COMMIT_10068, CliResult
from tests.fakes.github import FakeGitHub
from tests.integration.test_ensure import SOURCE_PIN, project
from tests.unit.test_sec_github import TOKEN, Origin

LATER = "2026-07-30T00:00:00Z"


@pytest.fixture
def api() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def other() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


def llamapin(root: Path, *args: str, token: str | None = None) -> CliResult:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_TOKEN"}
    if token is not None:
        env["GITHUB_TOKEN"] = token
    proc = subprocess.run(
        [sys.executable, "-m", "llamapin", "--root", str(root), *args, "--now", LATER],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def one_error(res: CliResult, *secrets: str) -> str:
    assert res.code == 2, (res.out, res.err)
    everything = res.out + res.err
    assert "Traceback" not in everything
    for secret in secrets:
        assert secret not in everything
    errors = [x for x in res.err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1, res.err
    return errors[0]


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (TOKEN[:8] + "\r\n" + TOKEN[8:], "a line break"),
        (TOKEN + "é", "a non-ASCII character"),
        (TOKEN[:8] + "\x07" + TOKEN[8:], "a control character"),
        (TOKEN + "\r\nX-Injected: 1", "a line break"),
    ],
)
def test_check_and_bump_refuse_an_unusable_token_without_echoing_it(
    tmp_path: Path, github: FakeGitHub, token: str, problem: str
) -> None:
    # (A NUL cannot be put in an environment variable at all; the client test covers it.)
    root = project(
        tmp_path / "app",
        SOURCE_PIN,
        upstream={"api_url": github.api, "html_url": github.url},
        forge={"api_url": github.api, "repo": "acme/app"},
    )
    pieces = (TOKEN, TOKEN[:8], TOKEN[8:], "X-Injected")
    for command in ("check", "bump"):
        line = one_error(llamapin(root, command, token=token), *pieces)
        assert "the GitHub token cannot be used: the token (from $GITHUB_TOKEN)" in line
        assert f"holds {problem}" in line
    assert github.calls == []  # nothing was sent, with or without the token


def pinned_tag(api: Origin) -> None:
    """The first thing check asks: where the pinned build's tag points."""
    api.add(
        "/repos/ggml-org/llama.cpp/git/ref/tags/b10068",
        body={"object": {"type": "commit", "sha": COMMIT_10068}},
    )


def test_check_against_an_api_that_loops(tmp_path: Path, api: Origin) -> None:
    root = project(tmp_path / "app", SOURCE_PIN, upstream={"api_url": api.url})
    pinned_tag(api)
    api.add(
        "/repos/ggml-org/llama.cpp/releases", 302, Location="/repos/ggml-org/llama.cpp/releases"
    )
    line = one_error(llamapin(root, "check"))
    assert "GitHub's API redirects in a loop" in line


def test_check_never_carries_the_token_to_another_origin(
    tmp_path: Path, api: Origin, other: Origin
) -> None:
    root = project(tmp_path / "app", SOURCE_PIN, upstream={"api_url": api.url})
    releases = "/repos/ggml-org/llama.cpp/releases"
    pinned_tag(api)
    other.add(releases, body=[])
    api.add(releases, body=[], Link=f'<{other.url}{releases}?page=2>; rel="next"')
    line = one_error(llamapin(root, "check", token=TOKEN), TOKEN)
    assert "pointed the next page to another host" in line
    api.add(releases, 307, Location=f"{other.url}{releases}")
    line = one_error(llamapin(root, "check", token=TOKEN), TOKEN)
    assert "redirected to another host" in line
    assert api.tokens_seen() == [f"Bearer {TOKEN}"] * 4  # tag and releases, twice
    assert other.seen == []
