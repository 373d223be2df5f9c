"""A local GitHub: the REST endpoints llamapin uses, shaped by GitHub's OpenAPI description.

Responses start from the description's own examples with the fields that matter
overridden; requests are validated against the described request bodies (a bad
one gets GitHub's 422). Pagination (Link with next, last, prev and first, on
id-based /repositories/{id}/... URLs), conditional requests (ETag / 304), the
x-ratelimit-* headers on every answer, Location on 201, 401 for a wrong token and
403 for an exhausted rate limit behave as GitHub's do. Every call is recorded, so
a test can assert what was, and was never, called; ``tamper`` corrupts one answer
on purpose (and that answer is then exempt from the description check).

It is the one stand-in the project allows: GitHub's API itself.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.fakes.openapi import Spec

API = "/api/v3"
RATE_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-used",
    "x-ratelimit-resource",
)
REPO = r"/(?:repos/[^/]+/[^/]+|repositories/\d+)"  # by name, or by id as Link headers name it
FORBIDDEN = (
    re.compile(rf"^PUT {REPO}/pulls/\d+/merge$"),
    re.compile(rf"^POST {REPO}/pulls/\d+/reviews$"),
    re.compile(rf"^PUT {REPO}/pulls/\d+/reviews/\d+/events$"),
    re.compile(r"^POST /graphql$"),
    re.compile(rf"^PUT {REPO}/automerge$"),
)


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int
    response: Any
    authorization: str | None
    headers: dict[str, str] = field(default_factory=dict)
    tampered: bool = False

    @property
    def line(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Repo:
    full_name: str
    default_branch: str = "main"
    releases: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    tag_objects: dict[str, dict[str, str]] = field(default_factory=dict)
    compares: dict[str, dict[str, Any]] = field(default_factory=dict)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    bare: Path | None = None
    next_number: int = 1
    id: int = 0  # GitHub's repository id, for /repositories/{id}/... URLs


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub:
    def __init__(self, spec: Spec, token: str | None = None) -> None:
        self.spec: Spec = spec
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.calls: list[Call] = []
        self.downloads: dict[str, bytes] = {}
        self.rate_limited = False
        self.ids = 1000
        # Secondary rate limits, one per request while any are left: (403 or 429, the
        # Retry-After seconds or None), answered as GitHub does.
        self.secondary: list[tuple[int, str | None]] = []
        self.rate_reset: str | None = None  # an x-ratelimit-reset to send instead of +30 min
        self.moved: dict[str, str] = {}  # old full name -> new (a renamed repository)
        self.repo_ids: dict[int, str] = {}  # repository id -> full name, for /repositories/{id}
        # The primary rate limit, as the x-ratelimit-* headers of every answer report it.
        # It never runs out by itself: set rate_limited for that.
        self.rate_used = 0
        self.rate_reset_at = int(datetime.now(UTC).timestamp()) + 3600
        # Answers to corrupt on purpose: (method, path regex, change), each used once.
        self.tampering: list[tuple[str, re.Pattern[str], Callable[[Any], Any]]] = []
        # Who the token is: the author of the PRs and comments it makes. ``GET /user``
        # answers 403 when ``user_visible`` is False, as it does for an app installation
        # token (Actions' own GITHUB_TOKEN included).
        self.login = "llamapin-bot"
        self.user_visible = True
        # Requests refused with 403 "Resource not accessible by integration" (a token that
        # lacks the permission): (method, path regex in its /repos/{owner}/{repo} form).
        self.denied: list[tuple[str, re.Pattern[str]]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, headers, payload = fake.handle(
                    method, self.path, dict(self.headers.items()), raw
                )
                data = b"" if payload is None else payload
                if not isinstance(payload, bytes) and payload is not None:
                    data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    # --- addresses -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def api(self) -> str:
        return self.url + API

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- fixtures --------------------------------------------------------------------------

    def repo(self, full_name: str, **kw: Any) -> Repo:
        if full_name not in self.repos:
            repo = self.repos[full_name] = Repo(full_name, **kw)
            repo.id = self._id()
            self.repo_ids[repo.id] = full_name
        return self.repos[full_name]

    def tamper(self, method: str, path: str, change: Callable[[Any], Any]) -> None:
        """Corrupt the next successful answer to ``method`` on a path matching the regex
        ``path`` (in its /repos/{owner}/{repo}/... form): ``change`` gets the JSON GitHub
        would send and returns what is sent instead. Used once."""
        self.tampering.append((method, re.compile(path), change))

    def _id(self) -> int:
        self.ids += 1
        return self.ids

    def rename(self, old: str, new: str) -> None:
        """Rename a repository, as GitHub does: the old name answers a redirect to
        /repositories/{id} (301 for GET, 307 for other methods)."""
        repo = self.repos.pop(old)
        repo.full_name = new
        self.repos[new] = repo
        self.moved[old] = new
        self.repo_ids[repo.id] = new

    def _canonical(self, path: str) -> str:
        """/repositories/{id}/... as the /repos/{owner}/{repo}/... path it stands for."""
        m = re.match(r"^/repositories/(\d+)(/.*)?$", path)
        if m and int(m.group(1)) in self.repo_ids:
            return f"/repos/{self.repo_ids[int(m.group(1))]}{m.group(2) or ''}"
        return path

    def add_release(
        self,
        full_name: str,
        tag: str,
        commit: str,
        published: datetime,
        assets: list[tuple[str, bytes, bool | str]] = (),  # type: ignore[assignment]
        *,
        tag_commit: str | None = None,
        annotated: bool = False,
        body: str = "",
    ) -> dict[str, Any]:
        """A release of ``tag`` at ``commit``; assets are (name, bytes, digest): True for the
        bytes' own sha256, False for none, or a string to publish as the digest."""
        repo = self.repo(full_name)
        item: dict[str, Any] = self.spec.example("release")
        rid = self._id()
        base = f"{self.api}/repos/{full_name}"
        item.update(
            url=f"{base}/releases/{rid}",
            html_url=f"{self.url}/{full_name}/releases/tag/{tag}",
            assets_url=f"{base}/releases/{rid}/assets",
            upload_url=f"{self.url}/uploads/{full_name}/releases/{rid}/assets{{?name,label}}",
            tarball_url=f"{base}/tarball/{tag}",
            zipball_url=f"{base}/zipball/{tag}",
            id=rid,
            tag_name=tag,
            target_commitish=commit,
            name=tag,
            body=body,
            draft=False,
            prerelease=False,
            created_at=stamp(published),
            published_at=stamp(published),
        )
        item["assets"] = []
        for name, data, with_digest in assets:
            asset = self.spec.example("release")["assets"][0]
            path = f"/{full_name}/releases/download/{tag}/{name}"
            self.downloads[path] = data
            asset.update(
                id=self._id(),
                name=name,
                size=len(data),
                digest=(
                    with_digest
                    if isinstance(with_digest, str)
                    else f"sha256:{hashlib.sha256(data).hexdigest()}"
                    if with_digest
                    else None
                ),
                browser_download_url=self.url + path,
                url=f"{base}/releases/assets/{rid}",
                created_at=stamp(published),
                updated_at=stamp(published),
            )
            item["assets"].append(asset)
        repo.releases.append(item)
        repo.releases.sort(key=lambda r: r["created_at"], reverse=True)
        points_at = tag_commit or commit
        if annotated:
            tag_sha = hashlib.sha1(f"tag {tag}".encode(), usedforsecurity=False).hexdigest()
            repo.tag_objects[tag_sha] = {"type": "commit", "sha": points_at}
            repo.tags[tag] = {"type": "tag", "sha": tag_sha}
        else:
            repo.tags[tag] = {"type": "commit", "sha": points_at}
        return item

    def add_compare(
        self, full_name: str, base: str, head: str, subjects: list[str], files: list[str]
    ) -> None:
        self.repo(full_name).compares[f"{base}...{head}"] = {"subjects": subjects, "files": files}

    def pr(self, full_name: str, number: int) -> dict[str, Any]:
        return self.repos[full_name].pulls[number]

    def open_prs(self, full_name: str) -> list[dict[str, Any]]:
        return [p for p in self.repos[full_name].pulls.values() if p["state"] == "open"]

    @staticmethod
    def is_forbidden(call: Call) -> bool:
        """Does this call merge, approve, or enable auto-merge?"""
        body = json.dumps(call.body or {})
        return (
            any(f.match(call.line) for f in FORBIDDEN)
            or "auto_merge" in body
            or "APPROVE" in body
            or "enablePullRequestAutoMerge" in body
        )

    def forbidden_calls(self) -> list[Call]:
        return [c for c in self.calls if self.is_forbidden(c)]

    def invalid_responses(self) -> list[str]:
        """Every recorded response that does not match GitHub's published description."""
        problems = []
        for call in self.calls:
            path = self._canonical(call.path)
            missing = [h for h in RATE_HEADERS if h not in call.headers]
            if missing:
                problems.append(f"{call.line} -> {call.status}: no {', '.join(missing)} header")
            checked = path.startswith("/repos") or path == "/user"
            if call.status == 304 or not checked or call.tampered:
                continue
            for name in self.spec.response_headers(call.method, path, call.status):
                if name.lower() == "location" and name.lower() not in call.headers:
                    problems.append(f"{call.line} -> {call.status}: no Location header")
            errors = self.spec.response_errors(call.method, path, call.status, call.response)
            if call.status in (301, 307) and errors:
                # GitHub redirects every endpoint of a renamed repository; the description
                # documents it on a few (moved_permanently, temporary_redirect: basic-error).
                basic = {"$ref": "#/components/schemas/basic-error"}
                errors = self.spec._schema_errors(basic, call.response)
            for err in errors:
                problems.append(f"{call.line} -> {call.status}: {err}")
        return problems

    # --- the server side -----------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        if not parts.path.startswith(API + "/"):
            data = self.downloads.get(parts.path)
            if method != "GET" or data is None:
                return 404, {}, b"Not Found"
            return 200, {"Content-Type": "application/octet-stream"}, data
        path = parts.path[len(API) :]
        query = parse_qs(parts.query)
        body = json.loads(raw) if raw else None
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
        status, out_headers, payload = self._api(method, path, query, body, auth, headers)
        tampered = False
        for i, (verb, pattern, change) in enumerate(self.tampering):
            if status in (200, 201) and verb == method and pattern.search(self._canonical(path)):
                # A copy: the fake's own records (and earlier answers) stay as they were.
                payload, tampered = change(json.loads(json.dumps(payload))), True
                del self.tampering[i]
                break
        out = {
            "Content-Type": "application/json; charset=utf-8",
            **self._rate_headers(auth, status),
            **out_headers,
        }
        out = {k.lower(): v for k, v in out.items()}
        self.calls.append(Call(method, path, query, body, status, payload, auth, out, tampered))
        return status, out, payload

    def _rate_headers(self, auth: str | None, status: int) -> dict[str, str]:
        """GitHub's primary rate-limit headers (a 304 costs nothing)."""
        limit = 5000 if auth else 60
        if status != 304:
            self.rate_used += 1
        used = min(self.rate_used, limit - 1)
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(limit - used),
            "x-ratelimit-reset": str(self.rate_reset_at),
            "x-ratelimit-used": str(used),
            "x-ratelimit-resource": "core",
        }

    def _error(self, status: int, message: str) -> tuple[int, dict[str, str], Any]:
        return status, {}, {"message": message, "documentation_url": "https://docs.github.com/rest"}

    def _api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
        auth: str | None,
        headers: dict[str, str],
    ) -> tuple[int, dict[str, str], Any]:
        path = self._canonical(path)
        if self.token is not None and auth != f"Bearer {self.token}":
            return self._error(401, "Bad credentials")
        if self.rate_limited:
            status, _, payload = self._error(
                403, "API rate limit exceeded for installation. (But here's the good news...)"
            )
            reset = int(datetime.now(UTC).timestamp()) + 1800
            return (
                status,
                {
                    "x-ratelimit-limit": "60",
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": self.rate_reset or str(reset),
                    "x-ratelimit-used": "60",
                },
                payload,
            )
        if self.secondary:
            code, after = self.secondary.pop(0)
            status, _, payload = self._error(
                code,
                "You have exceeded a secondary rate limit. Please wait a few minutes before "
                "you try again. If you reach out to GitHub Support for help, please include "
                "the request ID ABCD:1234:5678.",
            )
            return status, {} if after is None else {"retry-after": after}, payload
        line = f"{method} {path}"
        if any(f.match(line) for f in FORBIDDEN):
            return self._error(403, "llamapin must never call this endpoint")
        if any(verb == method and pattern.search(path) for verb, pattern in self.denied):
            return self._error(403, "Resource not accessible by integration")
        if method == "GET" and path == "/user":
            if not self.user_visible:
                return self._error(403, "Resource not accessible by integration")
            user = self.spec.example(
                "private-user-response-with-public-and-private-profile-information"
            )
            # the authenticated user's own view, as GitHub labels it
            user.update(
                login=self.login, url=f"{self.api}/users/{self.login}", user_view_type="private"
            )
            return 200, {}, user
        if body is not None:
            errors = self.spec.request_errors(method, path, body)
            if errors:
                return (
                    422,
                    {},
                    {
                        "message": "Validation Failed",
                        "errors": [
                            {"resource": "Request", "code": "invalid", "message": e} for e in errors
                        ],
                        "documentation_url": "https://docs.github.com/rest",
                    },
                )
        match = re.match(r"^/repos/([^/]+/[^/]+)(/.*)?$", path)
        if match and match.group(1) in self.moved:
            rid = self.repos[self.moved[match.group(1)]].id
            location = f"{self.api}/repositories/{rid}{match.group(2) or ''}"
            if query:
                location += "?" + "&".join(f"{k}={v[0]}" for k, v in sorted(query.items()))
            status = 301 if method == "GET" else 307
            message = "Moved Permanently" if status == 301 else "Temporary Redirect"
            return (
                status,
                {"Location": location},
                {
                    "message": message,
                    "url": location,
                    "documentation_url": "https://docs.github.com/rest/guides/"
                    "best-practices-for-using-the-rest-api#follow-redirects",
                },
            )
        if not match or match.group(1) not in self.repos:
            return self._error(404, "Not Found")
        repo = self.repos[match.group(1)]
        rest = match.group(2) or ""
        inm = {k.lower(): v for k, v in headers.items()}.get("if-none-match")
        return self._route(repo, method, rest, query, body, inm)

    def _etagged(
        self, payload: Any, inm: str | None, extra: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        etag = '"' + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest() + '"'
        head = {"ETag": etag, **(extra or {})}
        if inm == etag:
            return 304, head, None
        return 200, head, payload

    def _route(
        self,
        repo: Repo,
        method: str,
        rest: str,
        query: dict[str, list[str]],
        body: Any,
        inm: str | None,
    ) -> tuple[int, dict[str, str], Any]:
        base = f"{self.api}/repos/{repo.full_name}"
        by_id = f"{self.api}/repositories/{repo.id}"  # what GitHub's Link headers name
        if method == "GET" and rest == "":
            item = self.spec.example("full-repository")
            item.update(
                full_name=repo.full_name,
                name=repo.full_name.split("/")[1],
                default_branch=repo.default_branch,
                has_discussions=False,  # required by the schema, missing from its example
                url=base,
            )
            return self._etagged(item, inm)
        if method == "GET" and rest == "/releases":
            return self._page(repo.releases, query, f"{by_id}/releases", inm)
        m = re.match(r"^/releases/tags/([^/]+)$", rest)
        if method == "GET" and m:  # published releases only, as GitHub answers
            found = [r for r in repo.releases if r["tag_name"] == m.group(1) and not r["draft"]]
            if not found:
                return self._error(404, "Not Found")
            return self._etagged(found[0], inm)
        m = re.match(r"^/git/ref/tags/(.+)$", rest)
        if method == "GET" and m:
            obj = repo.tags.get(m.group(1))
            if obj is None:
                return self._error(404, "Not Found")
            item = self.spec.example("git-ref")
            item.update(ref=f"refs/tags/{m.group(1)}", url=f"{base}/git/refs/tags/{m.group(1)}")
            item["object"] = {**obj, "url": f"{base}/git/objects/{obj['sha']}"}
            return self._etagged(item, inm)
        m = re.match(r"^/git/tags/([0-9a-f]{40})$", rest)
        if method == "GET" and m:
            target = repo.tag_objects.get(m.group(1))
            if target is None:
                return self._error(404, "Not Found")
            item = self.spec.example("git-tag")
            item.update(sha=m.group(1), url=f"{base}/git/tags/{m.group(1)}")
            item["object"] = {**target, "url": f"{base}/git/commits/{target['sha']}"}
            return self._etagged(item, inm)
        m = re.match(r"^/compare/(.+)$", rest)
        if method == "GET" and m:
            return self._compare(repo, m.group(1), inm)
        if rest == "/pulls" and method == "GET":
            state = query.get("state", ["open"])[0]
            want_base = query.get("base", [None])[0]
            want_head = query.get("head", [None])[0]  # "owner:branch", as GitHub takes it
            items = [
                self._simple(p)
                for p in sorted(repo.pulls.values(), key=lambda p: -int(p["number"]))
                if (state == "all" or p["state"] == state)
                and (want_base is None or p["base"]["ref"] == want_base)
                and (want_head is None or p["head"]["label"] == want_head)
            ]
            return self._page(items, query, f"{by_id}/pulls", inm)
        if rest == "/pulls" and method == "POST":
            return self._create_pull(repo, body)
        m = re.match(r"^/pulls/(\d+)$", rest)
        if m and method == "PATCH":
            pr = repo.pulls.get(int(m.group(1)))
            if pr is None:
                return self._error(404, "Not Found")
            for key in ("title", "body", "state"):
                if key in body:
                    pr[key] = body[key]
            if body.get("state") == "closed":
                pr["closed_at"] = stamp(datetime.now(UTC))
            return 200, {}, pr
        m = re.match(r"^/issues/(\d+)/labels$", rest)
        if m and method == "POST":
            pr = repo.pulls[int(m.group(1))]
            names = [n for n in body["labels"] if n not in [x["name"] for x in pr["labels"]]]
            for name in names:
                label = self.spec.example("label-items")[0]
                label.update(id=self._id(), name=name, default=False, url=f"{base}/labels/{name}")
                pr["labels"].append(label)
            return 200, {}, pr["labels"]
        m = re.match(r"^/pulls/(\d+)/requested_reviewers$", rest)
        if m and method == "POST":
            pr = repo.pulls[int(m.group(1))]
            for login in body.get("reviewers", []):
                user = self.spec.example("pull-request")["user"]
                user["login"] = login
                pr["requested_reviewers"].append(user)
            return 201, {}, self._simple(pr)
        m = re.match(r"^/issues/(\d+)/comments$", rest)
        if m and method == "POST":
            comment = self.add_comment(repo.full_name, int(m.group(1)), body["body"], self.login)
            return 201, {"Location": comment["url"]}, self._comment(comment)
        if m and method == "GET":
            if int(m.group(1)) not in repo.pulls:
                return self._error(404, "Not Found")
            items = [self._comment(c) for c in repo.comments if c["number"] == int(m.group(1))]
            return self._page(items, query, f"{by_id}/issues/{m.group(1)}/comments", inm)
        m = re.match(r"^/issues/comments/(\d+)$", rest)
        if m and method == "PATCH":
            found = [c for c in repo.comments if c["id"] == int(m.group(1))]
            if not found:
                return self._error(404, "Not Found")
            found[0].update(body=body["body"], updated_at=stamp(datetime.now(UTC)))
            found[0]["edits"] = found[0].get("edits", 0) + 1
            return 200, {}, self._comment(found[0])
        m = re.match(r"^/statuses/([0-9a-f]{40})$", rest)
        if m and method == "POST":
            status = self.spec.example("status")
            status.update(
                id=self._id(),
                state=body["state"],
                context=body.get("context", "default"),
                description=body.get("description"),
                target_url=body.get("target_url"),
                url=f"{base}/statuses/{m.group(1)}",
            )
            repo.statuses.append({"sha": m.group(1), **status})
            return 201, {"Location": status["url"]}, status
        return self._error(404, "Not Found")

    def _page(
        self, items: list[dict[str, Any]], query: dict[str, list[str]], url: str, inm: str | None
    ) -> tuple[int, dict[str, str], Any]:
        """One page of a list, with GitHub's Link header: prev, next, last and first, each
        on the id-based ``url`` (``/repositories/{id}/...``), the query kept."""
        per_page = min(100, int(query.get("per_page", ["30"])[0]))
        page = int(query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        kept = [(k, v[0]) for k, v in sorted(query.items()) if k != "page"]

        def to(n: int) -> str:
            return f"{url}?{urlencode([*kept, ('page', str(n))])}"

        links = []
        if page > 1:
            links.append(f'<{to(min(page - 1, last))}>; rel="prev"')
        if page < last:
            links += [f'<{to(page + 1)}>; rel="next"', f'<{to(last)}>; rel="last"']
        if page > 1:
            links.append(f'<{to(1)}>; rel="first"')
        extra = {"Link": ", ".join(links)} if links else {}
        return self._etagged(chunk, inm, extra)

    def _compare(
        self, repo: Repo, basehead: str, inm: str | None
    ) -> tuple[int, dict[str, str], Any]:
        data = repo.compares.get(basehead)
        if data is None:
            return self._error(404, "Not Found")
        item = self.spec.example("commit-comparison")
        commit_example = item["commits"][0]
        commits = []
        for i, subject in enumerate(data["subjects"]):
            entry = json.loads(json.dumps(commit_example))
            sha = hashlib.sha1(f"{basehead} {i}".encode(), usedforsecurity=False).hexdigest()
            entry["sha"] = sha
            entry["commit"]["message"] = subject + "\n\nupstream commit body"
            commits.append(entry)
        file_example = item["files"][0]
        files = [{**file_example, "filename": name, "status": "modified"} for name in data["files"]]
        item.update(
            status="ahead",
            ahead_by=len(commits),
            behind_by=0,
            total_commits=len(commits),
            commits=commits,
            files=files,
        )
        return self._etagged(item, inm)

    def _branch_exists(self, repo: Repo, branch: str) -> bool:
        if repo.bare is None:
            return True
        proc = subprocess.run(
            ["git", "--git-dir", str(repo.bare), "rev-parse", "--verify", f"refs/heads/{branch}"],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def _create_pull(self, repo: Repo, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        head, base_ref = body["head"], body["base"]
        if not self._branch_exists(repo, head):
            return (
                422,
                {},
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}],
                    "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                },
            )
        if any(p["head"]["ref"] == head and p["state"] == "open" for p in repo.pulls.values()):
            return (
                422,
                {},
                {
                    "message": "Validation Failed",
                    "errors": [
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": f"A pull request already exists for {head}.",
                        }
                    ],
                    "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                },
            )
        number = repo.next_number
        repo.next_number += 1
        pr = self.spec.example("pull-request")
        base = f"{self.api}/repos/{repo.full_name}"
        pr.update(
            id=self._id(),
            number=number,
            title=body["title"],
            body=body.get("body"),
            draft=bool(body.get("draft", False)),
            state="open",
            merged=False,
            merged_at=None,
            merged_by=None,
            closed_at=None,
            auto_merge=None,
            labels=[],
            requested_reviewers=[],
            requested_teams=[],  # the example's team lacks fields its schema requires
            maintainer_can_modify=bool(body.get("maintainer_can_modify", True)),
            url=f"{base}/pulls/{number}",
            html_url=f"{self.url}/{repo.full_name}/pull/{number}",
        )
        pr["head"] = {**pr["head"], "ref": head, "label": f"{repo.full_name.split('/')[0]}:{head}"}
        pr["user"] = {**pr["user"], "login": self.login}
        pr["base"] = {**pr["base"], "ref": base_ref}
        if repo.bare is not None:
            pr["head"]["sha"] = subprocess.run(
                ["git", "--git-dir", str(repo.bare), "rev-parse", f"refs/heads/{head}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        repo.pulls[number] = pr
        return 201, {"Location": pr["url"]}, pr

    def add_comment(self, full_name: str, number: int, body: str, login: str) -> dict[str, Any]:
        """A comment by ``login`` on issue or PR ``number``, as GitHub stores it (with the
        fake's own ``number`` and ``edits`` keys, which answers leave out)."""
        repo = self.repos[full_name]
        base = f"{self.api}/repos/{full_name}"
        comment: dict[str, Any] = self.spec.example("issue-comment")
        cid = self._id()
        comment.update(
            id=cid,
            body=body,
            url=f"{base}/issues/comments/{cid}",
            html_url=f"{self.url}/{full_name}/pull/{number}#issuecomment-{cid}",
            issue_url=f"{base}/issues/{number}",
        )
        comment["user"] = {**comment["user"], "login": login}
        repo.comments.append({"number": number, "edits": 0, **comment})
        return repo.comments[-1]

    @staticmethod
    def _comment(stored: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in stored.items() if k not in ("number", "edits")}

    def _simple(self, pr: dict[str, Any]) -> dict[str, Any]:
        simple: dict[str, Any] = self.spec.example("pull-request-simple")
        for key in simple:
            if key in pr:
                simple[key] = pr[key]
        return simple
