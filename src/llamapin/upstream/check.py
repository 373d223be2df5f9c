"""`llamapin check`: notice upstream builds worth adopting, and say why (or why not).

The shell around the pure rules: read the feed, resolve every target's assets for each
newer build, screen and decide (``upstream/rules.py``), and check the tags on the way.
"""

from __future__ import annotations

from datetime import datetime

from llamapin.upstream.rules import Decision, decide, screen
from llamapin.upstream.service import Upstream


def run_check(up: Upstream, now: datetime) -> Decision:
    cfg = up.cfg.upstream
    feed = up.feed
    if feed.tagged:
        up.check_pin_tag()
    builds = feed.builds(up.pin.number)
    up.say(f"{len(builds)} upstream build(s) newer than {up.pin.build}")
    missing = {b.number: up.missing(b) for b in builds}
    screened = screen(builds, missing, now, cfg.cooldown_days)
    decision = decide(
        up.pin, screened, cfg.cooldown_days, up.relevance, up.added_archs, cfg.watch_archs
    )
    if decision.target is not None and feed.tagged:
        up.commit_of(decision.target)  # a moved tag stops the bump here, with both commits
    return decision
