"""Benchmark the perf gate at scale on this machine: A/A false alarms, power against
real slowdowns (a power curve), pairs and wall time per decision, each rate with
its 95% Clopper-Pearson interval.

Every decision starts fresh engines, as the gate does: a new candidate and a new
baseline process for round 1, and a new pair for every later round (the gate's
own ``measure`` with a restart), so the variation between processes is in every
figure. Results are appended to a JSON-lines file, one line per decision; a rerun
reads it and continues, so the record grows across runs, in chunks.

Usage (from the repo root, after scripts/bootstrap; as root, for the CPU quota):
    .venv/bin/python benchmarks/perf_gate.py --chunk 20      # 20 more decisions
    .venv/bin/python benchmarks/perf_gate.py --summary       # the tables, no runs
Ctrl-C or ``kill -TERM PID`` (also for a background run) finishes the decision under way,
records it and stops; a second one stops at once, the decision under way unrecorded.

Sets and goals (decisions each): aa 100, s10 100, s05 / s15 / s20 30; override
with e.g. ``--goal aa=3 --goal s10=3``. The next decision always goes to the set
furthest below its goal, so a cut-short run still covers every set.

A slowdown is real: the candidate processes of a slowed decision run in a CPU
cgroup (v1 cpu.cfs_quota_us) with a quota of 2 * (1 - target) CPUs; the size it
really causes is measured once per target, on one engine alone, quota on vs off
in alternating blocks, and recorded next to the decisions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llamapin.config import GateConfig, PerfConfig
from llamapin.errors import EngineError
from llamapin.gate import perf as pf
from llamapin.gate.run import WARM_UP, measure, timed_request
from llamapin.pin import Pin
from llamapin.server import Server, ServerSpec, fit_env

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"aa": 0.0, "s05": 0.05, "s10": 0.10, "s15": 0.15, "s20": 0.20}
GOALS = {"aa": 100, "s10": 100, "s05": 30, "s15": 30, "s20": 30}
CGROUP = Path("/sys/fs/cgroup/cpu/llamapin-bench")
DEFAULT_PERF = PerfConfig().model_dump()


class Throttle:
    """A CPU quota (cgroup v1 cpu controller) on the processes put into it."""

    def __init__(self, root: Path = CGROUP) -> None:
        self.root = root
        self.root.mkdir(exist_ok=True)
        self.set(None)

    def add(self, pid: int) -> None:
        (self.root / "cgroup.procs").write_text(str(pid))

    def set(self, cpus: float | None) -> None:
        """``cpus`` CPUs per period, or no limit."""
        period = int((self.root / "cpu.cfs_period_us").read_text())
        quota = "-1" if cpus is None else str(int(cpus * period))
        (self.root / "cpu.cfs_quota_us").write_text(quota)


def quota_for(target: float) -> float:
    """A process that keeps both cores busy runs q/2 of each period under q CPUs."""
    return round((os.cpu_count() or 2) * (1 - target), 3)


class Stop:
    """SIGTERM or SIGINT (also in a background job, where the shell ignores SIGINT): finish
    the step under way, record it, then stop; a second signal stops at once (the engines
    are stopped and the quota lifted on the way out)."""

    def __init__(self) -> None:
        self.asked = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.ask)

    def ask(self, signum: int, frame: object) -> None:
        if self.asked:  # from here on nothing interrupts the clean-up
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            raise KeyboardInterrupt
        self.asked = True
        os.write(2, b"stopping after the step under way (signal again to stop now)\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def next_set(done: dict[str, int], goals: dict[str, int]) -> str | None:
    """The set furthest below its goal (by fraction done), or None when all are met."""
    open_ = [s for s in goals if done.get(s, 0) < goals[s]]
    if not open_:
        return None
    return min(open_, key=lambda s: (done.get(s, 0) / goals[s], list(goals).index(s)))


class Engines:
    """Starts fresh engine processes, throttling the candidate's when asked."""

    def __init__(self, binary: Path, model: Path, logs: Path, throttle: Throttle | None) -> None:
        self.binary, self.model, self.logs, self.throttle = binary, model, logs, throttle
        # as the gate starts its engines (gate.fit's default), recorded with each decision
        self.env = fit_env(GateConfig().fit, binary)

    def server(self, role: str, n: int) -> Server:
        spec = ServerSpec(
            self.binary,
            self.model,
            self.logs / f"{role}-{n}.log",
            label=f"the {role} engine",
            env=self.env,
        )
        server = Server(spec).start()
        if role == "candidate" and self.throttle is not None:
            assert server.proc is not None
            self.throttle.add(server.proc.pid)
        return server

    @contextlib.contextmanager
    def pair(self, n: int) -> Iterator[tuple[Server, Server]]:
        order = ["candidate", "baseline"] if n % 2 == 0 else ["baseline", "candidate"]
        started: dict[str, Server] = {}
        try:
            for role in order:
                started[role] = self.server(role, n)
            yield started["candidate"], started["baseline"]
        finally:
            for server in started.values():
                server.stop()


