"""The split bump's publish job makes the PR body inert again: the prepare job that wrote it
ran upstream code, so what it wrote is untrusted even though llamapin rendered it."""

from __future__ import annotations

import re

from llamapin.inert import republished
from llamapin.pin import Asset, Pin
from llamapin.upstream import bump as bp
from llamapin.upstream.render import Summary
from llamapin.upstream.rules import Decision
from tests.unit.test_sec_inputs import COMPARE, HOSTILE, assert_inert_markdown, hostile_verdict

ALLOWED = (COMPARE,)


def honest_body() -> str:
    old = Pin("b1", "0" * 40, {"linux-x64": Asset("llama-b1.zip", "1" * 64, 1)})
    new = Pin("b2", "2" * 40, {"linux-x64": Asset("llama-b2.zip", "3" * 64, 2)})
    summary = Summary(COMPARE, 2, {}, [], [], [], [])
    return bp.pr_body(
        old,
        new,
        Decision(True, None, "newer", []),
        summary,
        "no change",
        hostile_verdict(),
        ["a note"],
    )


def test_an_honest_body_keeps_its_shape_and_its_one_link() -> None:
    body = honest_body()
    again = republished(body, ALLOWED)
    html = assert_inert_markdown(again)
    assert html.count(f'<a href="{COMPARE}">') == 1  # the compare link survives
    assert again.count("\n") == body.count("\n")  # headings, tables and lines keep their shape
    assert "<th>sha256</th>" in html and "<h2>llama.cpp b1 -&gt; b2</h2>" in html
    assert republished(again, ALLOWED) == again  # inert text stays as it is


def test_a_body_written_by_a_hostile_prepare_job_is_made_inert() -> None:
    # What an engine that took over the prepare job could write into plan.json's body.
    raw = "\n".join(
        [
            honest_body(),
            # (a heading of its own is shape, not a live element: the first check covers it)
            *(h.replace("# Injected", "Injected") for h in HOSTILE),
            "<details><summary>x</summary><img src=https://evil.example/p.png></details>",
            "![tracker](https://evil.example/t.png) [ok](https://evil.example/phish)",
            f"[looks like ours]({COMPARE.replace('127.0.0.1', '127.0.0.2')}/x)",
            "cc @org/security-team @someone",
        ]
    )
    html = assert_inert_markdown(republished(raw, ALLOWED))
    assert re.findall(r"<a href=\"([^\"]*)\"", html) == [COMPARE]
    assert "&lt;details&gt;" in html  # shown as text, not rendered


def test_limit_and_invisible_characters() -> None:
    assert republished("x" * 50, ALLOWED, limit=10) == "x" * 9 + "…"
    assert republished("a\u202eb\x1bc\td\ne\u200b", ALLOWED) == "abc\td\ne\u200b"
