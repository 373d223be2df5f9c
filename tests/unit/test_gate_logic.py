"""The gate's pure decisions: assertions, comparison, SPRT, verdict, reports."""

from __future__ import annotations

import json
import math
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from llamapin.errors import ConfigError
from llamapin.gate import perf as pf
from llamapin.gate.compare import Comparison, Generation, compare, kl
from llamapin.gate.suite import Assertion, check, load_suite, normalize, parse_suite
from llamapin.gate.verdict import (
    Check,
    EngineInfo,
    PerfReport,
    PromptOutcome,
    Thresholds,
    Verdict,
    decide,
)
from llamapin.report import junit, markdown, to_json
from llamapin.server import diagnose_exit


@pytest.mark.parametrize(
    ("kind", "value", "answer", "ok"),
    [
        ("contains", "Berlin", " berlin. The capital", True),
        ("contains", "Paris", "Berlin", False),
        ("regex", r"^\s*dog", " dog.", True),
        ("regex", r"^cat", "dog", False),
        ("one_of", ["chien", "hund"], "Chien!", True),
        ("one_of", ["chien"], "chat", False),
        ("equals_number", 7, " 7, 8, 9", True),
        ("equals_number", 8, "10", False),
        ("equals_number", 8, "eight", False),
        ("json_equals", {"ok": True}, '```json\n{"ok": true}\n```', True),
        ("json_equals", {"ok": True}, 'Sure: {"ok": false}', False),
        ("json_equals", [1], "no json here", False),
        ("json_equals", [1], "[1, ", False),
    ],
)
def test_assertions(kind: str, value: object, answer: str, ok: bool) -> None:
    assert (check(Assertion(kind, value), answer) is None) is ok


def test_normalize_strips_fences() -> None:
    assert normalize("  ```\n42\n```  ") == "42"
    assert normalize(" plain ") == "plain"


