"""Regular expressions that come from users: config, suites, locators.

They are compiled with RE2, whose matching time is linear in the text, so no
pattern (``(a+)+$`` included) can make llamapin hang on an answer or a file.
RE2 has no backreferences and no lookaround; a pattern that needs them is a
configuration error that says so, raised where the pattern is loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]

from llamapin.errors import ConfigError

LIMITS = (
    "llamapin matches with RE2 (linear time): no backreferences (\\1), no lookaround "
    "((?=, (?!, (?<=, (?<!), \\z rather than \\Z"
)


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error becomes one ConfigError line, not absl log noise
    return options


def _text(text: str) -> str:
    """RE2 reads UTF-8: a lone surrogate (possible in JSON from an engine) becomes '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True)
class Match:
    _match: Any
    _names: dict[str, int]

    def span(self, group: int | str = 0) -> tuple[int, int]:
        index = self._names[group] if isinstance(group, str) else group
        start, end = self._match.span(index)
        return int(start), int(end)

    def group(self, group: int | str = 0) -> str:
        start, end = self.span(group)
        return str(self._match.string[start:end])


@dataclass(frozen=True)
class Pattern:
    pattern: str
    _compiled: Any

    @property
    def groups(self) -> int:
        return int(self._compiled.groups)

    @property
    def groupindex(self) -> dict[str, int]:
        return dict(self._compiled.groupindex)

    def search(self, text: str) -> Match | None:
        found = self._compiled.search(_text(text))
        return None if found is None else Match(found, self.groupindex)

    def finditer(self, text: str) -> Iterator[Match]:
        names = self.groupindex
        for found in self._compiled.finditer(_text(text)):
            yield Match(found, names)


def escape(text: str) -> str:
    """``text`` as a literal inside an RE2 pattern."""
    return str(re2.escape(text))


def asset_pattern(pattern: str, tag: str, origin: str) -> Pattern:
    """A release-asset pattern with ``{tag}`` filled in, matching a whole file name."""
    return compile_user("^(?:" + pattern.replace("{tag}", escape(tag)) + ")$", origin)


@functools.lru_cache(maxsize=256)
def _compile(pattern: str, multiline: bool) -> Any:
    compiled = re2.compile(_text(pattern), _options())  # errors quote the user's own text
    return re2.compile("(?m)" + _text(pattern), _options()) if multiline else compiled


def compile_user(
    pattern: object,
    origin: str,
    *,
    multiline: bool = False,
    error: type[ConfigError] = ConfigError,
) -> Pattern:
    """Compile a user's pattern, or raise ``error`` naming where it came from."""
    if not isinstance(pattern, str):
        raise error(
            f"bad regex in {origin}",
            f"it is a {type(pattern).__name__}, not a string",
            "Write the pattern as a TOML string",
        )
    try:
        return Pattern(pattern, _compile(pattern, multiline))
    except re2.error as exc:
        why = bytes(exc.args[0]).decode("utf-8", "replace")
        raise error(
            f"bad regex {pattern[:200]!r} in {origin}", why, f"Fix the pattern; {LIMITS}"
        ) from None
