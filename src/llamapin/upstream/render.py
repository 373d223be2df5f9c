"""What check says: its decision as JSON or as lines for a person, and the summary of
upstream's changes a bump's PR shows. Pure functions over plain values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamapin.pin import Pin
from llamapin.upstream.rules import Decision


def decision_dict(d: Decision, pin: Pin, cooldown: float) -> dict[str, Any]:
    return {
        "decision": "bump" if d.bump else "none",
        "pin": pin.build,
        "target": d.target.tag if d.target else None,
        "reason": d.reason,
        "watched_archs": d.watched,
        "relevance": None
        if d.relevance is None
        else {
            "relevant": d.relevance.relevant,
            "compiled": d.relevance.compiled,
            "noise": d.relevance.noise,
            "files": d.relevance.total,
        },
        "candidates": [
            {
                "build": s.build.tag,
                "published": s.build.published.isoformat(),
                "ready": s.ready,
                "reasons": s.reasons(cooldown),
            }
            for s in d.screened
        ],
    }


def decision_text(d: Decision, pin: Pin, cooldown: float) -> str:
    head = (
        f"bump {pin.build} -> {d.target.tag}: {d.reason}"
        if d.bump and d.target
        else f"no bump (pin {pin.build}): {d.reason}"
    )
    lines = [head]
    for s in d.screened[:20]:
        mark = "ready" if s.ready else "not ready"
        lines.append(f"  {s.build.tag}: {mark}: {'; '.join(s.reasons(cooldown))}")
    if len(d.screened) > 20:
        lines.append(f"  ... and {len(d.screened) - 20} older")
    return "\n".join(lines)


@dataclass(frozen=True)
class Summary:
    """What changed between the pin and the candidate, for the PR body."""

    compare_url: str
    total_commits: int
    groups: dict[str, list[str]]
    added: list[str] | None
    removed: list[str] | None
    server_commits: list[str]
    server_paths: list[str]
