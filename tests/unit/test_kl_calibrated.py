"""The gate's KL estimate over top-N lists: bounded, never negative, zero for the
same answer, and honest about tokens that one side did not list (issue 11)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llamapin.config import GateConfig
from llamapin.gate.compare import EPS, Comparison, Generation, _dist, compare, kl
from llamapin.gate.verdict import (
    PerfReport,
    PromptOutcome,
    Thresholds,
    Verdict,
    decide,
    divergence_warnings,
)
from llamapin.inert import sanitize
from llamapin.report import markdown, to_json

LN = math.log
BOUND = math.log(1 / EPS)  # about 13.8 nats

logprob = st.one_of(
    st.floats(min_value=-60.0, max_value=0.0),
    st.just(-math.inf),
    st.just(math.nan),
    st.floats(min_value=0.0, max_value=1e-3),  # rounding above 0, as engines print it
)
top_n = st.dictionaries(st.integers(0, 40), logprob, max_size=20)


@settings(max_examples=400, deadline=None)
@given(top_n, top_n)
def test_kl_is_finite_non_negative_and_bounded(p: dict[int, float], q: dict[int, float]) -> None:
    value = kl(p, q)
    assert math.isfinite(value)
    assert 0.0 <= value <= BOUND


@settings(max_examples=200, deadline=None)
@given(top_n)
def test_kl_of_a_list_with_itself_is_zero(p: dict[int, float]) -> None:
    assert kl(p, p) == 0.0
    assert kl(p, dict(reversed(list(p.items())))) == 0.0  # order of the list is no signal


@settings(max_examples=200, deadline=None)
@given(top_n, st.lists(st.integers(0, 40), max_size=10))
def test_each_side_is_a_distribution_with_every_bucket_at_least_the_floor(
    top: dict[int, float], extra: list[int]
) -> None:
    support = sorted(set(top) | set(extra))
    dist = _dist(top, support)
    assert len(dist) == len(support) + 1  # the listed union plus the rest of the mass
    assert math.fsum(dist) == pytest.approx(1.0, abs=1e-9)
    assert min(dist) >= EPS * 0.999


def test_a_tail_token_dropping_out_of_the_top_5_costs_next_to_nothing() -> None:
    """The issue's figure: a 1% tail token missing from one side's top 5 cost about 0.09
    nats under the 1e-6 fill. Its real probability there is at most that side's 5th."""
    p = {1: LN(0.6), 2: LN(0.2), 3: LN(0.1), 4: LN(0.05), 5: LN(0.01)}
    q = {1: LN(0.6), 2: LN(0.2), 3: LN(0.1), 4: LN(0.05), 6: LN(0.0101)}  # 5 is 6th here
    assert kl(p, q) < 1e-3
    assert kl(q, p) < 1e-3


def test_a_missing_token_is_capped_at_the_smallest_listed_probability() -> None:
    """Half the mass is unlisted, but a token ranked below 1% holds at most 1%."""
    support = [1, 2, 3]
    p = _dist({1: LN(0.5), 2: LN(0.01)}, support)
    assert p[2] == pytest.approx(0.01, rel=1e-4)  # token 3, capped
    assert p[3] == pytest.approx(0.48, rel=1e-4)  # the rest of the mass


def test_missing_tokens_share_the_leftover_mass_and_never_exceed_it() -> None:
    """Listed 0.9: the two missing tokens share the 0.1 left, nothing is invented."""
    dist = _dist({1: LN(0.9)}, [1, 2, 3])
    assert dist[0] == pytest.approx(0.9, rel=1e-4)
    assert dist[1] == dist[2] == pytest.approx(0.05, rel=1e-4)
    assert dist[3] == pytest.approx(EPS, rel=1e-3)  # the rest bucket: only the floor


def test_listed_mass_over_one_is_scaled_and_odd_values_are_read_safely() -> None:
    over = _dist({1: 0.0, 2: LN(0.5)}, [1, 2])  # 1.5 in all: rounding, not a real mass
    assert over[0] == pytest.approx(2 / 3, rel=1e-4) and over[1] == pytest.approx(1 / 3, rel=1e-4)
    odd = _dist({1: math.nan, 2: 1e-4, 3: -math.inf}, [1, 2, 3])
    assert odd[1] == pytest.approx(1.0, abs=1e-5)  # logprob above 0: probability 1
    assert odd[0] == odd[2] == pytest.approx(EPS, rel=1e-3)  # NaN and -inf: no mass


