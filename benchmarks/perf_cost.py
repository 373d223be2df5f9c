"""What a perf decision's time buys: the noise of a pair's log-ratio at several prompt
lengths, and what the warm-up request must be, on fresh engine processes (A/A).

A decision's time is mostly its timed requests: on a 2-core machine the default 24-sentence
prompt (about 420 tokens) takes about 2 s to process and the 32 generated tokens about
0.8 s, and every round adds two warm-up requests of the same size. This script measures,
side by side on the same processes, what a shorter prompt costs in noise and whether a short
warm-up leaves the first timed request slower than the rest.

Each process pair (the same build both sides, started fresh as the gate starts its engines)
gets a warm-up of one kind ("full": the timed request itself; "short": the gate's, one
sentence and 4 tokens; "none"), taken in turn, then one block of interleaved timed pairs per
prompt length, the lengths' order rotated from pair to pair. Reported per length: the pooled
within-process-pair SD of the log-ratio (generation, prompt processing), the SD of the
process pairs' mean log-ratios, and the median wall time of one request; per warm-up kind:
the first timed request's rate relative to the median of the rest of its process.

Usage (from the repo root, after scripts/bootstrap; nothing else running):
    .venv/bin/python benchmarks/perf_cost.py --process-pairs 12
    .venv/bin/python benchmarks/perf_cost.py --summary   # the tables, from the file
    # the warm-up alone, before the default prompt's first timed request
    .venv/bin/python benchmarks/perf_cost.py --lengths 6 --process-pairs 15 \
        --out benchmarks/results/perf_cost-warmup.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from perf_gate import ROOT, Engines, engine_and_model

from llamapin.config import GateConfig, PerfConfig
from llamapin.gate.run import WARM_UP, machine_load, timed_request
from llamapin.server import Server

WARM_UPS = ("full", "short", "none")


def config(sentences: int, n_predict: int = 32) -> GateConfig:
    return GateConfig(
        request_timeout_s=600.0,
        perf=PerfConfig(prompt_sentences=sentences, n_predict=n_predict),
    )


def warm(server: Server, kind: str, full: GateConfig) -> None:
    if kind == "full":
        timed_request(server, full)
    elif kind == "short":  # what the gate does
        timed_request(server, full, WARM_UP)


def process_pair(
    engines: Engines, n: int, lengths: list[int], pairs: int, kinds: list[str]
) -> dict[str, Any]:
    # the rotation moves every len(kinds) pairs, so each warm-up kind meets each first length
    # (the first 12 pairs of the stored record rotated with n itself: warm-up and first length
    # went together there; every row stores its own order)
    warm_kind = kinds[n % len(kinds)]
    k = (n // len(kinds)) % len(lengths)
    rotated = lengths[k:] + lengths[:k]
    rows: list[dict[str, Any]] = []
    with engines.pair(n) as (cand, base):
        for server in (cand, base):
            warm(server, warm_kind, config(rotated[0]))
        seq = 0
        for length in rotated:
            cfg = config(length)
            for i in range(pairs):
                order = [("cand", cand), ("base", base)]
                if (n + i) % 2:
                    order.reverse()
                for role, server in order:
                    result = timed_request(server, cfg)
                    rows.append({"role": role, "length": length, "seq": seq, **result})
                    seq += 1
    return {"pair": n, "warm_up": warm_kind, "order": rotated, "requests": rows}


def _log_ratios(pair: dict[str, Any], length: int, key: str) -> list[float]:
    cand = [r[key] for r in pair["requests"] if r["length"] == length and r["role"] == "cand"]
    base = [r[key] for r in pair["requests"] if r["length"] == length and r["role"] == "base"]
    return [math.log(c / b) for c, b in zip(cand, base, strict=True)]


def spread(groups: list[list[float]]) -> str:
    """Pooled within-group SD, the median of the groups' own SDs (robust to one disturbed
    block), and the SD of the group means; n/a where there are too few values."""
    groups = [g for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return "n/a"
    within = math.sqrt(statistics.fmean(statistics.variance(g) for g in groups))
    typical = statistics.median(statistics.stdev(g) for g in groups)
    between = statistics.stdev(statistics.fmean(g) for g in groups)
    return f"{within:.3f} ({typical:.3f}) / {between:.3f}"


def summarize(data: dict[str, Any]) -> str:
    pairs = data["process_pairs"]
    lengths = sorted({r["length"] for p in pairs for r in p["requests"]})
    out = [
        "| prompt sentences | gen: SD within (median of process pairs') / between | "
        "prompt: SD within (median) / between | request wall s median | gen tok/s | "
        "prompt tok/s |",
        "|---|---|---|---|---|---|",
    ]
    for length in lengths:
        cells = [
            spread([_log_ratios(p, length, key) for p in pairs])
            for key in ("gen_tps", "prompt_tps")
        ]
        reqs = [r for p in pairs for r in p["requests"] if r["length"] == length]
        wall = statistics.median(r["wall_s"] for r in reqs)
        gen = statistics.median(r["gen_tps"] for r in reqs)
        pp = statistics.median(r["prompt_tps"] for r in reqs)
        out.append(f"| {length} | {cells[0]} | {cells[1]} | {wall:.2f} | {gen:.1f} | {pp:.0f} |")
    out += [
        "",
        "| warm-up | first timed length | process pairs | first timed request / median of the "
        "rest of its length (gen, prompt; median over engines) | worst (gen, prompt) |",
        "|---|---|---|---|---|",
    ]
    for kind in WARM_UPS:
        for first_length in [*lengths, None]:  # None: every first length together
            chosen = [
                p for p in pairs if p["warm_up"] == kind and first_length in (None, p["order"][0])
            ]
            relative = [rel for p in chosen for rel in _first_vs_rest(p)]
            if not relative:
                continue
            gen = [g for g, _ in relative]
            pp = [q for _, q in relative]
            out.append(
                f"| {kind} | {first_length or 'all'} | {len(chosen)} | "
                f"{statistics.median(gen):.3f}, {statistics.median(pp):.3f} | "
                f"{min(gen):.3f}, {min(pp):.3f} |"
            )
    return "\n".join(out)


def _first_vs_rest(pair: dict[str, Any]) -> list[tuple[float, float]]:
    """Per engine: its first timed request's rates over the median of the rest of that length."""
    found = []
    for role in ("cand", "base"):
        reqs = [
            r for r in pair["requests"] if r["role"] == role and r["length"] == pair["order"][0]
        ]
        if len(reqs) < 2:
            continue
        first, rest = reqs[0], reqs[1:]
        found.append(
            (
                first["gen_tps"] / statistics.median(r["gen_tps"] for r in rest),
                first["prompt_tps"] / statistics.median(r["prompt_tps"] for r in rest),
            )
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/perf_cost.json")
    parser.add_argument("--process-pairs", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=4, help="timed pairs per length")
    parser.add_argument("--lengths", default="24,12,6", help="prompt sentences, comma-separated")
    parser.add_argument(
        "--warm-ups", default=",".join(WARM_UPS), help="warm-up kinds taken in turn"
    )
    parser.add_argument("--install-root", type=Path, default=ROOT)
    parser.add_argument("--summary", action="store_true")
    args = parser.parse_args()
    if args.pairs < 2:
        parser.error("--pairs must be at least 2 (a spread needs two pairs)")
    data: dict[str, Any] = {"process_pairs": []}
    if args.out.is_file():
        data = json.loads(args.out.read_text())
    if not args.summary:
        pin, binary, model = engine_and_model(args.install_root)
        engines = Engines(binary, model, args.install_root / ".llamapin/logs/bench", None)
        lengths = [int(x) for x in args.lengths.split(",")]
        kinds = args.warm_ups.split(",")
        if not set(kinds) <= set(WARM_UPS):
            parser.error(f"--warm-ups: kinds are {', '.join(WARM_UPS)}")
        for key, now in (("pin", pin.build), ("engine_env", engines.env)):
            if data.setdefault(key, now) != now:
                raise SystemExit(
                    f"{args.out} holds a record made with {key} {data[key]!r}, not {now!r}: "
                    "give another --out to start a new record"
                )
        for _ in range(args.process_pairs):
            n = len(data["process_pairs"])
            began = time.monotonic()
            row = process_pair(engines, n, lengths, args.pairs, kinds)
            row["wall_s"] = round(time.monotonic() - began, 2)
            row["load"] = machine_load()
            data["process_pairs"].append(row)
            args.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            print(f"process pair {n}: {row['warm_up']} warm-up, {row['wall_s']:.0f} s", flush=True)
    print(summarize(data))


if __name__ == "__main__":
    main()
