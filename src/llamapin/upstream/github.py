"""A small GitHub REST client: what ``check`` and ``bump`` need, nothing else.

* The token comes from the environment and goes only into the Authorization
  header: never into a message, a log line, a report or an exception.
* GETs are conditional (ETag / If-None-Match, remembered on disk), so polling an
  unchanged upstream costs no rate limit.
* Lists are paginated by the ``Link`` header.
* 401, 403 (rate limit or permission), 404 and 422 each end in one clear line;
  5xx and connection failures are retried with backoff.

It has no method that merges, approves, or enables auto-merge, and the forge
layer above it never builds such a request (a test scans every call the suite
makes, and the package source, to prove it).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from llamapin.errors import ForgeError

API_VERSION = "2022-11-28"
NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


class _Transient(Exception):
    pass


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of the secret replaced."""
    if not secret:
        return text
    return text.replace(secret, "***")


def _field(response: httpx.Response, key: str) -> Any:
    """One field of an error body, or its text when the body is not a JSON object."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    return data.get(key, "") if isinstance(data, dict) else ""


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
    token: str | None
    http: httpx.Client
    etags: EtagStore = field(default_factory=lambda: EtagStore(None))
    attempts: int = 3
    wait_max: float = 4.0
    calls: int = 0
    not_modified: int = 0
    clock: Callable[[], float] = time.time

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
        where = f"{method} {url}"
        message = redact(str(_field(response, "message")), self.token)
        status = response.status_code
        if status == 401:
            return ForgeError(
                "GitHub rejected the token",
                f"{where} answered 401 ({message or 'Bad credentials'})",
                "Set a valid token in the environment variable the config names "
                "(upstream.token_env / forge.token_env)",
            )
        remaining = response.headers.get("x-ratelimit-remaining")
        if status in (403, 429) and (remaining == "0" or "rate limit" in message.lower()):
            reset = response.headers.get("x-ratelimit-reset", "")
            when = "later"
            if reset.isdigit():
                stamp = datetime.fromtimestamp(int(reset), tz=UTC)
                minutes = max(0, round((int(reset) - self.clock()) / 60))
                when = f"at {stamp:%H:%M} UTC (in {minutes} min)"
            return ForgeError(
                "GitHub's rate limit is exhausted",
                f"{where} answered {status}; the limit resets {when}",
                "Wait for the reset, or set a token (authenticated requests get a far "
                "higher limit); unchanged polls cost nothing thanks to ETags",
            )
        if status == 403:
            return ForgeError(
                "GitHub refused the request",
                f"{where} answered 403 ({message})",
                "Give the token the permission this needs (contents and pull requests: write "
                "for bump; read for check)",
            )
        if status == 404:
            return ForgeError(
                "GitHub has no such resource",
                f"{where} answered 404",
                "Check the repository name and that the token can see it",
            )
        errors = json.dumps(_field(response, "errors"))[:300]
        return ForgeError(
            "GitHub refused the request",
            f"{where} answered {status} ({message})",
            "Read the detail below; this is usually a request GitHub does not accept "
            "in the repository's current state",
            detail=redact(errors, self.token),
        )

    def _once(self, method: str, url: str, body: Any) -> httpx.Response:
        cached = self.etags.entries.get(url) if method == "GET" else None
        try:
            response = self.http.request(
                method,
                url,
                headers=self._headers(cached["etag"] if cached else None),
                json=body,
            )
        except httpx.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        self.calls += 1
        if response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}")
        return response

    def page(self, method: str, path_or_url: str, body: Any = None) -> Page:
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
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
                f"{method} {url}: {exc.last_attempt.exception()} (after {self.attempts} attempts)",
                "Check the network and upstream.api_url / forge.api_url, then run again",
            ) from None
        link = response.headers.get("link", "")
        match = NEXT.search(link)
        next_url = match.group(1) if match else None
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
        for _ in range(max_pages):
            if url is None:
                return
            page = self.page("GET", url)
            yield from page.data
            url = page.next_url
