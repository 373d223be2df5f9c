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
  the record), or when the recording ran to its last round or its budget (the variant
  has no more rounds either). Otherwise it is "undetermined": it would have asked for
  rounds the record does not have. Undetermined decisions are counted apart, never
  guessed: a variant's fail and pass counts are exact lower bounds, each at most the
  undetermined count short of the truth.

The variant:
    verdict-alpha   alpha / 2 for each of the two metrics, so that the verdict's false
                    fail is at most alpha (a union over the metrics) instead of 2 x alpha.
                    The verdict's false pass needs the slowed metric to pass, so it is at
                    most beta already; beta stays. A stricter fail bound leaves every
                    decision that did not fail as it was (the pass bound depends on beta
                    only), so only fails can move: later, or undetermined.

Rounds and wall time: an undetermined decision counts with at least one round more than
recorded, at the recording's time per round, and the medians are then marked as lower
bounds ("at least").

Usage (from the repo root, after scripts/bootstrap; reads the record, starts nothing):
    .venv/bin/python benchmarks/perf_replay.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from llamapin.config import PerfConfig
from llamapin.gate import perf as pf
from llamapin.gate.run import _round_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_gate import ROOT, TARGETS, rate, read_records, settings

METRICS = {"gen_tps": "gen_outcome", "prompt_tps": "pp_outcome"}
Rule = Callable[[pf.SprtParams], pf.SprtParams]
VARIANTS: dict[str, tuple[str, Rule]] = {
    "as recorded": ("the shipped rule with the record's settings", lambda p: p),
    "verdict-alpha": (
        "alpha / 2 per metric (the verdict's false fail at most alpha)",
        lambda p: replace(p, alpha=p.alpha / len(METRICS)),
    ),
}


def params_of(record: dict[str, Any]) -> pf.SprtParams:
    return PerfConfig.model_validate(record["perf_config"]).params()


def replay(record: dict[str, Any], p: pf.SprtParams) -> tuple[str, int, list[str]]:
    """(outcome, rounds, each metric's outcome) of the rule ``p`` on the record's samples,
    look by look as ``measure`` decides; outcome "undetermined" when it needs rounds the
    record does not have."""
    groups = {m: _round_groups(record["samples"], m) for m in METRICS}
    recorded = record["rounds"]
    # measure checks its clock before each look: the last look was final if the wall time
    # of the decision reached the budget
    budget_spent = record["wall_s"] >= record["perf_config"]["budget_s"]
    for r in range(1, recorded + 1):
        final = r == recorded and budget_spent
        metrics = [pf.decide(m, groups[m][:r], p, final=final) for m in METRICS]
        outcome = pf.combine(metrics)
        if outcome != "continue":
            return outcome, r, [d.outcome for d in metrics]
    return "undetermined", recorded, []


def mismatch(record: dict[str, Any], got: tuple[str, int, list[str]]) -> bool:
    recorded = [record[key] for key in METRICS.values()]
    return got != (record["outcome"], record["rounds"], recorded)


def count(k: int, unknown: int, n: int, exact: bool) -> str:
    """A rate with its interval where every decision is known; a range where some are not."""
    if exact:
        return rate(k, n)
    return f"{k}/{n} = {k / n:.1%}" + (f" to {(k + unknown) / n:.1%}" if unknown else "")


def median_at_least(values: list[float], lower_bound: bool) -> str:
    return ("at least " if lower_bound else "") + f"{statistics.median(values):.0f}"


def table(records: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The table, and one line per recorded decision the code does not reproduce."""
    lines = [
        "| settings | rule | set | decisions | fail | pass | inconclusive | undetermined | "
        "rounds median | wall s median |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    mismatches: list[str] = []
    decisions = [r for r in records if r["kind"] == "decision" and "samples" in r]
    groups = sorted({settings(r) for r in decisions}, key=lambda k: (-int(k.split()[0]), k))
    for group in groups:
        for name, (_, rule) in VARIANTS.items():
            for label in TARGETS:
                rows = [r for r in decisions if r["set"] == label and settings(r) == group]
                if not rows:
                    continue
                results = [replay(r, rule(params_of(r))) for r in rows]
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
                # an undetermined decision needs at least one round more than recorded
                rounds = [n + (out == "undetermined") for out, n, _ in results]
                wall = [r["total_s"] * n / r["rounds"] for r, n in zip(rows, rounds, strict=True)]
                size = len(rows)
                lines.append(
                    f"| {group} | {name} | {label} | {size} | "
                    f"{count(outcomes.count('fail'), unknown, size, name == 'as recorded')} | "
                    f"{count(outcomes.count('pass'), unknown, size, name == 'as recorded')} | "
                    f"{outcomes.count('inconclusive')} | {unknown} | "
                    f"{median_at_least([float(n) for n in rounds], bool(unknown))} | "
                    f"{median_at_least(wall, bool(unknown))} |"
                )
    return "\n".join(lines), mismatches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path, default=ROOT / "benchmarks/results/perf_gate.jsonl")
    args = parser.parse_args()
    text, mismatches = table(read_records(args.record))
    print(text)
    for name, (what, _) in VARIANTS.items():
        print(f"- {name}: {what}")
    print("- fail, pass: with undetermined decisions, from the count known to the count if all")
    print("  undetermined went that way")
    if mismatches:
        print(f"\n{len(mismatches)} recorded decisions the code does not reproduce:")
        print("\n".join(mismatches))
        raise SystemExit(1)
    print("\nevery recorded decision is reproduced by the code as it stands")


if __name__ == "__main__":
    main()