def test_default_suite_and_parse_errors(tmp_path: Path) -> None:
    suite = load_suite(None)
    assert len(suite.prompts) == 6
    chat = parse_suite(
        {"prompt": [{"text": "Hi", "contains": "x", "endpoint": "chat", "system": "be brief"}]}, "t"
    )
    assert chat.prompts[0].endpoint == "chat" and chat.prompts[0].name == "prompt-1"
    for data, match in [
        ({}, "no \\[\\[prompt\\]\\]"),
        ({"prompt": [{"name": "a"}]}, "has no text"),
        ({"prompt": [{"text": "a"}]}, "has no assertion"),
        ({"prompt": [{"text": "a", "contains": "b", "endpoint": "grpc"}]}, "endpoint 'grpc'"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_suite(data, "t")
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[prompt]\n")
    with pytest.raises(ConfigError, match="invalid suite"):
        load_suite(bad)


def gen(tokens: list[int], tops: list[dict[int, float]]) -> Generation:
    return Generation(tuple(tokens), tuple(tops), "")


def test_compare_identical_divergent_and_shorter() -> None:
    top = {1: math.log(0.7), 2: math.log(0.2)}
    same = compare(gen([1, 1], [top, top]), gen([1, 1], [top, top]))
    assert same == Comparison(1.0, None, 2, 0.0, 0.0, 1.0)
    flipped = {2: math.log(0.5), 1: math.log(0.45)}
    div = compare(gen([1, 1, 1], [top, top, top]), gen([1, 2, 2], [top, flipped, flipped]))
    assert div.first_divergence == 1 and div.compared_positions == 2
    assert div.agreement == pytest.approx(1 / 3)
    assert 0 < div.max_kl < 0.2 and div.same_top == 0.5
    short = compare(gen([1, 1], [top, top]), gen([1], [top]))
    assert short.first_divergence == 1 and short.agreement == 0.5
    assert compare(gen([], []), gen([], [])).agreement == 1.0
    assert kl({}, {}) == 0.0
    assert kl({1: 0.0}, {2: 0.0}) > 5  # disjoint supports: catastrophic


def test_sprt_decisions() -> None:
    # the rule's error rates, by simulation: tests/unit/test_perfstat_rule.py
    p = pf.SprtParams()
    assert pf.decide("g", [[0.0] * 3], p).outcome == "continue"
    assert pf.decide("g", [[0.01, -0.01] * 2] * 2, p).outcome == "pass"
    assert pf.decide("g", [[-0.2, -0.22] * 2] * 2, p).outcome == "fail"
    noisy = [[0.3, -0.4, 0.35, -0.45], [0.3, -0.4, 0.3, -0.4]]
    assert pf.decide("g", noisy, p).outcome == "continue"
    assert pf.decide("g", noisy, p, final=True).outcome == "inconclusive"
    assert pf.decide("g", noisy * 5, p).outcome == "inconclusive"  # past max_pairs
    one = pf.decide("g", [[0.0]], p)
    assert "1 pairs in 1 process pairs" in one.describe()
    assert pf.decide("g", [[0.0] * 4] * 10, p).ci_low > 0.9


def test_combine_and_field_rules() -> None:
    def d(outcome: pf.Outcome) -> pf.MetricDecision:
        return pf.MetricDecision("m", outcome, 6, 1.0, 0.9, 1.1)

    assert pf.combine([d("pass"), d("fail")]) == "fail"
    assert pf.combine([d("pass"), d("pass")]) == "pass"
    assert pf.combine([d("pass"), d("continue")]) == "continue"
    assert pf.combine([d("pass"), d("inconclusive")]) == "inconclusive"
    assert pf.floor_rule([30, 31, 29], 35) == "fail"
    assert pf.floor_rule([40, 41], 35) == "pass"
    assert pf.median_ratio_rule([37, 36], [40, 40]) == "pass"
    assert pf.median_ratio_rule([30, 31], [40, 40]) == "fail"
    assert pf.log_ratios([2.0, 0.0], [1.0, 1.0]) == [math.log(2.0)]


def verdict(prompts: list[PromptOutcome], perf: PerfReport, checks: list[Check]) -> Verdict:
    outcome, reasons = decide(checks, prompts, perf, Thresholds(0.5))
    return Verdict(
        outcome,
        reasons,
        checks,
        prompts,
        [
            EngineInfo("candidate", "/x/llama-server", "b1-571d0d5", 1.5, 300 * 2**20),
            EngineInfo("baseline", "/y", None, 1.0, None),
        ],
        perf,
        "m.gguf",
        "default",
        12.0,
        "b10068 (571d0d5)",
    )


def test_verdict_rules_and_reports() -> None:
    good = PromptOutcome(
        "capital",
        "completion",
        "The capital | <b>",
        ["contains 'Berlin'"],
        " Berlin",
        [],
        Comparison(1.0, None, 8, 0.0, 0.0, 1.0),
        " Berlin",
    )
    diverged = PromptOutcome(
        "x",
        "completion",
        "p",
        ["contains 'a'"],
        "a" * 100,
        [],
        Comparison(0.1, 0, 1, 2.0, 2.0, 0.0),
    )
    wrong = PromptOutcome("y", "chat", "p", ["contains 'a'"], "b", ["does not contain 'a'"])
    ok_perf = PerfReport("baseline", "pass", "no slowdown", [], 6, 20.0)
    v = verdict([good], ok_perf, [Check("engine start", "pass", "ok")])
    assert v.outcome == "pass" and v.reasons == []
    v = verdict([good], PerfReport("baseline", "inconclusive", "too noisy"), [])
    assert v.outcome == "inconclusive" and v.reasons == ["performance: too noisy"]
    v = verdict(
        [good, diverged, wrong],
        PerfReport("baseline", "fail", "slower"),
        [Check("provenance", "fail", "commit x"), Check("bundle", "skip", "n/a")],
    )
    assert v.outcome == "fail"
    assert v.reasons == [
        "provenance: commit x",
        "prompt 'x': output distribution diverged from the baseline (mean KL 2.000 > 0.5)",
        "prompt 'y': answer does not contain 'a'",
        "performance: slower",
    ]
    md = markdown(v)
    assert "## llamapin gate: ❌ FAIL" in md and "&lt;b&gt;" not in md  # prompt text not shown
    assert "The capital" not in md and "…" in md and "300 MiB" in md and "n/a" in md
    data = json.loads(to_json(v))
    assert data["schema"] == 1 and data["prompts"][2]["passed"] is False
    xml = ET.fromstring(junit(v))
    assert xml.get("failures") == "3" and xml.get("skipped") == "1"
    assert markdown(verdict([], ok_perf, [])).count("| prompt |") == 0


@pytest.mark.parametrize(
    ("code", "log", "arch", "want"),
    [
        (
            127,
            "llama-server: error while loading shared libraries: libggml.so.0: cannot open",
            None,
            "cannot find the shared library libggml.so.0",
        ),
        (-6, "dyld: Library not loaded: @rpath/libggml.dylib", None, "@rpath/libggml.dylib"),
        (1, "unknown model architecture: 'qwen9'", "qwen9", "the GGUF header says 'qwen9'"),
        (1, "unknown model architecture: 'qwen9'", None, "'qwen9': this engine build predates"),
        (-signal.SIGILL, "", None, "SIGILL: illegal instruction"),
        (-signal.SIGKILL, "", None, "out-of-memory"),
        (-signal.SIGUSR1, "", None, "SIGUSR1: the engine was killed"),
        (-99, "", None, "killed by signal 99"),
        (
            1,
            "llama_model_load: error loading model: tensor data is not within bounds",
            None,
            "the model failed to load (error loading model",
        ),
        (1, "couldn't bind HTTP server socket", None, "port was taken"),
        (3, "", None, "exited with code 3"),
    ],
)
def test_diagnose_exit(code: int, log: str, arch: str | None, want: str) -> None:
    assert want in diagnose_exit(code, log, arch)
