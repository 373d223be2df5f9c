"""The GitHub client against hostile API answers: the token goes only to the API's origin.

Two real HTTP servers on 127.0.0.1 (two ports, so two origins) record every request's
headers; the tests make the API one send Link headers and redirects that point at the
other, and assert the other never saw the token (or anything at all).
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from llamapin.errors import ConfigError, ForgeError, LlamapinError
from llamapin.fetch import client
from llamapin.upstream.github import EtagStore, GitHub, one_line, redact
from tests.fakes.github import FakeGitHub

TOKEN = "ghp_zz9TopSecretTokenValue0042"  # noqa: S105 (made up for the tests)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Origin:
    """A real server that answers scripted (status, headers, body) per path and records
    every request it gets, headers included."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                origin.seen.append(
                    Seen(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                status, answer, data = origin.routes.get(
                    self.path.split("?")[0], (404, {}, b'{"message": "Not Found"}')
                )
                self.send_response(status)
                for key, value in answer.items():
                    self.send_header(key, value.replace("{self}", origin.url))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, status: int = 200, body: Any = None, **headers: str) -> None:
        data = body if isinstance(body, bytes) else json.dumps({} if body is None else body)
        answer = {k.replace("_", "-"): v for k, v in headers.items()}
        self.routes[path] = (status, answer, data if isinstance(data, bytes) else data.encode())

    def tokens_seen(self) -> list[str]:
        return [s.headers["authorization"] for s in self.seen if "authorization" in s.headers]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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


def gh(base: str, token: str | None = TOKEN, **kw: Any) -> GitHub:
    return GitHub(base, "o/r", token, client(), EtagStore(None), wait_max=0.01, **kw)


def refused(call: Any, match: str) -> str:
    """Run ``call``, expect a one-line llamapin error that never names the token."""
    with pytest.raises(LlamapinError, match=match) as info:
        call()
    text = info.value.render()
    assert "\n" not in text and TOKEN not in text, text
    return text


# --- pagination ---------------------------------------------------------------------------------


def test_a_link_to_another_origin_is_refused_before_anything_is_sent(
    api: Origin, other: Origin
) -> None:
    other.add("/repos/o/r/releases", body=[{"stolen": True}])
    api.add(
        "/repos/o/r/releases",
        body=[{"n": 1}],
        Link=f'<{other.url}/repos/o/r/releases?page=2>; rel="next"',
    )
    client_ = gh(api.url)
    pages = client_.paginate("repos/{repo}/releases")
    assert next(pages) == {"n": 1}  # the first page is ours
    text = refused(lambda: next(pages), "pointed the next page to another host")
    assert other.url in text and "sent nothing there" in text
    assert api.tokens_seen() == [f"Bearer {TOKEN}"]  # the token was in play...
    assert TOKEN not in repr(client_)
    assert other.seen == []  # ...and the other origin never heard from us


@pytest.mark.parametrize(
    "link",
    [
        "//127.0.0.1:{port}/repos/o/r/releases?page=2",  # protocol-relative: another port
        "http://localhost:{api_port}/repos/o/r/releases?page=2",  # same port, another host
        "https://127.0.0.1:{api_port}/repos/o/r/releases?page=2",  # another scheme
        "http://user:pw@127.0.0.1:{api_port}/repos/o/r/releases?page=2",  # credentials
        "http://[::1/broken",  # not a URL at all
    ],
)
def test_every_kind_of_foreign_next_page_is_refused(api: Origin, other: Origin, link: str) -> None:
    port = other.httpd.server_address[1]
    api_port = api.httpd.server_address[1]
    api.add(
        "/repos/o/r/releases",
        body=[1],
        Link=f'<{link.format(port=port, api_port=api_port)}>; rel="next"',
    )
    refused(lambda: list(gh(api.url).paginate("repos/{repo}/releases")), "another host")
    assert len(api.seen) == 1 and other.seen == []


def test_a_relative_link_on_the_same_origin_is_followed(api: Origin) -> None:
    api.add("/repos/o/r/releases", body=[1], Link='</repos/o/r/more?page=2>; rel="next"')
    api.add("/repos/o/r/more", body=[2])
    assert list(gh(api.url).paginate("repos/{repo}/releases")) == [1, 2]
    assert api.tokens_seen() == [f"Bearer {TOKEN}"] * 2


def test_an_absolute_url_elsewhere_is_never_requested(api: Origin, other: Origin) -> None:
    refused(lambda: gh(api.url).get(other.url + "/repos/o/r"), "pointed to another host")
    assert other.seen == []


# --- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused(api: Origin, other: Origin, status: int) -> None:
    other.add("/collect", body={"ok": True})
    api.add("/repos/o/r", status, Location=f"{other.url}/collect")
    text = refused(lambda: gh(api.url).get("repos/{repo}"), "redirected to another host")
    assert f"answered {status} to {other.url}" in text
    assert other.seen == [] and other.tokens_seen() == []


def test_httpx_itself_is_not_relied_on(api: Origin, other: Origin) -> None:
    """What httpx 0.28.1 does on its own: it strips Authorization on a cross-origin
    redirect, but it sends the request. The client follows nothing through httpx."""
    other.add("/collect", body={"ok": True})
    api.add("/hop", 307, Location=f"{other.url}/collect")
    with httpx.Client(follow_redirects=True) as plain:
        plain.get(api.url + "/hop", headers={"Authorization": f"Bearer {TOKEN}"})
    assert len(other.seen) == 1 and other.tokens_seen() == []  # reached, token stripped
    other.seen.clear()
    refused(lambda: gh(api.url).get(api.url + "/hop"), "redirected to another host")
    assert other.seen == []  # ours does not even connect


