"""A small GitHub REST client: what ``check`` and ``bump`` need, nothing else.

* The token comes from the environment and goes only into the Authorization
  header: never into a message, a log line, a report or an exception.
* GETs are conditional (ETag / If-None-Match, remembered on disk), so polling an
  unchanged upstream costs no rate limit.
* The token goes only to the configured API origin (scheme, host, port). A
  ``Link`` page or a redirect on another origin is refused before anything is
  sent there; same-origin redirects (a renamed repository's 301, GitHub's 307)
  are followed here, a few at most, never by the HTTP library. A token that a
  header cannot carry (a line break, a control character, non-ASCII) is refused
  before any request, without echoing it.
* Lists are paginated by the ``Link`` header.
* 401, 403 (rate limit or permission), 404 and 422 each end in one clear line;
  5xx and connection failures are retried with backoff. A rate limit (403 or
  429) is waited out when GitHub says how long (``Retry-After``, or the reset
  time) and that fits in ``max_wait_s``; otherwise the error says when to retry.
  Text from an answer (messages, URLs) enters an error as one redacted line.

It has no method that merges, approves, or enables auto-merge, and the forge
layer above it never builds such a request (a test scans every call the suite
makes, and the package source, to prove it).
"""

from __future__ import annotations

import base64
import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from llamapin.errors import ConfigError, ForgeError

API_VERSION = "2022-11-28"
NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
MAX_RATE_WAITS = 5
# What a bearer token may hold: visible ASCII, no space (GitHub's are [A-Za-z0-9_]).
TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
DEFAULT_PORTS = {"http": 80, "https": 443}


class _Transient(Exception):
    pass


def redact(text: str, secret: str | None) -> str:
    """``text`` with every form of the secret replaced: as is, percent-encoded (in a
    URL), and as the Basic credential git and actions/checkout send
    (base64 of ``x-access-token:TOKEN``)."""
    if not secret:
        return text
    basic = base64.b64encode(f"x-access-token:{secret}".encode()).decode()
    for form in sorted({secret, quote(secret, safe=""), basic}, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def one_line(text: str, limit: int = 200) -> str:
    """Text from an answer made safe for a one-line message: control and format
    characters (line breaks, NUL, bidi overrides) become spaces, the length is capped."""
    flat = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _token_problem(token: str) -> str | None:
    """What makes ``token`` unfit for an Authorization header, without quoting it."""
    if TOKEN_CHARS.fullmatch(token):
        return None
    if any(c in "\r\n" for c in token):
        return "a line break"
    if any(unicodedata.category(c) == "Cc" for c in token):
        return "a control character"
    if not token.isascii():
        return "a non-ASCII character"
    return "a space"


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port made explicit."""
    return (url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme))


def shown(url: httpx.URL | str) -> str:
    """A URL for a message: no user-info, one line."""
    parsed = httpx.URL(url) if isinstance(url, str) else url
    if parsed.userinfo:
        parsed = parsed.copy_with(username=None, password=None)
    return one_line(str(parsed))


def _origin_text(url: httpx.URL) -> str:
    scheme, host, port = origin(url)
    return one_line(f"{scheme}://{host}" + (f":{port}" if port else ""), 120)


def _field(response: httpx.Response, key: str, text_ok: bool = True) -> Any:
    """One field of an error body, or its text (when ``text_ok``) when the body is not
    a JSON object."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200] if text_ok else ""
    return data.get(key, "") if isinstance(data, dict) else ""


def _error_items(items: Any) -> str:
    """GitHub's 422 ``errors`` as one line: each item's own message, or, for an item
    without one, ``Resource.field: code`` (``PullRequest.head: invalid``)."""
    said = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        message = item.get("message")
        if isinstance(message, str) and message.strip():
            said.append(message)
            continue
        name = ".".join(str(item[k]) for k in ("resource", "field") if item.get(k))
        said.append(f"{name or 'request'}: {item.get('code') or 'invalid'}")
    return one_line("; ".join(said), 300)


def _number(text: str, digits: int) -> int | None:
    """A header's whole number of at most ``digits`` ASCII digits, else None (a reset
    of 11 digits is before the year 5000, which datetime can print)."""
    return int(text) if re.fullmatch(rf"[0-9]{{1,{digits}}}", text) else None


@dataclass
class EtagStore:
    """Conditional-request memory: URL -> (ETag, body), kept in one JSON file."""

    path: Path | None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path | None) -> EtagStore:
        store = cls(path)
        if path is not None and path.is_file():
            try:
                store.entries = dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                store.entries = {}  # a damaged cache only costs a refetch
        return store

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries), encoding="utf-8")
        tmp.replace(self.path)


