"""The rules that pick an upstream build to adopt, as pure functions over plain values.

``screen`` ages each newer build and notes what it lacks; ``decide`` picks the newest
eligible one (newer, past the cooldown or adding a watched architecture, every asset
there, and changing what the build compiles) or says why none is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from llamapin.pin import Pin
from llamapin.upstream.changes import Relevance
from llamapin.upstream.feeds import Build


@dataclass(frozen=True)
class Screened:
    build: Build
    age_days: float
    missing: tuple[str, ...]
    cooled: bool

    @property
    def ready(self) -> bool:
        return self.cooled and not self.missing

    def reasons(self, cooldown: float) -> list[str]:
        out = [f"{self.age_days:.1f} days old" + ("" if self.cooled else f" (< {cooldown:g})")]
        out += list(self.missing)
        return out


def screen(
    builds: list[Build], missing: dict[int, list[str]], now: datetime, cooldown_days: float
) -> list[Screened]:
    """Each newer build with its age, cooldown state and missing assets, newest first."""
    out = []
    for b in sorted(builds, key=lambda b: -b.number):
        age = (now - b.published) / timedelta(days=1)
        out.append(Screened(b, age, tuple(missing.get(b.number, [])), age >= cooldown_days))
    return out


@dataclass(frozen=True)
class Decision:
    bump: bool
    target: Build | None
    reason: str
    screened: list[Screened]
    relevance: Relevance | None = None
    watched: list[str] = field(default_factory=list)


def decide(
    pin: Pin,
    screened: list[Screened],
    cooldown_days: float,
    relevance_of: Callable[[Build], Relevance | None],
    added_archs_of: Callable[[Build], list[str] | None],
    watch: list[str],
) -> Decision:
    """Pick the newest eligible build, or say why none is."""
    if not screened:
        return Decision(False, None, f"no upstream build is newer than {pin.build}", screened)
    with_assets = [s for s in screened if not s.missing]
    if not with_assets:
        newest = screened[0]
        return Decision(
            False,
            None,
            f"{len(screened)} newer build(s), none with every asset this project needs "
            f"(newest {newest.build.tag}: {'; '.join(newest.missing)})",
            screened,
        )
    young = [s for s in with_assets if not s.cooled]
    if watch and young:
        added = added_archs_of(young[0].build) or []
        hits = [a for a in added if "*" in watch or a in watch]
        if hits:
            return Decision(
                True,
                young[0].build,
                f"{young[0].build.tag} adds watched architecture(s) {', '.join(hits)} "
                f"(the {cooldown_days:g}-day cooldown is waived for them)",
                screened,
                relevance_of(young[0].build),
                hits,
            )
    ready = [s for s in with_assets if s.cooled]
    if not ready:
        reason = (
            f"the newest complete build, {young[0].build.tag}, is {young[0].age_days:.1f} days "
            f"old: inside the {cooldown_days:g}-day cooldown"
        )
        blocked = [s for s in screened if s.missing and s.cooled]
        if blocked:  # the cooldown is not what stops these: a missing asset is
            reason = (
                f"{blocked[0].build.tag} is past the cooldown but lacks an asset this project "
                f"needs ({'; '.join(blocked[0].missing)}), and {reason}"
            )
        return Decision(False, None, reason, screened)
    target = ready[0].build
    rel = relevance_of(target)
    if rel is not None and not rel.relevant:
        return Decision(
            False,
            None,
            f"{target.tag} {rel.reason()} since {pin.build}: noise for this build",
            screened,
            rel,
        )
    why = rel.reason() if rel else "its changes could not be listed, so it counts as relevant"
    reason = f"{target.tag} is the newest eligible build; {why}"
    return Decision(True, target, reason, screened, rel)