def test_a_same_origin_redirect_is_followed_with_the_token(api: Origin) -> None:
    api.add("/repos/o/r", 301, Location="/repositories/7")
    api.add("/repositories/7", body={"full_name": "o/r2"})
    assert gh(api.url).get("repos/{repo}") == {"full_name": "o/r2"}
    assert api.tokens_seen() == [f"Bearer {TOKEN}"] * 2
    api.add("/repos/o/r/pulls", 307, Location="/repositories/7/pulls")
    api.add("/repositories/7/pulls", 201, body={"number": 1})
    assert gh(api.url).post("repos/{repo}/pulls", {"title": "t"}) == {"number": 1}
    assert api.seen[-1].method == "POST" and json.loads(api.seen[-1].body) == {"title": "t"}


def test_a_write_is_never_turned_into_a_read(api: Origin) -> None:
    api.add("/repos/o/r/pulls", 301, Location="/repositories/7/pulls")
    refused(
        lambda: gh(api.url).post("repos/{repo}/pulls", {"title": "t"}),
        "redirected a write: POST .* answered 301 .*set forge.repo",
    )
    assert [s.method for s in api.seen] == ["POST"]


def test_a_redirect_loop_ends_in_one_line(api: Origin) -> None:
    api.add("/repos/o/r/releases", 302, Location="/repos/o/r/releases?again=1")
    text = refused(lambda: gh(api.url).get("repos/{repo}/releases"), "redirects in a loop")
    assert "after 5 hops" in text
    assert len(api.seen) == 6  # five hops followed, the sixth answer refused


def test_a_redirect_without_a_usable_location(api: Origin) -> None:
    api.add("/repos/o/r", 301)
    refused(lambda: gh(api.url).get("repos/{repo}"), "redirect without a Location")
    api.add("/repos/o/r", 301, Location="http://[::1/x")
    refused(lambda: gh(api.url).get("repos/{repo}"), "Invalid URL in location header")


def test_a_renamed_repository_on_the_fake_github(github: FakeGitHub) -> None:
    """GitHub's own shape: the old name answers 301 (GET) or 307 (writes) to
    /repositories/{id}; the client follows it on the same origin, token and body intact."""
    github.token = TOKEN
    for n in range(5):
        github.add_release(
            "ggerganov/llama.cpp", f"b{n + 1}", "a" * 40, datetime(2026, 7, 1, tzinfo=UTC)
        )
    github.rename("ggerganov/llama.cpp", "ggml-org/llama.cpp")
    old = GitHub(github.api, "ggerganov/llama.cpp", TOKEN, client(), wait_max=0.01)
    names = [r["tag_name"] for r in old.paginate("repos/{repo}/releases", per_page=2)]
    assert names == ["b1", "b2", "b3", "b4", "b5"]
    assert old.get("repos/{repo}")["full_name"] == "ggml-org/llama.cpp"
    status = old.post(f"repos/{{repo}}/statuses/{'b' * 40}", {"state": "success"})
    assert status["state"] == "success"
    assert [c.status for c in github.calls][:2] == [301, 200]
    assert 307 in [c.status for c in github.calls]
    assert all(c.authorization == f"Bearer {TOKEN}" for c in github.calls)
    assert github.invalid_responses() == []


# --- the token itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (TOKEN + "\r\n", "a line break"),
        (TOKEN[:8] + "\n" + TOKEN[8:], "a line break"),
        (TOKEN[:8] + "\x00" + TOKEN[8:], "a control character"),
        (TOKEN + "\t", "a control character"),
        (TOKEN + "é", "a non-ASCII character"),
        (TOKEN[:8] + " " + TOKEN[8:], "a space"),
    ],
)
def test_a_token_a_header_cannot_carry_is_refused_unsaid(
    api: Origin, token: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        gh(api.url, token, token_env="MY_TOKEN")  # noqa: S106 (a variable's name)
    text = info.value.render()
    assert f"$MY_TOKEN) holds {problem}" in text and "\n" not in text
    for piece in (TOKEN, TOKEN[:8], TOKEN[8:], repr(token)[1:-1]):
        assert piece not in text
    assert api.seen == []


def test_the_api_base_carries_no_credentials(api: Origin) -> None:
    with_creds = api.url.replace("http://", "http://x-access-token:hunter2secret@")
    text = refused(lambda: gh(with_creds), "holds credentials")
    assert "hunter2secret" not in text and "upstream.token_env" in text
    refused(lambda: gh("api.github.com"), "'api.github.com' is not an http")
    text = refused(lambda: gh("ftp://u:hunter2secret@h/"), "'ftp://h/' is not an http")
    assert "hunter2secret" not in text
    refused(lambda: gh("http://[::1"), "the value is not an http")
    assert api.seen == []


def test_redact_covers_every_form_the_token_travels_in() -> None:
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    text = f"a {TOKEN} b {basic} c"
    assert redact(text, TOKEN) == "a *** b *** c"
    assert redact("x=a%2Fb", "a/b") == "x=***"
    assert redact("nothing", None) == "nothing"


def test_hostile_text_in_an_answer_stays_one_line(api: Origin) -> None:
    message = f"nope\r\nerror: fake line\u202e {TOKEN} " + "x" * 500
    api.add("/repos/o/r", 403, body=json.dumps({"message": message}).encode())
    with pytest.raises(ForgeError) as info:
        gh(api.url).get("repos/{repo}")
    text = info.value.render()
    assert "\n" not in text and "\u202e" not in text and TOKEN not in text
    assert "nope error: fake line *** xxx" in text and "..." in text
    assert one_line("a\x00b\n\nc") == "a b c"
