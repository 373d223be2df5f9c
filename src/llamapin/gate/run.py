"""The gate's shell: start engines, send the suite, compare, measure, decide.

All decisions are made by the pure functions in suite, compare, perf and
verdict; this module only does I/O (processes, HTTP, clock).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamapin.config import Config, GateConfig
from llamapin.engine.ensure import NOT_CHECKED, BuildInfo, EnsureResult, provenance_problems
from llamapin.errors import EngineError
from llamapin.gate import floors as fl
from llamapin.gate import perf as pf
from llamapin.gate.compare import Generation, TopN, compare
from llamapin.gate.suite import Prompt, Suite, check
from llamapin.gate.verdict import (
    Check,
    EngineInfo,
    PerfReport,
    PromptOutcome,
    Thresholds,
    Verdict,
    decide,
    divergence_warnings,
    resource_warnings,
)
from llamapin.pin import Pin
from llamapin.progress import step
from llamapin.server import Server, ServerSpec, fit_env

# /props build_info, in every format so far: "b10068-571d0d540", "b1-7e4c0a9", "b0-unknown"
PROPS_BUILD = re.compile(r"\bb(\d+)-([0-9a-f]+|unknown)\b")
PERF_WORDS = ("length", "width", "depth", "colour", "temperature")


def perf_prompt(sentences: int) -> str:
    """The timed requests' prompt: ``sentences`` sentences of about 18 tokens each (6 by
    default: about 105 tokens of prompt processing before generation)."""
    return " ".join(
        f"Item {i}: the {PERF_WORDS[i % len(PERF_WORDS)]} of the river valley was recorded "
        "in the village ledger."
        for i in range(sentences)
    )


def machine_load() -> float | None:
    """The 1-minute load average, or None where the platform has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - Windows has no load average
        return None


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows have no affinity call
        return os.cpu_count() or 1


@dataclass
class GateInputs:
    candidate: Path
    model: Path
    suite: Suite
    cfg: GateConfig
    pin: Pin
    logs: Path
    baseline: Path | None = None
    model_arch: str | None = None
    checks: list[Check] = field(default_factory=list)
    perf_mode: str = "auto"
    model_name: str | None = None
    require_provenance: bool = True
    platform: str = "linux-x64"  # what the engines are built for (the CPU floor needs linux-x64)
    macos_declared: tuple[str, str] | None = None  # the app's minimum macOS, and where from
    # the machine's 1-minute load average (None where unknown), read around each perf round
    load: Callable[[], float | None] = machine_load


def props_build(build_info: str | None) -> BuildInfo:
    """``b10068-571d0d540`` (from /props) -> BuildInfo."""
    match = PROPS_BUILD.search(build_info or "")
    if not match:
        return BuildInfo(None, None)
    commit = match.group(2)
    return BuildInfo(int(match.group(1)), None if commit == "unknown" else commit)


def provenance_check(build_info: str | None, pin: Pin, require: bool = True) -> Check:
    """The running engine's /props build_info against the pin (see ensure.check_provenance)."""
    info = props_build(build_info)
    problems = provenance_problems(info, pin)
    if problems:
        return Check("provenance", "fail", "; ".join(problems))
    if not info.verifiable:
        said = f"/props build_info {build_info!r} carries neither a build number nor a commit"
        if require:
            return Check(
                "provenance",
                "fail",
                f"cannot verify provenance: {said} (engine.require_provenance = false "
                "accepts such a build, unverified)",
            )
        return Check(
            "provenance",
            "skip",
            f"{NOT_CHECKED}: {said}; accepted because engine.require_provenance = false",
        )
    return Check(
        "provenance",
        "pass",
        f"/props build_info {build_info!r} matches {pin.build} ({pin.commit[:9]})",
    )


def _top(entry: dict[str, Any]) -> TopN:
    return {
        int(t["id"]) if "id" in t else hash(t["token"]): float(t["logprob"])
        for t in entry.get("top_logprobs", [])
    }


def sampling(top_n: int) -> dict[str, Any]:
    """Deterministic decoding: one top-k sampler with k = 1, fixed seed, no penalties."""
    return {
        "top_k": 1,
        "samplers": ["top_k"],
        "seed": 0,
        "temperature": 0.0,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "cache_prompt": False,
        "n_probs": top_n,
    }


