"""The gate's verdict: plain values, and the pure rule that decides it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from llamapin.gate.compare import Comparison
from llamapin.gate.floors import FloorsReport
from llamapin.gate.perf import MetricDecision

Status = Literal["pass", "fail", "skip", "inconclusive"]
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str


@dataclass(frozen=True)
class PromptOutcome:
    name: str
    endpoint: str
    prompt: str
    expectations: list[str]
    answer: str
    failures: list[str]
    comparison: Comparison | None = None
    baseline_answer: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class EngineInfo:
    role: str
    binary: str
    build_info: str | None
    load_time_s: float
    peak_rss_bytes: int | None


@dataclass(frozen=True)
class PerfReport:
    mode: str
    status: Status
    reason: str
    decisions: list[MetricDecision] = field(default_factory=list)
    pairs: int = 0
    wall_s: float = 0.0
    samples: dict[str, list[float]] = field(default_factory=dict)
    rounds: int = 0
    # Peak resident memory, gated with its own tolerance (gate.perf.max_rss_growth).
    memory_status: Literal["pass", "fail", "warn", "skip"] = "skip"
    memory_reason: str = ""
    # Model load time, candidate vs baseline, paired by process pair (reported only).
    load_time: str = ""
    # Other work on the machine during the measurement (stalled requests, load), or "".
    busy: str = ""


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["pass", "fail", "inconclusive"]
    reasons: list[str]
    checks: list[Check]
    prompts: list[PromptOutcome]
    engines: list[EngineInfo]
    perf: PerfReport
    model: str
    suite: str
    elapsed_s: float
    pin: str
    warnings: list[str] = field(default_factory=list)
    floors: FloorsReport | None = None  # minimum CPU and macOS, per engine

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = SCHEMA_VERSION
        for prompt, raw in zip(self.prompts, data["prompts"], strict=True):
            raw["passed"] = prompt.passed
        return data


@dataclass(frozen=True)
class Thresholds:
    max_mean_kl: float = 0.1
    warn_mean_kl: float = 0.01


def divergence_warnings(prompts: list[PromptOutcome], th: Thresholds) -> list[str]:
    """Prompts whose output drifted from the baseline's more than builds of the same
    commit do, yet not as far as a broken engine: worth a look, never a failure."""
    return [
        f"prompt '{p.name}': output distribution drifted from the baseline "
        f"(mean KL {p.comparison.mean_kl:.3f} > warn {th.warn_mean_kl}; "
        f"fails above {th.max_mean_kl})"
        for p in prompts
        if p.comparison is not None and th.warn_mean_kl < p.comparison.mean_kl <= th.max_mean_kl
    ]


def resource_warnings(perf: PerfReport) -> list[str]:
    """Peak memory grown past the warn band but not the failure line, and a perf test
    that ran on a busy machine."""
    warnings = [f"memory: {perf.memory_reason}"] if perf.memory_status == "warn" else []
    return warnings + ([f"performance: {perf.busy}"] if perf.busy else [])


def decide(
    checks: list[Check], prompts: list[PromptOutcome], perf: PerfReport, th: Thresholds
) -> tuple[Literal["pass", "fail", "inconclusive"], list[str]]:
    """Fail on any failed check, wrong answer, catastrophic divergence or established
    slowdown; inconclusive when the only open questions are inconclusive checks (a
    baseline that could not run) or an undecided perf test."""
    reasons = [f"{c.name}: {c.message}" for c in checks if c.status == "fail"]
    open_questions = [f"{c.name}: {c.message}" for c in checks if c.status == "inconclusive"]
    for p in prompts:
        for failure in p.failures:
            reasons.append(f"prompt '{p.name}': answer {failure}")
        if p.comparison is not None and p.comparison.mean_kl > th.max_mean_kl:
            reasons.append(
                f"prompt '{p.name}': output distribution diverged from the baseline "
                f"(mean KL {p.comparison.mean_kl:.3f} > {th.max_mean_kl})"
            )
    if perf.status == "fail":
        reasons.append(f"performance: {perf.reason}")
    if perf.memory_status == "fail":
        reasons.append(f"memory: {perf.memory_reason}")
    if reasons:
        return "fail", reasons + open_questions
    if perf.status == "inconclusive":
        open_questions.append(f"performance: {perf.reason}")
    if open_questions:
        return "inconclusive", open_questions
    return "pass", []