def decision(engines: Engines, cfg: GateConfig, label: str) -> dict[str, Any]:
    """One whole perf decision on fresh engines, as the gate makes it."""
    began = time.monotonic()
    with engines.pair(0) as (cand, base):
        perf = measure(cand, base, cfg, label, say=lambda _: None, restart=engines.pair)
    total = time.monotonic() - began
    by = {d.metric: d for d in perf.decisions}
    gen, pp = by["generation"], by["prompt processing"]
    first = {k: v[:5] for k, v in perf.samples.items()}
    return {
        "kind": "decision",
        "set": label,
        "target": TARGETS[label],
        "outcome": perf.status,
        "gen_outcome": gen.outcome,
        "pp_outcome": pp.outcome,
        "pairs": perf.pairs,
        "rounds": perf.rounds,
        "wall_s": round(perf.wall_s, 2),
        "total_s": round(total, 2),
        "gen_ratio": gen.ratio,
        "gen_bounds": [gen.ci_low, gen.ci_high],
        "pp_ratio": pp.ratio,
        "memory": perf.memory_status,
        "memory_reason": perf.memory_reason,
        "load_time": perf.load_time,
        "busy": perf.busy,
        "engine_env": engines.env,
        "median_ratio_rule": pf.median_ratio_rule(first["cand_gen_tps"], first["base_gen_tps"]),
        "samples": perf.samples,
        "when": time.time(),
    }


def slowdown_size(
    engines: Engines, throttle: Throttle, target: float, blocks: int, cfg: GateConfig
) -> dict[str, Any]:
    """The slowdown a quota really causes: one engine alone, quota on vs off, with the
    timed request the decisions use."""
    plain: list[float] = []
    slow: list[float] = []
    server = engines.server("candidate", 99)
    try:
        timed_request(server, cfg)
        for i in range(blocks):
            for throttled in (False, True) if i % 2 == 0 else (True, False):
                throttle.set(quota_for(target) if throttled else None)
                (slow if throttled else plain).append(timed_request(server, cfg)["gen_tps"])
    finally:
        throttle.set(None)
        server.stop()
    return {
        "kind": "size",
        "target": target,
        "quota_cpus": quota_for(target),
        "plain_gen_tps": statistics.fmean(plain),
        "throttled_gen_tps": statistics.fmean(slow),
        "slowdown": 1 - statistics.fmean(slow) / statistics.fmean(plain),
        "blocks": blocks,
        "perf_config": cfg.perf.model_dump(),
        "when": time.time(),
    }


def rate(k: int, n: int) -> str:
    low, high = pf.clopper_pearson(k, n)
    return f"{k}/{n} = {k / n:.1%} [{low:.1%}, {high:.1%}]"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def settings(record: dict[str, Any]) -> str:
    """What a decision was measured with: the timed request, the warm-up (decisions made
    before it was shortened record none: theirs was a timed request) and every other perf
    setting that differs from the shipped default. Records from before a setting existed
    had its default then (24 prompt sentences)."""
    perf = {**DEFAULT_PERF, "prompt_sentences": 24, **record.get("perf_config", {})}
    warm = record.get("warm_up")
    warm_text = "a timed request" if warm is None else f"{warm[0]} sentence, {warm[1]} tokens"
    shown = ("prompt_sentences", "n_predict")
    others = [
        f"{k} {v}" for k, v in sorted(perf.items()) if k not in shown and v != DEFAULT_PERF.get(k)
    ]
    return "; ".join(
        [
            f"{perf['prompt_sentences']} sentences, {perf['n_predict']} tokens",
            f"warm-up {warm_text}",
            *others,
        ]
    )


