"""Candidate vs baseline outputs: greedy token agreement, first divergence,
and KL divergence over renormalised top-N log-probabilities along the shared
prefix. Pure functions over plain values.
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


def _dist(top: TopN, support: set[int]) -> dict[int, float]:
    probs = {tok: math.exp(lp) for tok, lp in top.items()}
    raw = {tok: probs.get(tok, EPS) for tok in support}
    total = sum(raw.values())
    return {tok: p / total for tok, p in raw.items()}


def kl(p_top: TopN, q_top: TopN) -> float:
    """KL(P || Q) over the union of both top-N sets, each renormalised."""
    support = set(p_top) | set(q_top)
    if not support:
        return 0.0
    p = _dist(p_top, support)
    q = _dist(q_top, support)
    return max(0.0, sum(p[t] * math.log(p[t] / q[t]) for t in support))


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
