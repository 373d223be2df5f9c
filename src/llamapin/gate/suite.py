"""Prompts and assertions. Pure: text in, pass/fail with a reason out."""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llamapin.errors import DOCS_URL, ConfigError
from llamapin.saferegex import compile_user

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
        matched = compile_user(value, "a suite assertion").search(text)
        return None if matched else f"does not match /{value}/"
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
    except RecursionError:  # an engine's answer is untrusted text
        return "has JSON nested too deeply to read"
    return (
        None if parsed == value else f"JSON is {json.dumps(parsed)}, expected {json.dumps(value)}"
    )


def _bad(origin: str, why: str) -> ConfigError:
    return ConfigError(f"invalid suite {origin}", why, f"See {DOCS_URL} for the suite format")


PROMPT_KEYS = frozenset(("name", "text", "endpoint", "n_predict", "system", *KINDS))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json_value(value: object) -> bool:
    """A value json_equals can compare and print: TOML without dates and times."""
    if isinstance(value, dict):
        return all(_json_value(v) for v in value.values())
    if isinstance(value, list):
        return all(_json_value(v) for v in value)
    return isinstance(value, str | int | float | bool)


def _assertion(kind: str, value: object, where: str, origin: str) -> Assertion:
    """Check one assertion's value when the suite is loaded, before any engine starts."""
    ok = {
        "contains": (isinstance(value, str) and value.strip() != "") or _is_number(value),
        "regex": isinstance(value, str),
        "equals_number": _is_number(value),
        "one_of": isinstance(value, list)
        and bool(value)
        and all(isinstance(v, str) and v.strip() for v in value),
        "json_equals": _json_value(value),
    }[kind]
    if not ok:
        want = {
            "contains": "a non-empty string or a number",
            "regex": "a string",
            "equals_number": "a number, e.g. 7 (not a string)",
            "one_of": "a non-empty list of non-empty strings",
            "json_equals": "a TOML value without dates or times",
        }[kind]
        raise _bad(origin, f"{where}: {kind} must be {want}, not {value!r}"[:300])
    if kind == "regex":
        compile_user(value, f"suite {origin}, {where}")
    return Assertion(kind, value)


def _prompt(raw: object, i: int, origin: str) -> Prompt:
    if not isinstance(raw, dict):
        raise _bad(origin, f"[[prompt]] entry {i + 1} is a {type(raw).__name__}, not a table")
    name = raw.get("name", f"prompt-{i + 1}")
    if not isinstance(name, str) or not name.strip():
        raise _bad(origin, f"[[prompt]] entry {i + 1} has a name that is not a non-empty string")
    where = f"prompt {name!r}"
    unknown = sorted(str(k) for k in raw if k not in PROMPT_KEYS)
    if unknown:
        raise _bad(origin, f"{where} has unknown key(s) {', '.join(unknown)}")
    if "text" not in raw:
        raise _bad(origin, f"{where} has no text")
    if not isinstance(raw["text"], str):
        raise _bad(origin, f"{where}: text must be a string")
    assertions = [_assertion(kind, raw[kind], where, origin) for kind in KINDS if kind in raw]
    if not assertions:
        raise _bad(origin, f"{where} has no assertion (one of {', '.join(KINDS)})")
    endpoint = raw.get("endpoint", "completion")
    if endpoint not in ("completion", "chat"):
        raise _bad(origin, f"{where} has endpoint {endpoint!r}; use completion or chat")
    n_predict = raw.get("n_predict", 16)
    if not isinstance(n_predict, int) or isinstance(n_predict, bool) or n_predict < 1:
        raise _bad(origin, f"{where}: n_predict must be a positive whole number, not {n_predict!r}")
    system = raw.get("system")
    if system is not None and not isinstance(system, str):
        raise _bad(origin, f"{where}: system must be a string")
    return Prompt(name, raw["text"], tuple(assertions), endpoint, n_predict, system)


def parse_suite(data: dict[str, Any], origin: str) -> Suite:
    """A suite, with every value checked (types, regexes) before any engine starts."""
    raw_prompts = data.get("prompt", [])
    if not isinstance(raw_prompts, list) or not raw_prompts:
        raise _bad(origin, "it has no [[prompt]] entries")
    prompts = tuple(_prompt(raw, i, origin) for i, raw in enumerate(raw_prompts))
    name = data.get("name", origin)
    if not isinstance(name, str):
        raise _bad(origin, "its name must be a string")
    return Suite(name, prompts)


def load_suite(path: Path | None) -> Suite:
    if path is None:
        from importlib.resources import files

        text = files("llamapin").joinpath("suites/default.toml").read_text()
        return parse_suite(tomllib.loads(text), "default")
    try:
        return parse_suite(tomllib.loads(path.read_text(encoding="utf-8")), str(path))
    except FileNotFoundError:
        raise _bad(str(path), "the file does not exist") from None
    except IsADirectoryError:
        raise _bad(str(path), "it is a directory, where a file belongs") from None
    except UnicodeDecodeError as exc:
        raise _bad(str(path), f"it is not UTF-8 text (byte {exc.start})") from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise _bad(str(path), str(exc) or "it is nested too deeply") from None
