"""Renderers over one Verdict: Markdown (job summary, PR body), JSON, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from llamapin.gate.floors import FloorsReport
from llamapin.gate.verdict import Verdict
from llamapin.inert import code, sanitize, xml_text

ICON = {"pass": "✅", "fail": "❌", "skip": "⏭️", "inconclusive": "⚠️"}


def _cell(text: str, limit: int = 80) -> str:
    """Text that may come from an engine, a suite or a log: inert, one line, bounded."""
    return sanitize(text, limit)


def markdown(v: Verdict) -> str:
    lines = [f"## llamapin gate: {ICON[v.outcome]} {v.outcome.upper()}", ""]
    lines.append(
        f"Pin {_cell(v.pin, 120)}; model `{code(v.model)}`; suite `{code(v.suite)}`; "
        f"{v.elapsed_s:.0f} s."
    )
    lines.append("")
    if v.reasons:
        lines += ["**Why:**", ""] + [f"- {_cell(r, 400)}" for r in v.reasons] + [""]
    if v.warnings:
        lines += ["**Warnings:**", ""] + [f"- {_cell(w, 400)}" for w in v.warnings] + [""]
    lines += ["| check | result | detail |", "|---|---|---|"]
    lines += [
        f"| {_cell(c.name, 60)} | {ICON[c.status]} | {_cell(c.message, 200)} |" for c in v.checks
    ]
    lines.append("")
    if v.prompts:
        compared = any(p.comparison for p in v.prompts)
        head = "| prompt | result | expected | answer |"
        rule = "|---|---|---|---|"
        if compared:
            head += " agreement | first divergence | mean KL | same top |"
            rule += "---|---|---|---|"
        lines += [head, rule]
        for p in v.prompts:
            row = (
                f"| {_cell(p.name, 60)} | {ICON['pass' if p.passed else 'fail']} | "
                f"{_cell('; '.join(p.expectations))} | {_cell(p.answer)} |"
            )
            if p.comparison is not None:
                c = p.comparison
                first = "none" if c.first_divergence is None else f"token {c.first_divergence}"
                row += f" {c.agreement:.0%} | {first} | {c.mean_kl:.4f} | {c.same_top:.0%} |"
            lines.append(row)
        lines.append("")
    if v.floors is not None:
        lines += floors_markdown(v.floors)
    lines.append(
        f"**Performance** ({v.perf.mode}): {ICON[v.perf.status]} {_cell(v.perf.reason, 600)}"
    )
    lines.append("")
    if v.perf.memory_reason:
        icon = ICON.get(v.perf.memory_status, ICON["inconclusive"])
        lines += [f"**Memory**: {icon} {_cell(v.perf.memory_reason, 300)}", ""]
    if v.perf.load_time:
        lines += [f"**Load time**: {_cell(v.perf.load_time, 300)}", ""]
    if v.engines:
        lines += ["| engine | build | load time | peak RSS |", "|---|---|---|---|"]
        for e in v.engines:
            rss = f"{e.peak_rss_bytes / 2**20:.0f} MiB" if e.peak_rss_bytes else "n/a"
            lines.append(
                f"| {e.role} | {_cell(e.build_info or 'unknown', 80)} | "
                f"{e.load_time_s:.1f} s | {rss} |"
            )
        lines.append("")
    return "\n".join(lines)


def floors_markdown(f: FloorsReport) -> list[str]:
    """The oldest macOS and CPU each engine runs on, and the change from the pin."""
    roles = [m.role for m in f.macos]
    pinned = len(roles) > 1
    head = "| floor | candidate |" + (" pinned | change from the pin |" if pinned else "")
    rule = "|---|---|" + ("---|---|" if pinned else "")
    app = f" (app: {_cell(f.macos_declared, 20)})" if f.macos_declared else ""
    macos = [_cell(m.minimum or m.detail, 80) for m in f.macos]
    lines = ["**Floors**", "", head, rule]
    lines.append(
        f"| minimum macOS{app} | "
        + " | ".join(macos + ([_cell(f.macos_change, 120)] if pinned else []))
        + " |"
    )
    cpu = f.cpu
    name = "CPU" if cpu.declared is None else f"CPU {_cell(cpu.declared, 40)}"
    if cpu.tested:
        cells = [f"{ICON[r.status]} {_cell(r.detail, 200)}" for r in cpu.runs]
        cells += [_cell(cpu.change, 120)] if pinned else []
    else:
        cells = [_cell(cpu.note, 200)] + (["", ""] if pinned else [])
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for role, variants in cpu.variants.items():
        lines.append(
            f"CPU backend variants of the {role} engine (each names the CPU features it "
            f"needs; the engine picks one at run time): {_cell(', '.join(variants), 300)}"
        )
        lines.append("")
    return lines


def to_json(v: Verdict) -> str:
    return json.dumps(v.to_dict(), indent=2, sort_keys=True, default=str) + "\n"


def junit(v: Verdict) -> str:
    suite = ET.Element("testsuite", name="llamapin-gate", time=f"{v.elapsed_s:.2f}")
    cases = 0
    failures = 0
    skipped = 0

    def case(name: str, status: str, message: str, detail: str = "") -> None:
        nonlocal cases, failures, skipped
        cases += 1
        tc = ET.SubElement(suite, "testcase", classname="llamapin.gate", name=xml_text(name, 200))
        message = xml_text(" ".join(message.split()), 2000)
        if status == "fail":
            failures += 1
            ET.SubElement(tc, "failure", message=message).text = xml_text(detail) or message
        elif status in ("skip", "inconclusive"):
            skipped += 1
            ET.SubElement(tc, "skipped", message=message)

    for c in v.checks:
        case(c.name, c.status, c.message)
    for p in v.prompts:
        # one line per field, so no line of the detail starts with the engine's or suite's text
        detail = "\n".join(
            f"{label}: {' '.join(text.split())}"
            for label, text in (
                ("prompt", p.prompt),
                ("expected", "; ".join(p.expectations)),
                ("answer", p.answer),
            )
        )
        case(f"prompt {p.name}", "pass" if p.passed else "fail", "; ".join(p.failures), detail)
    case("performance", v.perf.status, v.perf.reason)
    if v.perf.memory_reason:
        case("peak memory", v.perf.memory_status.replace("warn", "pass"), v.perf.memory_reason)
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    return ET.tostring(suite, encoding="unicode") + "\n"