def generate(server: Server, prompt: Prompt, cfg: GateConfig) -> Generation:
    if prompt.endpoint == "chat":
        messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
        messages.append({"role": "user", "content": prompt.text})
        body = {
            "messages": messages,
            "max_tokens": prompt.n_predict,
            "logprobs": True,
            "top_logprobs": cfg.top_n,
            **sampling(cfg.top_n),
        }
        data = server.post("/v1/chat/completions", body, cfg.request_timeout_s)
        choice = data["choices"][0]
        entries = (choice.get("logprobs") or {}).get("content") or []
        text = choice["message"].get("content") or ""
    else:
        body = {"prompt": prompt.text, "n_predict": prompt.n_predict, **sampling(cfg.top_n)}
        data = server.post("/completion", body, cfg.request_timeout_s)
        entries = data.get("completion_probabilities") or []
        text = data.get("content", "")
    tokens = tuple(int(e["id"]) if "id" in e else hash(e["token"]) for e in entries)
    return Generation(tokens, tuple(_top(e) for e in entries), text)


WARM_UP = (1, 4)
"""The warm-up request of each engine of a round: (prompt sentences, tokens). It runs every
layer once (the weights paged in, the threads started); measured, the first timed request
after it was within 0-3% of the rest of its process at the median, about as after a full-size
warm-up (docs/benchmarks.md), at a fraction of a timed request's cost; what is left is alike
on both sides and cancels in the round's first pair."""


def timed_request(
    server: Server, cfg: GateConfig, size: tuple[int, int] | None = None
) -> dict[str, float]:
    """One timed completion: ``size`` (prompt sentences, tokens) or the perf config's."""
    sentences, tokens = size or (cfg.perf.prompt_sentences, cfg.perf.n_predict)
    body = {
        "prompt": perf_prompt(sentences),
        "n_predict": tokens,
        "ignore_eos": True,
        **sampling(0),
    }
    started = time.monotonic()
    data = server.post("/completion", body, cfg.request_timeout_s)
    wall = time.monotonic() - started
    timings = data["timings"]
    return {
        "gen_tps": float(timings["predicted_per_second"]),
        "prompt_tps": float(timings["prompt_per_second"]),
        "wall_s": wall,
    }


Restart = Callable[[int], contextlib.AbstractContextManager[tuple[Server, Server]]]
"""Round number -> a fresh (candidate, baseline) pair of engines, stopped on exit."""

SAMPLE_KEYS = (
    "cand_gen_tps",
    "base_gen_tps",
    "cand_prompt_tps",
    "base_prompt_tps",
    "cand_wall_s",
    "base_wall_s",
    "round",
)


def _round_groups(samples: dict[str, list[float]], metric: str) -> list[list[float]]:
    """Paired log-ratios of one metric, one list per round (process pair)."""
    groups: dict[int, list[float]] = {}
    for r, c, b in zip(
        samples["round"], samples[f"cand_{metric}"], samples[f"base_{metric}"], strict=True
    ):
        groups.setdefault(int(r), []).extend(pf.log_ratios([c], [b]))
    return list(groups.values())


