"""Is the candidate slower than the baseline? A sequential probability ratio test
on paired log-ratios, decided as soon as the evidence is strong enough.

Each pair is one request to each server, interleaved with alternating order;
``x = log(candidate throughput / baseline throughput)``. Two hypotheses:

* H0: no slowdown, E[x] = 0;
* H1: a slowdown of ``tolerance``, E[x] = log(1 - tolerance).

Wald's SPRT with a plug-in standard deviation (the sample's, floored) adds
``(mu1 - mu0) / s^2 * (x - (mu0 + mu1) / 2)`` per pair and stops at
``log((1 - beta) / alpha)`` (fail: H1) or ``log(beta / (1 - alpha))`` (pass: H0).
``alpha`` bounds false alarms on an unchanged build, ``beta`` missed slowdowns
of the full tolerance. No decision before ``min_pairs``; none by ``max_pairs``
(or the time budget) is "inconclusive", never a pass.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["pass", "fail", "inconclusive", "continue"]


@dataclass(frozen=True)
class SprtParams:
    tolerance: float = 0.10
    alpha: float = 0.01
    beta: float = 0.05
    min_pairs: int = 6
    max_pairs: int = 40
    sigma_floor: float = 0.03


@dataclass(frozen=True)
class MetricDecision:
    metric: str
    outcome: Outcome
    pairs: int
    ratio: float
    ci_low: float
    ci_high: float
    llr: float
    sd: float

    def describe(self) -> str:
        return (
            f"{self.metric}: candidate/baseline {self.ratio:.3f} "
            f"(95% CI {self.ci_low:.3f}-{self.ci_high:.3f}, {self.pairs} pairs)"
        )


def log_ratios(cand: list[float], base: list[float]) -> list[float]:
    return [math.log(c / b) for c, b in zip(cand, base, strict=True) if c > 0 and b > 0]


def _t95(df: int) -> float:
    table = {
        1: 12.71,
        2: 4.30,
        3: 3.18,
        4: 2.78,
        5: 2.57,
        6: 2.45,
        7: 2.36,
        8: 2.31,
        9: 2.26,
        10: 2.23,
        12: 2.18,
        15: 2.13,
        20: 2.09,
        30: 2.04,
    }
    keys = [k for k in sorted(table) if k <= df]
    return table[keys[-1]] if keys else table[1]


def decide(metric: str, xs: list[float], p: SprtParams, *, final: bool = False) -> MetricDecision:
    """The SPRT state after ``xs``; ``final`` turns 'continue' into 'inconclusive'."""
    n = len(xs)
    mean = statistics.fmean(xs) if xs else 0.0
    sd = statistics.stdev(xs) if n > 1 else 0.0
    s = max(sd, p.sigma_floor)
    mu0, mu1 = 0.0, math.log(1.0 - p.tolerance)
    llr = (mu1 - mu0) / s**2 * sum(x - (mu0 + mu1) / 2 for x in xs)
    upper = math.log((1 - p.beta) / p.alpha)
    lower = math.log(p.beta / (1 - p.alpha))
    outcome: Outcome = "continue"
    if n >= p.min_pairs:
        if llr >= upper:
            outcome = "fail"
        elif llr <= lower:
            outcome = "pass"
    if outcome == "continue" and (final or n >= p.max_pairs):
        outcome = "inconclusive"
    half = _t95(n - 1) * s / math.sqrt(n) if n > 1 else math.inf
    return MetricDecision(
        metric,
        outcome,
        n,
        math.exp(mean),
        math.exp(mean - half),
        math.exp(mean + half) if half != math.inf else math.inf,
        llr,
        sd,
    )


def combine(decisions: list[MetricDecision]) -> Outcome:
    """Fail if any metric established a slowdown; pass only if all passed."""
    outcomes = {d.outcome for d in decisions}
    if "fail" in outcomes:
        return "fail"
    if outcomes == {"pass"}:
        return "pass"
    if "continue" in outcomes:
        return "continue"
    return "inconclusive"


def floor_rule(cand: list[float], floor: float) -> Outcome:
    """The field's absolute rule: fail when the median is under a fixed tok/s floor."""
    return "fail" if statistics.median(cand) < floor else "pass"


def median_ratio_rule(cand: list[float], base: list[float], cutoff: float = 0.9) -> Outcome:
    """The field's one-shot rule: fail when median(candidate)/median(baseline) < cutoff."""
    return "fail" if statistics.median(cand) / statistics.median(base) < cutoff else "pass"