def size_key(record: dict[str, Any]) -> tuple[float, int, int]:
    """A slowdown-size record's target and the timed request it was measured with (the
    oldest records name none: 24 sentences, 32 tokens)."""
    perf = {"prompt_sentences": 24, "n_predict": 32, **record.get("perf_config", {})}
    return record["target"], perf["prompt_sentences"], perf["n_predict"]


def summarize(records: list[dict[str, Any]]) -> str:
    sizes: dict[tuple[float, int, int], list[tuple[float, float]]] = {}
    for r in records:  # every measurement of a size, oldest first (one per host or run)
        if r["kind"] == "size":
            sizes.setdefault(size_key(r), []).append((r["when"], r["slowdown"]))

    def measured(row: dict[str, Any], target: float) -> float:
        """The slowdown in force for a decision: the last measurement before it."""
        before = [
            m
            for when, m in sizes.get(size_key({**row, "target": target}), [])
            if when <= row["when"]
        ]
        return before[-1] if before else math.nan

    lines = [
        "| settings | set | measured slowdown | decisions | fail [95% CI] | pass [95% CI] | "
        "inconclusive | pairs median / p95 | wall s median / p95 | median-ratio rule: fail | "
        "busy-machine warning |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    decisions = [r for r in records if r["kind"] == "decision"]
    groups = sorted({settings(r) for r in decisions}, key=lambda k: (-int(k.split()[0]), k))
    for (group, label), target in (
        ((g, label), target) for g in groups for label, target in TARGETS.items()
    ):
        rows = [r for r in decisions if r["set"] == label and settings(r) == group]
        if not rows:
            continue
        n = len(rows)
        count = {k: sum(r["outcome"] == k for r in rows) for k in ("fail", "pass", "inconclusive")}
        pairs = [float(r["pairs"]) for r in rows]
        wall = [float(r["total_s"]) for r in rows]
        in_force = dict.fromkeys(measured(r, target) for r in rows)  # in order, once each
        size = "0 (A/A)" if target == 0 else ", ".join(f"{m:.1%}" for m in in_force)
        ratio = sum(r["median_ratio_rule"] == "fail" for r in rows)
        busy = sum(bool(r.get("busy")) for r in rows)  # records before the warning: none
        lines.append(
            f"| {group} | {label} | {size} | {n} | {rate(count['fail'], n)} | "
            f"{rate(count['pass'], n)} | "
            f"{count['inconclusive']} | {statistics.median(pairs):.0f} / {pct(pairs, 0.95):.0f} | "
            f"{statistics.median(wall):.0f} / {pct(wall, 0.95):.0f} | {ratio} | {busy} |"
        )
    return "\n".join(lines)


def engine_and_model(install_root: Path) -> tuple[Pin, Path, Path]:
    """The pinned engine (installed by ensure under ``install_root``) and the default model."""
    from llamapin.config import Config
    from llamapin.engine.ensure import ensure
    from llamapin.fetch import Cache, client
    from llamapin.model import ensure_model
    from llamapin.pin import read_lock

    cfg = Config()
    pin = read_lock(ROOT / "llamapin.lock")
    res = ensure(cfg, install_root, pin, say=lambda _: None)
    with client() as http:
        model = ensure_model(
            cfg.model, Cache(Path(cfg.cache_dir)), cfg.engine.index_url, http, ROOT
        )
    return pin, res.binary, model


def parse_goals(given: list[str]) -> dict[str, int]:
    goals = dict(GOALS)
    if given:
        goals = {}
        for item in given:
            name, _, count = item.partition("=")
            if name not in TARGETS:
                raise SystemExit(f"unknown set {name!r}; sets: {', '.join(TARGETS)}")
            goals[name] = int(count)
    return goals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/perf_gate.jsonl")
    parser.add_argument("--chunk", type=int, default=10, help="decisions to add in this run")
    parser.add_argument("--goal", action="append", default=[], help="SET=N, e.g. aa=100")
    parser.add_argument("--size-blocks", type=int, default=20)
    parser.add_argument(
        "--size-again",
        action="store_true",
        help="measure each slowed set's true slowdown again before its first decision of "
        "this run (another host), keeping the earlier measurements",
    )
    parser.add_argument("--summary", action="store_true", help="print the tables only")
    # the gate's defaults unless given (a smoke run may shrink them; each row records them)
    parser.add_argument("--min-pairs", type=int)
    parser.add_argument("--max-pairs", type=int)
    parser.add_argument("--pairs-per-round", type=int)
    parser.add_argument("--budget-s", type=float)
    parser.add_argument("--n-predict", type=int)
    parser.add_argument("--first-look-share", type=float, help="gate.perf.first_look_share")
    parser.add_argument(
        "--install-root", type=Path, default=ROOT, help="where ensure installs the engine"
    )
    args = parser.parse_args()
    goals = parse_goals(args.goal)
    if args.summary:
        print(summarize(read_records(args.out)))
        return
    pin, binary, model = engine_and_model(args.install_root)
    perf = {
        k: v
        for k, v in (
            ("min_pairs", args.min_pairs),
            ("max_pairs", args.max_pairs),
            ("pairs_per_round", args.pairs_per_round),
            ("budget_s", args.budget_s),
            ("n_predict", args.n_predict),
            ("first_look_share", args.first_look_share),
        )
        if v is not None
    }
    # a generous request timeout: a loaded machine slows the engines, it must not end a run
    gate_cfg = GateConfig(request_timeout_s=600.0, perf=PerfConfig.model_validate(perf))
    throttle = Throttle()
    logs = args.install_root / ".llamapin/logs/bench"
    records = read_records(args.out)
    stop = Stop()
    sized: set[str] = set()  # the sets whose slowdown this run measured
    try:
        for _ in range(args.chunk):
            if stop.asked:
                break
            done: dict[str, int] = {}
            this_run = {"perf_config": gate_cfg.perf.model_dump(), "warm_up": list(WARM_UP)}
            for r in records:  # a record grows only with decisions made the same way
                if r["kind"] == "decision" and settings(r) == settings(this_run):
                    done[r["set"]] = done.get(r["set"], 0) + 1
            label = next_set(done, goals)
            if label is None:
                print("every set has reached its goal", file=sys.stderr)
                break
            target = TARGETS[label]
            wanted = size_key({"target": target, "perf_config": gate_cfg.perf.model_dump()})
            known = any(r["kind"] == "size" and size_key(r) == wanted for r in records)
            if target and (not known or (args.size_again and label not in sized)):
                sized.add(label)
                engines = Engines(binary, model, logs, throttle)
                size = slowdown_size(engines, throttle, target, args.size_blocks, gate_cfg)
                size["pin"] = pin.build
                append(args.out, size)
                records.append(size)
                print(
                    f"{label}: quota {size['quota_cpus']} CPUs: measured {size['slowdown']:.1%}",
                    file=sys.stderr,
                )
                if stop.asked:
                    break
            throttle.set(quota_for(target) if target else None)
            try:
                row = decision(Engines(binary, model, logs, throttle), gate_cfg, label)
            except EngineError as exc:  # recorded, counted apart, never a pass or a fail
                row = {"kind": "error", "set": label, "error": exc.line(), "when": time.time()}
                print(f"{label}: {exc.line()}", file=sys.stderr)
            finally:
                throttle.set(None)
            row["perf_config"] = gate_cfg.perf.model_dump()
            row["warm_up"] = list(WARM_UP)
            row.update(pin=pin.build, cores=os.cpu_count())
            append(args.out, row)
            records.append(row)
            if row["kind"] == "error":
                continue
            print(
                f"{label} {done.get(label, 0) + 1}/{goals[label]}: {row['outcome']} after "
                f"{row['pairs']} pairs in {row['rounds']} process pairs "
                f"({row['total_s']:.0f} s, gen ratio {row['gen_ratio']:.3f})",
                file=sys.stderr,
            )
    finally:
        throttle.set(None)
    print(summarize(records))


if __name__ == "__main__":
    main()