def measure(
    cand: Server,
    base: Server,
    cfg: GateConfig,
    mode: str,
    say: Callable[[str], None],
    restart: Restart,
    clock: Callable[[], float] = time.monotonic,
    load: Callable[[], float | None] = machine_load,
) -> PerfReport:
    """Rounds of interleaved timed requests (alternating order) until the test decides.

    Round 0 uses ``cand`` and ``base``; every later round a fresh pair of engine
    processes from ``restart``, so the variation between processes is part of
    what the test sees."""
    p = cfg.perf
    params = p.params()
    samples: dict[str, list[float]] = {k: [] for k in SAMPLE_KEYS}
    engines: dict[str, list[float]] = {
        k: [] for k in ("cand_load_s", "base_load_s", "cand_rss", "base_rss")
    }
    started = clock()
    loads: list[float | None] = []  # after each round: the average before it may be older work
    decisions: list[pf.MetricDecision] = []
    outcome: pf.Outcome = "continue"
    pair = 0
    rounds = 0
    while outcome == "continue":
        fresh = restart(rounds) if rounds > 0 else contextlib.nullcontext((cand, base))
        with fresh as (c, b):
            engines["cand_load_s"].append(c.load_time_s)
            engines["base_load_s"].append(b.load_time_s)
            timed_request(c, cfg, WARM_UP)  # discarded
            timed_request(b, cfg, WARM_UP)
            for _ in range(params.round_size):
                order = [("cand", c), ("base", b)] if pair % 2 == 0 else [("base", b), ("cand", c)]
                for role, server in order:
                    result = timed_request(server, cfg)
                    samples[f"{role}_gen_tps"].append(result["gen_tps"])
                    samples[f"{role}_prompt_tps"].append(result["prompt_tps"])
                    samples[f"{role}_wall_s"].append(result["wall_s"])
                samples["round"].append(float(rounds))
                pair += 1
            engines["cand_rss"].append(float(c.peak_rss_bytes() or 0))
            engines["base_rss"].append(float(b.peak_rss_bytes() or 0))
        rounds += 1
        loads.append(load())
        final = clock() - started >= p.budget_s
        decisions = [
            pf.decide(name, _round_groups(samples, key), params, final=final)
            for name, key in (("generation", "gen_tps"), ("prompt processing", "prompt_tps"))
        ]
        outcome = pf.combine(decisions)
        say(f"perf ({mode}): round {rounds}, {pair} pairs: {outcome}")
    wall = clock() - started
    summary = "; ".join(d.describe() for d in decisions)
    zone = f"indifference zone {params.fail_margin:.0%}-{params.tolerance:.0%}"
    if outcome == "fail":
        said = "; ".join(pf.explain(d, params) for d in decisions if d.outcome == "fail")
        reason = f"slower: {said} ({zone}): {summary}"
    elif outcome == "pass":
        reason = (
            f"same: no slowdown of {params.tolerance:.0%} or more in any metric ({zone}): {summary}"
        )
    else:
        said = "; ".join(pf.explain(d, params) for d in decisions if d.outcome != "pass")
        reason = (
            f"unknown after {pair} pairs in {rounds} process pairs / {wall:.0f} s "
            f"(more pairs needed; not a pass): {said} ({zone}): {summary}"
        )
    memory, memory_reason = pf.memory_check(
        [int(x) for x in engines["cand_rss"]],
        [int(x) for x in engines["base_rss"]],
        p.max_rss_growth,
        p.warn_rss_growth,
    )
    load_time = pf.load_time_summary(engines["cand_load_s"], engines["base_load_s"])
    known = [x for x in loads if x is not None]
    busy = pf.busy_note(
        {
            name: pf.stalled(samples[f"{role}_gen_tps"])
            for name, role in (("candidate", "cand"), ("baseline", "base"))
        },
        pair,
        max(known) if known else None,
        cpu_count(),
        cfg.threads,
    )
    say(f"perf ({mode}): {outcome} after {pair} pairs in {rounds} process pairs")
    return PerfReport(
        mode,
        outcome,
        reason,
        decisions,
        pair,
        wall,
        {**samples, **engines},
        rounds,
        memory,
        memory_reason,
        load_time,
        busy,
    )


def engine_info(role: str, server: Server) -> EngineInfo:
    props = server.get("/props")
    return EngineInfo(
        role,
        str(server.spec.binary),
        props.get("build_info"),
        round(server.load_time_s, 3),
        server.peak_rss_bytes(),
    )


@contextlib.contextmanager
def _started(spec: ServerSpec) -> Iterator[Server]:
    server = Server(spec)
    try:
        yield server.start()
    finally:
        server.stop()


def _spec(inputs: GateInputs, binary: Path, role: str, log: str | None = None) -> ServerSpec:
    return ServerSpec(
        binary=binary,
        model=inputs.model,
        log=inputs.logs / (log or f"{role}.log"),
        ctx_size=inputs.cfg.ctx_size,
        threads=inputs.cfg.threads,
        extra_args=list(inputs.cfg.server_args),
        health_timeout_s=inputs.cfg.health_timeout_s,
        model_arch=inputs.model_arch,
        label=f"the {role} engine ({binary.name})",
        env=fit_env(inputs.cfg.fit, binary),
    )


@contextlib.contextmanager
def _fresh_pair(inputs: GateInputs, baseline: Path, rnd: int) -> Iterator[tuple[Server, Server]]:
    """A fresh candidate and baseline process for one round, started in alternating order."""
    with contextlib.ExitStack() as stack:
        roles = [("candidate", inputs.candidate), ("baseline", baseline)]
        started = {
            role: stack.enter_context(
                _started(_spec(inputs, binary, role, f"{role}-round{rnd}.log"))
            )
            for role, binary in (roles if rnd % 2 == 0 else roles[::-1])
        }
        yield started["candidate"], started["baseline"]


def run_suite(server: Server, suite: Suite, cfg: GateConfig) -> list[tuple[Prompt, Generation]]:
    out = []
    for i, prompt in enumerate(suite.prompts, 1):
        with step(f"prompt {i}/{len(suite.prompts)} {prompt.name}"):  # a line each in CI logs
            out.append((prompt, generate(server, prompt, cfg)))
    return out


