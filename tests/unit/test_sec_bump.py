"""publish reads the prepare job's plan as untrusted input: every field is checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamapin.errors import ForgeError
from llamapin.upstream.bump import BumpResult, Plan, read_plan

GOOD: dict[str, Any] = {
    "schema": 1,
    "action": "prepared",
    "message": "prepared b10088",
    "branch": "llamapin/bump-b10088",
    "build": "b10088",
    "base": "main",
    "base_sha": "a" * 40,
    "head_sha": "b" * 40,
    "files": ["llamapin.lock"],
    "outcome": "pass",
    "reasons": [],
    "body": "## llama.cpp b10068 -> b10088",
}


def write(tmp_path: Path, data: Any) -> Path:
    (tmp_path / "plan.json").write_text(json.dumps(data))
    return tmp_path


def refused(tmp_path: Path, why: str) -> None:
    with pytest.raises(ForgeError) as info:
        read_plan(tmp_path)
    assert info.value.what == "refusing to publish the prepared bump"
    assert why in info.value.why, info.value.why


def test_a_good_plan_and_a_plan_of_nothing(tmp_path: Path) -> None:
    plan = read_plan(write(tmp_path, GOOD))
    assert isinstance(plan, Plan) and plan.branch == "llamapin/bump-b10088"
    none = read_plan(write(tmp_path, {"schema": 1, "action": "none", "message": "@x <img>"}))
    assert isinstance(none, BumpResult) and "@x" not in none.message


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"schema": 2}, "field schema"),
        ({"branch": "llamapin/bump-b1; rm -rf /"}, "field branch"),
        ({"branch": "llamapin/bump-b10088\n"}, "field branch"),
        ({"branch": "refs/heads/main"}, "field branch"),
        ({"build": "b10088x"}, "field build"),
        ({"base": "-main"}, "field base"),
        ({"base": "a..b"}, "field base"),
        ({"base_sha": "A" * 40}, "field base_sha"),
        ({"head_sha": "b" * 39}, "field head_sha"),
        ({"files": "llamapin.lock"}, "field files"),
        ({"files": ["x"] * 65}, "field files"),
        ({"outcome": "PASS"}, "field outcome"),
        ({"reasons": [1]}, "field reasons.0"),
        ({"body": "x" * 60_001}, "field body"),
        ({"draft": False}, "field draft"),
        ({"branch": "llamapin/bump-b10091"}, "names branch llamapin/bump-b10091 for build b10088"),
        ({"body": "a\x00b"}, "NUL"),
        ({"body": None}, "lacks a field"),
    ],
)
def test_tampered_fields_are_refused(tmp_path: Path, change: dict[str, Any], why: str) -> None:
    refused(write(tmp_path, {**GOOD, **change}), why)


def test_unreadable_plans_are_refused(tmp_path: Path) -> None:
    refused(tmp_path, "plan.json is missing")
    (tmp_path / "plan.json").write_bytes(b"\xff\xfe{}")
    refused(tmp_path, "not UTF-8 JSON (UnicodeDecodeError)")
    (tmp_path / "plan.json").write_text("{")
    refused(tmp_path, "not UTF-8 JSON (JSONDecodeError)")
    write(tmp_path, [GOOD])
    refused(tmp_path, "field (top)")
    (tmp_path / "plan.json").unlink()
    (tmp_path / "plan.json").mkdir()
    refused(tmp_path, "plan.json is not a regular file")
