"""Prompts and assertions. Pure: text in, pass/fail with a reason out."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llamapin.errors import ConfigError

Endpoint = Literal["completion", "chat"]
KINDS = ("contains", "regex", "equals_number", "json_equals", "one_of")
FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Assertion:
    kind: str
    value: Any

    def describe(self) -> str:
        return f"{self.kind} {self.value!r}"


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    assertions: tuple[Assertion, ...]
    endpoint: Endpoint = "completion"
    n_predict: int = 16
    system: str | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    prompts: tuple[Prompt, ...] = field(default_factory=tuple)


def normalize(text: str) -> str:
    """Strip whitespace and one surrounding code fence."""
    text = text.strip()
    match = FENCE.match(text)
    return match.group(1).strip() if match else text


def check(assertion: Assertion, answer: str) -> str | None:
    """None when the answer satisfies the assertion, else why not."""
    text = normalize(answer)
    folded = " ".join(text.split()).casefold()
    kind, value = assertion.kind, assertion.value
    if kind == "contains":
        return (
            None
            if " ".join(str(value).split()).casefold() in folded
            else f"does not contain {value!r}"
        )
    if kind == "regex":
        return None if re.search(str(value), text) else f"does not match /{value}/"
    if kind == "one_of":
        options = [str(v).casefold() for v in value]
        hit = any(option in folded for option in options)
        return None if hit else f"contains none of {list(value)!r}"
    if kind == "equals_number":
        found = NUMBER.search(text)
        if found is None:
            return f"has no number (expected {value})"
        return (
            None
            if float(found.group()) == float(value)
            else f"first number is {found.group()}, expected {value}"
        )
    # json_equals: the first JSON object or array in the answer
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return "has no JSON value"
    try:
        parsed, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        return f"has malformed JSON ({exc.msg})"
    return (
        None if parsed == value else f"JSON is {json.dumps(parsed)}, expected {json.dumps(value)}"
    )


def _bad(origin: str, why: str) -> ConfigError:
    return ConfigError(f"invalid suite {origin}", why, "See docs/adopting.md for the suite format")


def parse_suite(data: dict[str, Any], origin: str) -> Suite:
    prompts = []
    raw_prompts = data.get("prompt", [])
    if not isinstance(raw_prompts, list) or not raw_prompts:
        raise _bad(origin, "it has no [[prompt]] entries")
    for i, raw in enumerate(raw_prompts):
        name = str(raw.get("name", f"prompt-{i + 1}"))
        if "text" not in raw:
            raise _bad(origin, f"prompt {name!r} has no text")
        assertions = []
        for kind in KINDS:
            if kind in raw:
                assertions.append(Assertion(kind, raw[kind]))
        if not assertions:
            raise _bad(origin, f"prompt {name!r} has no assertion (one of {', '.join(KINDS)})")
        endpoint = raw.get("endpoint", "completion")
        if endpoint not in ("completion", "chat"):
            raise _bad(origin, f"prompt {name!r} has endpoint {endpoint!r}; use completion or chat")
        prompts.append(
            Prompt(
                name,
                str(raw["text"]),
                tuple(assertions),
                endpoint,
                int(raw.get("n_predict", 16)),
                raw.get("system"),
            )
        )
    return Suite(str(data.get("name", origin)), tuple(prompts))


def load_suite(path: Path | None) -> Suite:
    if path is None:
        from importlib.resources import files

        text = files("llamapin").joinpath("suites/default.toml").read_text()
        return parse_suite(tomllib.loads(text), "default")
    try:
        return parse_suite(tomllib.loads(path.read_text(encoding="utf-8")), str(path))
    except FileNotFoundError:
        raise _bad(str(path), "the file does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise _bad(str(path), str(exc)) from None
