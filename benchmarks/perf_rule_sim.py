"""Where a perf decision's rounds go: the gate's rule simulated on both metrics at once.

The unit tests simulate one metric at a time. The gate decides on two (generation and
prompt processing; pass only when both pass, fail when either fails), each with its own
per-pair noise and its own process effect, so a decision lasts as long as its slower
metric. This simulates that at the noise measured here for the default timed request
(benchmarks/perf_cost.py: pair SD 0.045 in generation and 0.075 in prompt processing)
and a process SD per metric, under the shipped rule (alpha and beta spent equally over
the looks) and, to see whether that is what costs the rounds, under two front-loaded
spending schedules (still a union bound over the looks, so still valid). Seeded;
nothing here changes the gate.

Usage (from the repo root, after scripts/bootstrap):
    .venv/bin/python benchmarks/perf_rule_sim.py
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from dataclasses import replace

from llamapin.config import PerfConfig
from llamapin.gate import perf as pf

P = PerfConfig().params()


def decide(groups: list[list[float]], weight: float) -> pf.MetricDecision:
    """The gate's own rule with this look's share of alpha and beta (``1 / looks`` as
    shipped): alpha and beta scaled so that what the rule spends at a look is that share."""
    scale = weight * P.looks
    return pf.decide("metric", groups, replace(P, alpha=P.alpha * scale, beta=P.beta * scale))


def simulate(
    weights: list[float], slowdown: float, process_sd: float, sds: tuple[float, float], runs: int
) -> tuple[dict[str, int], list[int], float]:
    """Decisions on two metrics; also the share of (metric, look)s whose standard error
    came from the spread of the round means (df = rounds - 1) rather than the floors."""
    rng = random.Random(5)
    d = math.log(1 - slowdown)
    counts = {"pass": 0, "fail": 0, "inconclusive": 0}
    rounds: list[int] = []
    empirical = looked = 0
    for _ in range(runs):
        metrics: list[list[list[float]]] = [[], []]
        while True:
            for groups, sd in zip(metrics, sds, strict=True):
                b = rng.gauss(0.0, process_sd)
                groups.append([d + b + rng.gauss(0.0, sd) for _ in range(P.round_size)])
            look = len(metrics[0]) - P.min_rounds
            w = weights[min(max(look, 0), len(weights) - 1)]
            out = pf.combine([decide(g, w) for g in metrics])  # as the gate combines them
            if look >= 0:
                empirical += sum(pf.estimate(g, P).df == len(g) - 1 for g in metrics)
                looked += len(metrics)
            if out == "continue":
                continue
            break
        counts[out] += 1
        rounds.append(len(metrics[0]))
    return counts, rounds, empirical / looked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    looks = P.looks
    schedules = {
        "equal (shipped)": [1 / looks] * looks,
        "half at the first look": [0.5] + [0.5 / (looks - 1)] * (looks - 1),
        "a quarter, then 15%": [0.25, 0.15] + [0.6 / (looks - 2)] * (looks - 2),
    }
    print(
        "| spending | process SD | true slowdown | fail | pass | inconclusive | "
        "rounds median / p95 | looks on the between-round spread |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, weights in schedules.items():
        for process_sd in (0.02, 0.03):
            for slowdown in (0.0, 0.03, 0.10):
                counts, rounds, spread = simulate(
                    weights, slowdown, process_sd, (0.045, 0.075), args.runs
                )
                n = sum(counts.values())
                cells = " | ".join(f"{counts[k] / n:.1%}" for k in ("fail", "pass", "inconclusive"))
                p95 = sorted(rounds)[math.ceil(0.95 * n) - 1]
                print(
                    f"| {name} | {process_sd} | {slowdown:.0%} | {cells} | "
                    f"{statistics.median(rounds):.0f} / {p95} | {spread:.0%} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
