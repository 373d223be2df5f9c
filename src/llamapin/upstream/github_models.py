"""The GitHub answers llamapin reads, as typed models.

Every answer the forge layer uses is validated here before a field is read, so a
missing or mistyped field (a release without ``tag_name``, an asset whose ``size``
is a string, a ref without ``object.sha``, a pull request without ``number``) is
one :class:`ForgeError` that names the request and the field, never a KeyError or
a TypeError deep in a decision. Only the fields llamapin uses are declared; the
rest of an answer is ignored, so GitHub may add fields freely. Types are strict:
a number sent as text is an error, not silently converted.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import ErrorDetails

from llamapin.errors import ForgeError
from llamapin.upstream.github import GitHub, one_line, shown


class Answer(BaseModel):
    """A piece of a GitHub answer: extra fields ignored, declared ones strictly typed."""

    model_config = ConfigDict(extra="ignore", strict=True)
    label: ClassVar[str] = "answer"


def _time(value: str | None) -> str | None:
    """An ISO 8601 time as GitHub writes it (``2026-07-20T00:00:00Z``), checked."""
    if value is not None:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("not an ISO 8601 time") from None
    return value


class ReleaseAsset(Answer):
    label: ClassVar[str] = "release asset"
    name: str
    size: int | None = None
    digest: str | None = None
    browser_download_url: str


class Release(Answer):
    label: ClassVar[str] = "release"
    tag_name: str
    draft: bool = False
    prerelease: bool = False
    target_commitish: str | None = None
    created_at: str
    published_at: str | None = None
    html_url: str = ""
    assets: list[ReleaseAsset] = []

    _times = field_validator("created_at", "published_at")(_time)


class GitObject(Answer):
    label: ClassVar[str] = "git object"
    type: str
    sha: str


class GitRef(Answer):
    label: ClassVar[str] = "git ref"
    object: GitObject


class GitTag(Answer):
    label: ClassVar[str] = "git tag"
    object: GitObject


class CommitDetail(Answer):
    label: ClassVar[str] = "commit"
    message: str


class CompareCommit(Answer):
    label: ClassVar[str] = "compared commit"
    commit: CommitDetail


class CompareFile(Answer):
    label: ClassVar[str] = "changed file"
    filename: str


class Comparison(Answer):
    label: ClassVar[str] = "comparison"
    total_commits: int | None = None
    commits: list[CompareCommit] = []
    files: list[CompareFile] | None = None
    """None when GitHub lists no files (as for a very large comparison)."""


class Account(Answer):
    label: ClassVar[str] = "user"
    login: str


class Branch(Answer):
    label: ClassVar[str] = "pull request branch"
    ref: str


class PullRequest(Answer):
    """A pull request, full or as a list item (the fields both carry)."""

    label: ClassVar[str] = "pull request"
    number: int
    html_url: str
    head: Branch
    draft: bool = False
    merged_at: str | None = None
    user: Account | None = None

    _times = field_validator("merged_at")(_time)


class Repository(Answer):
    label: ClassVar[str] = "repository"
    default_branch: str


class Comment(Answer):
    label: ClassVar[str] = "comment"
    id: int


class IssueComment(Answer):
    """A comment on an issue or PR, as listed."""

    label: ClassVar[str] = "comment"
    id: int
    body: str | None = None
    user: Account | None = None


class Status(Answer):
    label: ClassVar[str] = "commit status"
    id: int
    state: str


M = TypeVar("M", bound=Answer)


def _problem(error: ErrorDetails) -> str:
    got = type(error["input"]).__name__.replace("NoneType", "null")
    if not error["loc"]:
        return f"it is not a JSON object (got {got})"
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "missing":
        return f"field {where} is missing"
    return f"field {where}: {error['msg']} (got {got})"


def read(model: type[M], data: Any, where: str) -> M:
    """``data`` as ``model``, or one ForgeError naming ``where`` it came from and the field.
    Only field names, the answer's JSON types and pydantic's messages enter the error,
    never the answer's values."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ForgeError(
            f"a {model.label} in GitHub's answer has an unexpected shape",
            one_line(f"{where}: {_problem(errors[0])}{more}", 300),
            "Check upstream.api_url / forge.api_url point at GitHub's API or a compatible "
            "one; if they do, GitHub changed this answer and llamapin needs an update",
        ) from None


def _where(gh: GitHub, method: str, path: str) -> str:
    return f"{method} {shown(gh.url(path))}"


def get(gh: GitHub, model: type[M], path: str) -> M:
    return read(model, gh.get(path), _where(gh, "GET", path))


def post(gh: GitHub, model: type[M], path: str, body: Any) -> M:
    return read(model, gh.post(path, body), _where(gh, "POST", path))


def patch(gh: GitHub, model: type[M], path: str, body: Any) -> M:
    return read(model, gh.patch(path, body), _where(gh, "PATCH", path))


def items(gh: GitHub, model: type[M], path: str, max_pages: int = 20) -> Iterator[M]:
    """A list endpoint's items as ``model``, page by page (the caller may stop early)."""
    where = _where(gh, "GET", path)
    for n, item in enumerate(gh.paginate(path, max_pages=max_pages), 1):
        yield read(model, item, f"{where} (item {n})")