def run_gate(inputs: GateInputs, say: Callable[[str], None] = print) -> Verdict:
    started = time.monotonic()
    checks = list(inputs.checks)
    prompts: list[PromptOutcome] = []
    engines: list[EngineInfo] = []
    perf = PerfReport(inputs.perf_mode, "skip", "not run")
    cfg = inputs.cfg
    try:
        with contextlib.ExitStack() as stack:
            say(f"start the candidate engine: {inputs.candidate}")
            cand = stack.enter_context(_started(_spec(inputs, inputs.candidate, "candidate")))
            checks.append(
                Check(
                    "engine start",
                    "pass",
                    f"healthy after {cand.load_time_s:.1f} s with "
                    f"{inputs.model_name or inputs.model.name}",
                )
            )
            info = engine_info("candidate", cand)
            checks.append(provenance_check(info.build_info, inputs.pin, inputs.require_provenance))
            say(f"run the suite ({len(inputs.suite.prompts)} prompts)")
            cand_out = run_suite(cand, inputs.suite, cfg)
            # The candidate's results stand whatever happens to the baseline from here on.
            prompts = outcomes(cand_out, None)
            role = "baseline"
            if inputs.baseline is None and inputs.perf_mode == "aa":
                role = "A/A twin"
            base: Server | None = None
            base_failed: EngineError | None = None
            if inputs.baseline is not None or inputs.perf_mode == "aa":
                binary = inputs.baseline or inputs.candidate
                say(f"start the {role} engine: {binary}")
                try:
                    base = stack.enter_context(_started(_spec(inputs, binary, "baseline")))
                    prompts = outcomes(cand_out, run_suite(base, inputs.suite, cfg))
                except EngineError as exc:  # only the baseline ran here
                    base_failed = exc
            if inputs.perf_mode == "off":
                perf = PerfReport("off", "skip", "performance check disabled by configuration")
            elif base_failed is not None:
                perf = PerfReport(inputs.perf_mode, "skip", not_done(base_failed))
            elif base is None:
                perf = PerfReport(
                    inputs.perf_mode,
                    "skip",
                    "no baseline engine to compare with (the pin is unchanged); "
                    "correctness, provenance and signatures were checked",
                )
            else:
                try:
                    twin = inputs.baseline or inputs.candidate
                    perf = measure(
                        cand,
                        base,
                        cfg,
                        "A/A" if role != "baseline" else "baseline",
                        say,
                        lambda rnd: _fresh_pair(inputs, twin, rnd),
                        load=inputs.load,
                    )
                except EngineError as exc:  # either engine: blame the one the error names
                    if not exc.what.startswith(base.spec.label):
                        raise
                    base_failed = exc
                    perf = PerfReport(inputs.perf_mode, "skip", not_done(exc))
            engines.append(engine_info("candidate", cand))
            if base_failed is not None:
                say(base_failed.render())
                checks += baseline_failed(role, base_failed, compared=base is not None)
            elif base is not None:
                engines.append(engine_info(role, base))
    except EngineError as exc:
        checks.append(Check("engine", "fail", f"{exc.what}: {exc.why}"))
        say(exc.render())
    floors, floor_checks = check_floors(inputs, say)  # the engines above are stopped by now
    checks += floor_checks
    thresholds = Thresholds(cfg.max_divergence_kl, cfg.warn_divergence_kl)
    outcome, reasons = decide(checks, prompts, perf, thresholds)
    return Verdict(
        outcome,
        reasons,
        checks,
        prompts,
        engines,
        perf,
        inputs.model_name or inputs.model.name,
        inputs.suite.name,
        round(time.monotonic() - started, 2),
        f"{inputs.pin.build} ({inputs.pin.commit})",
        divergence_warnings(prompts, thresholds) + resource_warnings(perf) + floor_warnings(floors),
        floors=floors,
    )


def check_floors(
    inputs: GateInputs, say: Callable[[str], None]
) -> tuple[fl.FloorsReport, list[Check]]:
    """Minimum macOS and the CPU floor, for the candidate and the pinned engine."""
    engines = [("candidate", inputs.candidate)]
    if inputs.baseline is not None:
        engines.append(("baseline", inputs.baseline))
    macos, macos_change, too_new = fl.macos_floors(engines, inputs.macos_declared)
    checks = []
    if too_new and inputs.macos_declared is not None:
        version, where = inputs.macos_declared
        checks.append(
            Check("macOS floor", "fail", f"{'; '.join(too_new)}, but {where} declares {version}")
        )
    cpu = fl.cpu_floor_report(
        inputs.cfg.min_cpu,
        inputs.platform,
        engines,
        inputs.model,
        inputs.logs,
        say,
        timeout_s=inputs.cfg.min_cpu_timeout_s,
        model_arch=inputs.model_arch,
        extra_args=list(inputs.cfg.server_args),
    )
    if cpu.declared is not None:
        status, message = fl.cpu_check(cpu)
        checks.append(Check("CPU floor", status, message))
    declared = inputs.macos_declared[0] if inputs.macos_declared else None
    return fl.FloorsReport(cpu, macos, declared, macos_change), checks


