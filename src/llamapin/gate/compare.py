"""Candidate vs baseline outputs: greedy token agreement, first divergence,
and KL divergence estimated from each side's top-N probabilities along the
shared prefix. Pure functions over plain values.

The engine reports only the N most likely tokens at each position, so a token
one side lists may be missing from the other's list. What is known about it
there: its probability is at most the smallest one that side listed (it ranked
below all of them), and all the unlisted tokens together hold exactly the mass
the listed ones leave. The estimate compares the two distributions over the
union of listed tokens plus one "rest of the mass" bucket, filling a missing
token with its share of the leftover mass, capped at that side's smallest
listed probability. Every bucket is then mixed with a uniform floor of EPS, so
the estimate is finite, never negative, zero for identical inputs and never
above log(1/EPS) (about 13.8 nats) however far apart the two sides are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EPS = 1e-6

TopN = dict[int, float]
"""token id -> log-probability, for the N most likely tokens at one position."""


@dataclass(frozen=True)
class Generation:
    tokens: tuple[int, ...]
    top: tuple[TopN, ...]
    text: str


@dataclass(frozen=True)
class Comparison:
    agreement: float
    first_divergence: int | None
    compared_positions: int
    mean_kl: float
    max_kl: float
    same_top: float


def _probs(top: TopN) -> dict[int, float]:
    """Listed probabilities, each in [0, 1], scaled down if rounding lifts their sum over 1."""
    probs = {}
    for tok, lp in top.items():
        probs[tok] = 0.0 if math.isnan(lp) else min(1.0, math.exp(min(lp, 0.0)))
    total = math.fsum(probs.values())
    return {tok: p / total for tok, p in probs.items()} if total > 1.0 else probs


def _dist(top: TopN, support: list[int]) -> list[float]:
    """One side's distribution over ``support`` plus the rest bucket (last), summing to 1.

    A token this side did not list gets an equal share of the mass its listed
    tokens leave, never more than the smallest probability it listed; what is
    left of that mass goes to the rest bucket. Then every bucket is mixed with
    a uniform floor: each one holds at least ``floor`` (EPS for any realistic N).
    """
    listed = _probs(top)
    leftover = max(0.0, 1.0 - math.fsum(listed.values()))
    missing = [tok for tok in support if tok not in listed]
    cap = min(listed.values(), default=1.0)
    fill = min(cap, leftover / len(missing)) if missing else 0.0
    raw = [listed.get(tok, fill) for tok in support]
    raw.append(max(0.0, leftover - fill * len(missing)))
    total = math.fsum(raw)  # 1 up to rounding: listed + leftover
    buckets = len(raw)
    floor = min(EPS, 0.5 / buckets)
    keep = 1.0 - floor * buckets
    return [keep * r / total + floor for r in raw]


def kl(p_top: TopN, q_top: TopN) -> float:
    """KL(P || Q) over the union of both top-N sets plus a rest-of-the-mass bucket."""
    support = sorted(set(p_top) | set(q_top))
    if not support:
        return 0.0
    p = _dist(p_top, support)
    q = _dist(q_top, support)
    return max(0.0, math.fsum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)))


def compare(base: Generation, cand: Generation) -> Comparison:
    n = min(len(base.tokens), len(cand.tokens))
    first = next((i for i in range(n) if base.tokens[i] != cand.tokens[i]), None)
    if first is None and len(base.tokens) != len(cand.tokens):
        first = n
    shared = n if first is None else first
    longest = max(len(base.tokens), len(cand.tokens))
    agreement = 1.0 if longest == 0 else shared / longest
    # Distributions are comparable wherever the context is identical: the shared
    # prefix plus the first divergent position itself.
    upto = min(n if first is None else first + 1, len(base.top), len(cand.top))
    kls = [kl(base.top[i], cand.top[i]) for i in range(upto)]
    same = [
        max(base.top[i], key=base.top[i].__getitem__)
        == max(cand.top[i], key=cand.top[i].__getitem__)
        for i in range(upto)
        if base.top[i] and cand.top[i]
    ]
    return Comparison(
        agreement=agreement,
        first_divergence=first,
        compared_positions=upto,
        mean_kl=sum(kls) / len(kls) if kls else 0.0,
        max_kl=max(kls, default=0.0),
        same_top=sum(same) / len(same) if same else 1.0,
    )
