"""The perf record, decided again from its own samples: does the code still make the
recorded decisions, and what would a changed rule have decided on the same data?

Every decision in ``benchmarks/results/perf_gate.jsonl`` keeps its raw samples, round by
round. This replays the gate's own rule (``perf.decide`` and ``perf.combine``, look by
look, as ``measure`` does) on them:

* **as recorded**: the rule with the record's own settings must stop at the recorded
  round with the recorded outcome, for the verdict and for each metric. A decision the
  300 s budget ended (its wall time reached the budget) is replayed with its last look
  final, as the gate's clock made it. A mismatch means the code no longer makes the
  decisions the record counts: the record must be started anew.
* **a variant**: a changed rule on the same data. A variant's decision is known exactly
  when it stops at or before the round where the recording stopped (its data are all in
  the record), or, for a variant on the samples as recorded, when the recording ran to
  its last round or its budget (the variant has no more rounds either). Otherwise it is
  "undetermined": it would have asked for rounds the record does not have. Undetermined
  decisions are counted apart, never guessed: a variant's fail and pass counts are exact
  lower bounds, each at most the undetermined count short of the truth.

The variants (each a change of the rule the record can judge, in whole or in part):
    verdict-alpha   alpha / 2 for each of the two metrics, so that the verdict's false
                    fail is at most alpha (a union over the metrics) instead of 2 x alpha.
                    The verdict's false pass needs the slowed metric to pass, so it is at
                    most beta already; beta stays. A stricter fail bound leaves every
                    decision that did not fail as it was (the pass bound depends on beta
                    only), so only fails can move: later, or undetermined.
    first-look-half, first-look-third
                    ``gate.perf.first_look_share`` 1/2 and 1/3: alpha spent unevenly, that
                    share at the first look, the rest evenly over the later ones (the
                    looks' alphas still add up to alpha, so the false fail stays at most
                    alpha). A fail at the first look is known exactly; later fail bounds
                    are stricter, so later fails can move (later, or undetermined). The
                    pass bound is the shipped one, so a decision that did not fail is
                    known exactly too: as recorded, or a fail at the first look.
    even shares     the shipped default, for decisions recorded with a first-look share
                    (the same rule as recorded for the others).
    max_pairs 24    fewer planned looks (5 instead of 9), so each gets a larger share of
                    alpha and beta: every bound is looser, every decision comes at the
                    recorded round or earlier, and those the cap ends are inconclusive, so
                    the record decides this one exactly.
    3-pair rounds   smaller rounds, emulated by keeping 3 of the 4 pairs of each recorded
                    round: the first 3 in even rounds and the last 3 in odd ones, so who
                    goes first alternates as the gate's counter would make it (it runs on
                    across rounds); the first look after 2 rounds, at most 10 rounds. A
                    "round" here is 3 pairs (see the pairs column). It has time left where
                    the recording ran out of budget, so those decisions can be
                    undetermined too.

Rounds, pairs and time: an undetermined decision counts with one round more than recorded
and with the time of its recorded rounds, both lower bounds; a median is exact when it
stays the same with every undetermined decision's value made infinite, and marked "at
least" otherwise. A variant's time is modelled, not measured: the recording's time per round
outside the timed requests, spread evenly over its rounds, plus the timed requests it used.

Usage (from the repo root, after scripts/bootstrap; reads the record, starts nothing):
    .venv/bin/python benchmarks/perf_replay.py
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llamapin.config import PerfConfig
from llamapin.gate import perf as pf
from llamapin.gate.run import SAMPLE_KEYS, _round_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_gate import ROOT, TARGETS, rate, read_records, settings

METRICS = {"gen_tps": "gen_outcome", "prompt_tps": "pp_outcome"}
Rule = Callable[[pf.SprtParams], pf.SprtParams]  # the record's own parameters -> a variant's


@dataclass(frozen=True)
class Variant:
    what: str
    rule: Rule
    keep: int | None = None  # ``keep`` of the pairs of every recorded round (``kept``)


def smaller_rounds(pairs: int) -> Rule:
    """Rounds of ``pairs`` pairs, the first look after two of them and at most 10 rounds
    (as many looks as the shipped rule's)."""

    def rule(p: pf.SprtParams) -> pf.SprtParams:
        return replace(p, pairs_per_round=pairs, min_pairs=2 * pairs, max_pairs=10 * pairs)

    return rule


VARIANTS: dict[str, Variant] = {
    "as recorded": Variant("the shipped rule with the record's settings", lambda p: p),
    "verdict-alpha": Variant(
        "alpha / 2 per metric (the verdict's false fail at most alpha)",
        lambda p: replace(p, alpha=p.alpha / len(METRICS)),
    ),
    "first-look-half": Variant(
        "half of alpha at the first look, the other half over the 8 later ones (beta as shipped)",
        lambda p: replace(p, first_look_share=1 / 2),
    ),
    "even shares": Variant(
        "alpha / looks at every look (the shipped default), for a record made with a share",
        lambda p: replace(p, first_look_share=None),
    ),
    "first-look-third": Variant(
        "a third of alpha at the first look, two thirds over the 8 later ones",
        lambda p: replace(p, first_look_share=1 / 3),
    ),
    "max_pairs 24": Variant(
        "at most 24 pairs (6 rounds, so 5 looks: each gets alpha / 5 and beta / 5)",
        lambda p: replace(p, max_pairs=24),
    ),
    "3-pair rounds": Variant(
        "rounds of 3 pairs (3 of each recorded round's 4), first look after 2 rounds "
        "(6 pairs), at most 10",
        smaller_rounds(3),
        keep=3,
    ),
}


def params_of(record: dict[str, Any]) -> pf.SprtParams:
    return PerfConfig.model_validate(record["perf_config"]).params()


def kept(samples: dict[str, list[float]], keep: int | None) -> dict[str, list[float]]:
    """``keep`` consecutive pairs of every round (all of them for None), starting where a
    gate with rounds of ``keep`` would have the same side go first: the gate alternates
    per pair over the whole decision, and a recorded round starts with the candidate."""
    if keep is None:
        return samples
    index: dict[float, int] = {}
    chosen = []
    for i, r in enumerate(samples["round"]):
        n = index[r] = index.get(r, -1) + 1
        first = int(r) * keep % 2
        if first <= n < first + keep:
            chosen.append(i)
    return {k: [samples[k][i] for i in chosen] for k in SAMPLE_KEYS}


def seconds(record: dict[str, Any], rounds: int, keep: int | None) -> tuple[float, float]:
    """(wall s by the gate's clock, total s) of the first ``rounds`` recorded rounds of a
    variant: the recording's time per round outside the timed requests, plus the requests
    it kept."""
    samples = record["samples"]
    recorded = record["rounds"]
    used = kept(samples, keep)
    requests = [
        c + b
        for c, b, r in zip(used["cand_wall_s"], used["base_wall_s"], used["round"], strict=True)
        if r < rounds
    ]
    all_requests = math.fsum(samples["cand_wall_s"]) + math.fsum(samples["base_wall_s"])
    per_round = (record["total_s"] - all_requests) / recorded
    clock_per_round = (record["wall_s"] - all_requests) / recorded
    timed = math.fsum(requests)
    return clock_per_round * rounds + timed, per_round * rounds + timed


def replay(record: dict[str, Any], variant: Variant) -> tuple[str, int, list[str]]:
    """(outcome, rounds, each metric's outcome) of ``variant`` on the record's samples,
    look by look as ``measure`` decides; outcome "undetermined" when it needs rounds the
    record does not have."""
    samples = kept(record["samples"], variant.keep)
    groups = {m: _round_groups(samples, m) for m in METRICS}
    recorded = record["rounds"]
    budget = record["perf_config"]["budget_s"]
    # measure checks its clock before each look: the last look was final if the wall time
    # of the decision reached the budget
    budget_spent = record["wall_s"] >= budget
    p = variant.rule(params_of(record))
    for r in range(1, recorded + 1):
        if variant.keep is None:
            final = r == recorded and budget_spent
        else:
            final = seconds(record, r, variant.keep)[0] >= budget
        metrics = [pf.decide(m, groups[m][:r], p, final=final) for m in METRICS]
        outcome = pf.combine(metrics)
        if outcome != "continue":
            return outcome, r, [d.outcome for d in metrics]
    return "undetermined", recorded, []


def mismatch(record: dict[str, Any], got: tuple[str, int, list[str]]) -> bool:
    recorded = [record[key] for key in METRICS.values()]
    return got != (record["outcome"], record["rounds"], recorded)


def count(k: int, unknown: int, n: int) -> str:
    """A rate with its interval where every decision is known; a range where some are not."""
    if not unknown:
        return rate(k, n)
    return f"{k}/{n} = {k / n:.1%} to {(k + unknown) / n:.1%}"


def median_at_least(values: list[float], undetermined: list[bool]) -> str:
    """The median, where an undetermined decision's value is a lower bound: exact when
    it is the same with every undetermined value made infinite, else "at least"."""
    low = statistics.median(values)
    high = statistics.median(
        [math.inf if u else v for v, u in zip(values, undetermined, strict=True)]
    )
    return ("" if high == low else "at least ") + f"{low:.0f}"


def table(records: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The table, and one line per recorded decision the code does not reproduce."""
    lines = [
        "| settings | rule | set | decisions | fail | pass | inconclusive | undetermined | "
        "rounds median | pairs median | s median |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    mismatches: list[str] = []
    decisions = [r for r in records if r["kind"] == "decision" and "samples" in r]
    groups = sorted({settings(r) for r in decisions}, key=lambda k: (-int(k.split()[0]), k))
    for group in groups:
        for name, variant in VARIANTS.items():
            for label in TARGETS:
                rows = [r for r in decisions if r["set"] == label and settings(r) == group]
                if not rows:
                    continue
                results = [replay(r, variant) for r in rows]
                if name == "as recorded":
                    mismatches += [
                        f"{label} decision {i + 1}: recorded {r['outcome']} at round "
                        f"{r['rounds']} ({r['gen_outcome']}, {r['pp_outcome']}), replayed "
                        f"{got[0]} at round {got[1]} ({', '.join(got[2]) or '-'})"
                        for i, (r, got) in enumerate(zip(rows, results, strict=True))
                        if mismatch(r, got)
                    ]
                outcomes = [out for out, _, _ in results]
                unknown = outcomes.count("undetermined")
                undetermined = [out == "undetermined" for out in outcomes]
                # an undetermined decision needs at least one round more than recorded
                rounds = [n + (out == "undetermined") for out, n, _ in results]
                size_of = [variant.rule(params_of(r)).round_size for r in rows]
                pairs = [float(n * k) for n, k in zip(rounds, size_of, strict=True)]
                wall = [
                    seconds(r, n, variant.keep)[1]
                    for r, (_, n, _) in zip(rows, results, strict=True)
                ]
                size = len(rows)
                lines.append(
                    f"| {group} | {name} | {label} | {size} | "
                    f"{count(outcomes.count('fail'), unknown, size)} | "
                    f"{count(outcomes.count('pass'), unknown, size)} | "
                    f"{outcomes.count('inconclusive')} | {unknown} | "
                    f"{median_at_least([float(n) for n in rounds], undetermined)} | "
                    f"{median_at_least(pairs, undetermined)} | "
                    f"{median_at_least(wall, undetermined)} |"
                )
    return "\n".join(lines), mismatches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path, default=ROOT / "benchmarks/results/perf_gate.jsonl")
    args = parser.parse_args()
    text, mismatches = table(read_records(args.record))
    print(text)
    for name, variant in VARIANTS.items():
        print(f"- {name}: {variant.what}")
    print("- fail, pass: with undetermined decisions, from the count known to the count if all")
    print("  undetermined went that way")
    print("- s: the whole decision, engine starts included; modelled for a variant (the")
    print("  recording's time outside the timed requests, plus the requests it used)")
    if mismatches:
        print(f"\n{len(mismatches)} recorded decisions the code does not reproduce:")
        print("\n".join(mismatches))
        raise SystemExit(1)
    print("\nevery recorded decision is reproduced by the code as it stands")


if __name__ == "__main__":
    main()