def floor_warnings(floors: fl.FloorsReport) -> list[str]:
    """A declared CPU floor that could not be tested is said out loud, never passed."""
    cpu = floors.cpu
    return [cpu.note] if cpu.declared is not None and not cpu.tested else []


def outcomes(
    cand_out: list[tuple[Prompt, Generation]],
    base_out: list[tuple[Prompt, Generation]] | None,
) -> list[PromptOutcome]:
    """Each candidate answer, checked, and compared with the baseline's when there is one."""
    prompts = []
    for i, (prompt, gen) in enumerate(cand_out):
        failures = [why for a in prompt.assertions if (why := check(a, gen.text))]
        comparison = None
        base_text = None
        if base_out is not None:
            comparison = compare(base_out[i][1], gen)
            base_text = base_out[i][1].text
        prompts.append(
            PromptOutcome(
                prompt.name,
                prompt.endpoint,
                prompt.text,
                [a.describe() for a in prompt.assertions],
                gen.text,
                failures,
                comparison,
                base_text,
            )
        )
    return prompts


def not_done(exc: EngineError) -> str:
    return f"not done: {exc.what}: {exc.why}"


def baseline_failed(role: str, exc: EngineError, *, compared: bool) -> list[Check]:
    """A baseline that cannot run leaves the candidate's results standing and the
    comparison an open question: inconclusive (never a pass), naming the engine."""
    checks = [
        Check(
            f"{role} engine",
            "inconclusive",
            f"{exc.what}: {exc.why}; the candidate's own results stand, "
            "but it was not compared with this engine",
        )
    ]
    if not compared:
        checks.append(Check("output comparison", "skip", not_done(exc)))
    return checks


def bundle_check(res: EnsureResult) -> Check:
    """The gate's first check: ensure verified the bundle (a no-op re-hashes every file)."""
    unchecked = [n for n in res.notes if n.startswith(NOT_CHECKED)]
    return Check(
        "bundle",
        "pass",
        f"{len(res.manifest.files)} files match the manifest; "
        f"closure {len(res.manifest.closure['libs'])} libraries"
        + "".join(f"; {n}" for n in unchecked),
    )


def suite_in_root(root: Path, suite: str | None) -> Path | None:
    """gate.suite from the config, refused unless it lies inside the project root."""
    from llamapin.paths import inside_root

    return inside_root(root, suite, "gate.suite") if suite else None


def gate_engine(
    cfg: Config,
    root: Path,
    pin: Pin,
    candidate: Path,
    baseline: Path | None,
    say: Callable[[str], None],
    *,
    checks: list[Check] | None = None,
    suite_path: Path | None = None,
    perf_mode: str | None = None,
) -> Verdict:
    """Fetch the model, load the suite, and gate one engine (against a baseline if given)."""
    from llamapin.engine.macos import declared_minimum
    from llamapin.fetch import Cache, client
    from llamapin.gate.suite import load_suite
    from llamapin.model import ensure_model, gguf_architecture

    suite_path = suite_path or suite_in_root(root, cfg.gate.suite)
    suite = load_suite(suite_path)  # a bad suite fails here, before any download or engine
    cache = Cache(Path(cfg.cache_dir).expanduser())
    model = cache.lookup(cfg.model.sha256)
    if model is None:  # an HTTP client only when the model must be fetched
        with client() as http:
            model = ensure_model(cfg.model, cache, cfg.engine.index_url, http, root)
    inputs = GateInputs(
        candidate=candidate,
        model=model,
        suite=suite,
        cfg=cfg.gate,
        pin=pin,
        logs=root / ".llamapin" / "logs",
        baseline=baseline,
        model_arch=gguf_architecture(model, sha256=cfg.model.sha256, cache=cache),
        checks=list(checks or []),
        perf_mode=perf_mode or cfg.gate.perf.mode,
        model_name=cfg.model.name,
        require_provenance=cfg.engine.require_provenance,
        platform=cfg.engine.resolved_platform(),
        macos_declared=declared_minimum(root, cfg.bundle),
    )
    return run_gate(inputs, say)