def test_disjoint_confident_answers_stay_catastrophic() -> None:
    """A broken engine still lands far above any threshold: the floor is the only mass."""
    assert kl({1: 0.0}, {2: 0.0}) == pytest.approx(BOUND, rel=1e-3)
    wrong = kl(
        {1: LN(0.9), 2: LN(0.05), 3: LN(0.02)},
        {7: LN(0.9), 8: LN(0.05), 9: LN(0.02)},
    )
    assert wrong > 2.0


def test_kl_grows_as_the_candidate_moves_off_the_baseline() -> None:
    base = {1: LN(0.8), 2: LN(0.15)}
    values = [kl(base, {1: LN(p1), 2: LN(0.95 - p1)}) for p1 in (0.8, 0.7, 0.5, 0.3, 0.1)]
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert values == sorted(values) and values[-1] > 1.0


def test_one_close_call_no_longer_dominates_a_prompts_mean() -> None:
    """The b10068 source-vs-wheel shape: 6 positions, a near tie at the last one where
    the two builds pick different tokens and each lists a tail token the other does not."""
    sure = {10: LN(0.95), 11: LN(0.02), 12: LN(0.01), 13: LN(0.005), 14: LN(0.004)}
    base_tie = {20: LN(0.46), 21: LN(0.45), 22: LN(0.03), 23: LN(0.01), 24: LN(0.006)}
    cand_tie = {21: LN(0.46), 20: LN(0.45), 22: LN(0.03), 23: LN(0.01), 25: LN(0.006)}
    base = Generation((10,) * 5 + (20,), (sure,) * 5 + (base_tie,), "")
    cand = Generation((10,) * 5 + (21,), (sure,) * 5 + (cand_tie,), "")
    c = compare(base, cand)
    assert c.first_divergence == 5 and c.compared_positions == 6
    assert c.same_top == pytest.approx(5 / 6)
    assert c.max_kl < 0.01 and c.mean_kl < 0.002


def outcome(name: str, mean_kl: float) -> PromptOutcome:
    comparison = Comparison(1.0, None, 6, mean_kl, mean_kl, 1.0)
    return PromptOutcome(name, "completion", "p", ["contains 'x'"], "x", [], comparison, "x")


def test_warn_threshold_notes_drift_without_failing() -> None:
    th = Thresholds(max_mean_kl=0.5, warn_mean_kl=0.05)
    prompts = [
        outcome("same", 0.0),
        outcome("at-warn", 0.05),  # at the threshold: not above it
        outcome("drift", 0.2),
        outcome("broken", 0.9),
        PromptOutcome("alone", "completion", "p", [], "x", []),  # no baseline: nothing to say
    ]
    notes = divergence_warnings(prompts, th)
    assert notes == [
        "prompt 'drift': output distribution drifted from the baseline "
        "(mean KL 0.200 > warn 0.05; fails above 0.5)"
    ]
    perf = PerfReport("off", "skip", "off")
    assert decide([], prompts[:3], perf, th) == ("pass", [])  # a warning is not a failure
    status, reasons = decide([], prompts, perf, th)
    assert status == "fail" and reasons == [
        "prompt 'broken': output distribution diverged from the baseline (mean KL 0.900 > 0.5)"
    ]


def test_warnings_reach_the_report() -> None:
    note = "prompt 'drift': output distribution drifted from the baseline"
    verdict = Verdict(
        "pass",
        [],
        [],
        [outcome("drift", 0.2)],
        [],
        PerfReport("off", "skip", "off"),
        "m.gguf",
        "default",
        1.0,
        "b10068 (571d0d5)",
        [note],
    )
    md = markdown(verdict)
    assert f"**Warnings:**\n\n- {sanitize(note, 400)}\n" in md
    assert json.loads(to_json(verdict))["warnings"] == [note]
    quiet = Verdict(
        "pass", [], [], [], [], PerfReport("off", "skip", "off"), "m", "d", 1.0, "b1 (x)"
    )
    assert quiet.warnings == [] and "Warnings" not in markdown(quiet)


def test_gate_thresholds_defaults_and_order() -> None:
    cfg = GateConfig()
    assert 0 < cfg.warn_divergence_kl < cfg.max_divergence_kl < BOUND
    assert Thresholds() == Thresholds(cfg.max_divergence_kl, cfg.warn_divergence_kl)
    GateConfig(warn_divergence_kl=0.3, max_divergence_kl=0.3)  # equal: no warning band
    with pytest.raises(ValidationError, match=r"warn_divergence_kl \(2.0\) exceeds"):
        GateConfig(warn_divergence_kl=2.0, max_divergence_kl=1.0)