class NotFoundError(ForgeError):
    """GitHub answered 404: no such resource (or the token cannot see it)."""


@dataclass
class Page:
    data: Any
    next_url: str | None
    cached: bool


@dataclass
class GitHub:
    """One repository's API: ``api`` is https://api.github.com or a GHE ``/api/v3`` base."""

    api: str
    repo: str
    token: str | None = field(repr=False)  # never in a repr, a log or a traceback
    http: httpx.Client
    etags: EtagStore = field(default_factory=lambda: EtagStore(None))
    attempts: int = 3
    wait_max: float = 4.0
    calls: int = 0
    not_modified: int = 0
    clock: Callable[[], float] = time.time
    token_env: str | None = None
    """The variable the token came from, named in errors (the value never is)."""
    max_wait_s: float = 0.0
    """How long, in all, a rate limit may be waited out (0: fail at once)."""
    sleep: Callable[[float], None] = time.sleep
    api_origin: tuple[str, str, int | None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        where = f"${self.token_env}" if self.token_env else "upstream.token_env / forge.token_env"
        if self.token is not None:
            problem = _token_problem(self.token)
            if problem:
                raise ConfigError(
                    "the GitHub token cannot be used",
                    f"the token (from {where}) holds {problem}, which an HTTP header "
                    "cannot carry; it was not sent anywhere",
                    "Set the variable to the token alone: no line break, space or quotes",
                )
        try:
            base = httpx.URL(self.api)
            said = repr(shown(base))
        except httpx.InvalidURL:
            base, said = httpx.URL(), "the value"
        if base.scheme not in DEFAULT_PORTS or not base.host:
            raise ConfigError(
                "the GitHub API base is not a web address",
                f"{said} is not an http(s) URL with a host",
                "Set upstream.api_url / forge.api_url to https://api.github.com, or "
                "https://HOST/api/v3 for GitHub Enterprise",
            )
        if base.userinfo:
            raise ConfigError(
                "the GitHub API base holds credentials",
                f"{shown(base)} has a user name or password in it, which would be sent as "
                "Basic auth and printed in messages",
                f"Remove them from the URL and put the token in {where}",
            )
        self.api_origin = origin(base)

    def url(self, path: str) -> str:
        path = path.replace("{repo}", self.repo)
        return f"{self.api.rstrip('/')}/{path.lstrip('/')}"

    def _headers(self, etag: str | None) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if etag:
            headers["If-None-Match"] = etag
        return headers

    def _fail(self, method: str, url: str, response: httpx.Response) -> ForgeError:
        where = f"{method} {shown(url)}"
        message = redact(one_line(str(_field(response, "message"))), self.token)
        status = response.status_code
        if status == 401:
            return ForgeError(
                "GitHub rejected the token",
                f"{where} answered 401 ({message or 'Bad credentials'})",
                "Set a valid token in the environment variable the config names "
                "(upstream.token_env / forge.token_env)",
            )
        if self._wait_for(response) is not None:
            after = _number(response.headers.get("retry-after", ""), 9)
            text = response.headers.get("x-ratelimit-reset", "")
            reset = _number(text, 11)
            if after is not None:
                when = f"GitHub asks to wait {after} s (Retry-After)"
            elif reset is not None:
                stamp = datetime.fromtimestamp(reset, tz=UTC)
                minutes = max(0, round((reset - self.clock()) / 60))
                when = f"the limit resets at {stamp:%H:%M} UTC (in {minutes} min)"
            elif text:
                when = f"the limit resets at an unreadable time ({one_line(text, 40)!r})"
            else:
                when = "the limit resets later"
            waited = f", more than upstream.max_wait_s ({self.max_wait_s:g} s)"
            return ForgeError(
                "GitHub's rate limit is exhausted",
                f"{where} answered {status}; {when}{waited if self.max_wait_s else ''}",
                "Wait and run again, raise upstream.max_wait_s to let llamapin wait, or set a "
                "token (authenticated requests get a far higher limit); unchanged polls cost "
                "nothing thanks to ETags",
            )
        if status == 403:
            return ForgeError(
                "GitHub refused the request",
                f"{where} answered 403 ({message})",
                "Give the token the permission this needs (contents and pull requests: write "
                "for bump; read for check)",
            )
        if status == 404:
            said = redact(one_line(str(_field(response, "message", text_ok=False))), self.token)
            return NotFoundError(
                "GitHub has no such resource",
                f"{where} answered 404" + (f" ({said})" if said else ""),
                "Check the repository name and that the token can see it",
            )
        items = _field(response, "errors")
        errors = json.dumps(items)[:300]
        said = redact(_error_items(items), self.token)
        return ForgeError(
            "GitHub refused the request",
            f"{where} answered {status} ({message})" + (f": {said}" if said else ""),
            "Read the detail below; this is usually a request GitHub does not accept "
            "in the repository's current state",
            detail=redact(errors, self.token),
        )

    def _elsewhere(self, what: str, why: str) -> ForgeError:
        return ForgeError(
            what,
            why + f"; llamapin sends the token only to {_origin_text(httpx.URL(self.api))}, "
            "and sent nothing there",
            "Check upstream.api_url / forge.api_url: it must be the API base that answers "
            "itself. A hostile or misconfigured server can try to collect the token this way",
        )

    def _wait_for(self, response: httpx.Response) -> float | None:
        """Seconds GitHub asks to wait before asking again; None when this is not a rate
        limit. GitHub's rules: Retry-After if given; else the reset time when no request
        is left; else at least a minute."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        after = _number(headers.get("retry-after", ""), 9)
        if after is not None:
            return float(after)
        reset = _number(headers.get("x-ratelimit-reset", ""), 11)
        if headers.get("x-ratelimit-remaining") == "0" and reset is not None:
            return max(0.0, reset - self.clock())
        message = str(_field(response, "message")).lower()
        exhausted = headers.get("x-ratelimit-remaining") == "0"
        if response.status_code == 429 or exhausted or "rate limit" in message:
            return 60.0
        return None

    def _foreign(self, url: str) -> str | None:
        """Where ``url`` points, as text, when that is not the API's origin."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return one_line(url, 120)
        if origin(parsed) == self.api_origin and not parsed.userinfo:
            return None
        return _origin_text(parsed) if parsed.host else one_line(url, 120)

    def _redirect(self, method: str, target: str, response: httpx.Response) -> str:
        """Where a same-origin redirect leads; anything else is an error."""
        status = response.status_code
        location = response.headers.get("location")
        if not location:
            raise ForgeError(
                "GitHub's API answered a redirect without a Location",
                f"{method} {shown(target)} answered {status}",
                "Check upstream.api_url / forge.api_url, then run again",
            )
        # httpx has parsed it already (an unparsable one is a protocol error, retried).
        nxt = httpx.URL(target).join(location)
        elsewhere = self._foreign(str(nxt))
        if elsewhere:
            raise self._elsewhere(
                "GitHub's API redirected to another host",
                f"{method} {shown(target)} answered {status} to {elsewhere}",
            )
        if status in (301, 302, 303) and method != "GET":
            raise ForgeError(
                "GitHub's API redirected a write",
                f"{method} {shown(target)} answered {status} to {shown(nxt)}, which would "
                "turn it into a GET",
                "The repository was probably renamed or transferred: set forge.repo to its "
                "new name",
            )
        return str(nxt)

    def _once(self, method: str, url: str, body: Any) -> httpx.Response:
        cached = self.etags.entries.get(url) if method == "GET" else None
        headers = self._headers(cached["etag"] if cached else None)
        target = url
        for hop in range(MAX_REDIRECTS + 1):
            try:
                # Redirects are followed below, same origin only: the library would
                # carry the token to wherever a Location points, depending on its version.
                response = self.http.request(
                    method, target, headers=headers, json=body, follow_redirects=False
                )
            except httpx.TransportError as exc:
                raise _Transient(redact(f"{type(exc).__name__}: {exc}", self.token)) from exc
            self.calls += 1
            if response.status_code >= 500:
                raise _Transient(f"HTTP {response.status_code}")
            if response.status_code not in REDIRECTS:
                return response
            if hop < MAX_REDIRECTS:
                target = self._redirect(method, target, response)
        raise ForgeError(
            "GitHub's API redirects in a loop",
            f"{method} {shown(url)} was still redirected after {MAX_REDIRECTS} hops "
            f"(last to {shown(response.headers.get('location', ''))})",
            "Check upstream.api_url / forge.api_url and the repository name, then run again",
        )

    def _send(self, method: str, url: str, body: Any) -> httpx.Response:
        """One request, transient failures retried with backoff."""
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.25, max=self.wait_max),
            retry=retry_if_exception_type(_Transient),
        )
        try:
            for attempt in retrying:
                with attempt:
                    response = self._once(method, url, body)
        except RetryError as exc:
            raise ForgeError(
                "cannot reach GitHub's API",
                f"{method} {shown(url)}: {exc.last_attempt.exception()} "
                f"(after {self.attempts} attempts)",
                "Check the network and upstream.api_url / forge.api_url, then run again",
            ) from None
        return response

    def page(self, method: str, path_or_url: str, body: Any = None) -> Page:
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        elsewhere = self._foreign(url)
        if elsewhere:
            raise self._elsewhere(
                "a GitHub API request pointed to another host",
                f"{method} on {elsewhere} is not on the API's origin",
            )
        waited, waits = 0.0, 0
        while True:
            response = self._send(method, url, body)
            delay = self._wait_for(response)
            if delay is None:
                break
            delay = max(delay, 1.0)  # a Retry-After of 0 must not spin
            if waits == MAX_RATE_WAITS or waited + delay > self.max_wait_s:
                break
            self.sleep(delay)
            waited, waits = waited + delay, waits + 1
        link = response.headers.get("link", "")
        match = NEXT.search(link)
        next_url = None
        if match:
            try:
                next_url = str(httpx.URL(url).join(match.group(1)))
            except httpx.InvalidURL:
                next_url = match.group(1)  # refused by the origin check when followed
        if response.status_code == 304:
            self.not_modified += 1
            entry = self.etags.entries[url]
            return Page(entry["body"], entry.get("next"), True)
        if response.status_code >= 400:
            raise self._fail(method, url, response)
        try:
            data = response.json() if response.content else None
        except ValueError:
            raise ForgeError(
                "GitHub's API answered with something that is not JSON",
                f"{method} {url} answered {response.status_code} "
                f"({response.headers.get('content-type', 'no content type')})",
                "Check upstream.api_url / forge.api_url: it must be the API base "
                "(https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise)",
            ) from None
        etag = response.headers.get("etag")
        if method == "GET" and etag:
            self.etags.entries[url] = {"etag": etag, "body": data, "next": next_url}
        return Page(data, next_url, False)

    def get(self, path: str) -> Any:
        return self.page("GET", path).data

    def post(self, path: str, body: Any) -> Any:
        return self.page("POST", path, body).data

    def patch(self, path: str, body: Any) -> Any:
        return self.page("PATCH", path, body).data

    def paginate(self, path: str, per_page: int = 100, max_pages: int = 20) -> Iterator[Any]:
        """Items of a list endpoint, page by page (the caller may stop early)."""
        url: str | None = self.url(path) + ("&" if "?" in path else "?") + f"per_page={per_page}"
        previous = url
        for _ in range(max_pages):
            if url is None:
                return
            elsewhere = self._foreign(url)
            if elsewhere:
                raise self._elsewhere(
                    "GitHub's API pointed the next page to another host",
                    f"the Link header of GET {shown(str(previous))} names a next page on "
                    f"{elsewhere}",
                )
            page = self.page("GET", url)
            if not isinstance(page.data, list):
                got = "null" if page.data is None else type(page.data).__name__
                raise ForgeError(
                    "GitHub's answer has an unexpected shape",
                    f"GET {shown(url)} answered a {got} where a list endpoint answers a JSON array",
                    "Check upstream.api_url / forge.api_url point at GitHub's API or a "
                    "compatible one",
                )
            yield from page.data
            previous, url = url, page.next_url
