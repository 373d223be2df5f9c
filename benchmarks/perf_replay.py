"""The perf record, decided again from its own samples: does the code still make the
recorded decisions, and what would a changed rule have decided on the same data?

Every decision in ``benchmarks/results/perf_gate.jsonl`` keeps its raw samples, round by
round. This replays the gate's own rule (``perf.decide`` and ``perf.combine``, look by
look, as ``measure`` does) on them:

* **as recorded**: the rule with the record's own settings must stop at the recorded
  round with the recorded outcome. A decision the 300 s budget ended is replayed with
  its last look final, as the gate's clock made it. A mismatch means the code no longer
  makes the decisions the record counts: the record must be started anew.
* **variants**: a changed rule on the same data. A variant's decision is known exactly
  when it stops at or before the round where the recording stopped (its data are all in
  the record), or when the recording ran to its last round or its budget (the variant
  has no more rounds either). Otherwise it is "undetermined": it would have asked for
  rounds the record does not have. Undetermined decisions are counted apart, never
  guessed, so a variant's fail and pass counts are exact lower bounds.

Variants:
    verdict-alpha   alpha / 2 for each of the two metrics, so that the verdict's false
                    fail is at most alpha (union over the metrics) instead of 2 x alpha
    verdict-both    alpha / 2 and beta / 2 for each metric: the verdict's false pass also
                    at most beta

Wall time of a variant's decision: the recorded decision's wall time scaled by the share
of its rounds the variant used (rounds cost about the same: each is two engine starts,
two warm-ups and the same timed pairs).

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
from perf_gate import ROOT, TARGETS, pct, rate, read_records, settings

METRICS = ("gen_tps", "prompt_tps")
Rule = Callable[[pf.SprtParams], pf.SprtParams]
VARIANTS: dict[str, tuple[str, Rule]] = {
    "as recorded": ("the shipped rule with the record's settings", lambda p: p),
    "verdict-alpha": (
        "alpha / 2 per metric (verdict false fail at most alpha)",
        lambda p: replace(p, alpha=p.alpha / len(METRICS)),
    ),
    "verdict-both": (
        "alpha / 2 and beta / 2 per metric",
        lambda p: replace(p, alpha=p.alpha / len(METRICS), beta=p.beta / len(METRICS)),
    ),
}


def params_of(record: dict[str, Any]) -> pf.SprtParams:
    return PerfConfig.model_validate(record["perf_config"]).params()


def budget_ended(record: dict[str, Any], p: pf.SprtParams) -> bool:
    """Did the clock end it? Inconclusive before the last round can only be the budget."""
    return bool(record["outcome"] == "inconclusive" and record["rounds"] < p.max_rounds)


def replay(record: dict[str, Any], p: pf.SprtParams) -> tuple[str, int]:
    """(outcome, rounds) of the rule ``p`` on the record's samples; outcome
    "undetermined" when it needs rounds the record does not have."""
    groups = {m: _round_groups(record["samples"], m) for m in METRICS}
    recorded = record["rounds"]
    for r in range(1, recorded + 1):
        final = r == recorded and budget_ended(record, params_of(record))
        outcome = pf.combine([pf.decide(m, groups[m][:r], p, final=final) for m in METRICS])
        if outcome != "continue":
            return outcome, r
    return "undetermined", recorded


def table(records: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The variants' table, and one line per recorded decision the code does not reproduce."""
    lines = [
        "| settings | rule | set | decisions | fail [95% CI] | pass [95% CI] | inconclusive | "
        "undetermined | rounds median | wall s median / p95 |",
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
                        f"{r['rounds']}, replayed {out} at round {n}"
                        for i, (r, (out, n)) in enumerate(zip(rows, results, strict=True))
                        if (out, n) != (r["outcome"], r["rounds"])
                    ]
                known = [(r, out, n) for r, (out, n) in zip(rows, results, strict=True)]
                count = {
                    k: sum(out == k for _, out, _ in known)
                    for k in ("fail", "pass", "inconclusive", "undetermined")
                }
                decided = [(r, n) for r, out, n in known if out != "undetermined"]
                rounds = [float(n) for _, n in decided] or [float("nan")]
                wall = [r["total_s"] * n / r["rounds"] for r, n in decided] or [float("nan")]
                size = len(rows)
                lines.append(
                    f"| {group} | {name} | {label} | {size} | {rate(count['fail'], size)} | "
                    f"{rate(count['pass'], size)} | {count['inconclusive']} | "
                    f"{count['undetermined']} | {statistics.median(rounds):.0f} | "
                    f"{statistics.median(wall):.0f} / {pct(wall, 0.95):.0f} |"
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
    if mismatches:
        print(f"\n{len(mismatches)} recorded decisions the code does not reproduce:")
        print("\n".join(mismatches))
        raise SystemExit(1)
    print("\nevery recorded decision is reproduced by the code as it stands")


if __name__ == "__main__":
    main()
