"""The bump's decision as a pure function over plain values: every outcome, without git or
HTTP; ``bump --to``'s choice; the dry run's preview; and the one place that pushes taking
the decision once more before it writes anything."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from llamapin.config import Config
from llamapin.errors import ConfigError, ForgeError
from llamapin.pin import Pin
from llamapin.upstream import github_models as api
from llamapin.upstream.bump import (
    BranchCommit,
    BumpDecision,
    BumpFacts,
    Forge,
    PrFact,
    Proposal,
    Remote,
    choose,
    decide_bump,
    preview,
    preview_text,
    push_and_propose,
    result_of,
)
from llamapin.upstream.changes import Relevance
from llamapin.upstream.feeds import Build
from llamapin.upstream.github import GitHub
from llamapin.upstream.rules import Screened, screen

BRANCH = "llamapin/bump-b10088"
PR = PrFact(7, "https://github.com/acme/app/pull/7")
OLD = PrFact(3, "https://github.com/acme/app/pull/3")
LOCK = "[pin]\nbuild = 'b10088'\n"


def facts(**kw: object) -> BumpFacts:
    base: dict[str, object] = {"target": "b10088", "branch": BRANCH}
    return BumpFacts(**{**base, **kw})  # type: ignore[arg-type]


def test_no_target_is_none() -> None:
    d = decide_bump(BumpFacts(None, "no upstream build is newer than b10068"))
    assert d == BumpDecision("none", "nothing to bump: no upstream build is newer than b10068")
    assert d.final
    assert result_of(d).action == "none" and result_of(d).pr is None


def test_a_branch_with_someone_elses_commits_is_an_error() -> None:
    stranger = BranchCommit("a" * 40, "Eve <eve@example.com>", "wip", "")
    with pytest.raises(ForgeError) as err:
        decide_bump(facts(branch_exists=True, foreign=(stranger,), open_pr=PR))
    assert err.value.line() == (
        f"branch {BRANCH} has commits llamapin did not make: 1 foreign commit(s), e.g. "
        "aaaaaaaaaaaa by Eve <eve@example.com>: 'wip'. llamapin will not overwrite someone's "
        "work: merge or move those commits, or delete the branch, then run bump again"
    )


def test_a_declined_pr_is_never_reopened() -> None:
    d = decide_bump(facts(branch_exists=True, declined=OLD, lock=LOCK, gate="pass"))
    assert d.action == "declined" and d.final and d.pr == OLD
    assert d.message.startswith("PR #3 for b10088 was closed without merging")
    assert d.message.endswith(f"delete the branch {BRANCH}")
    result = result_of(d)
    assert (result.action, result.pr, result.url) == ("declined", 3, OLD.url)
    # the branch was deleted: a new PR, the declined one is history
    assert decide_bump(facts(declined=OLD)).action == "open"
    # an open PR from the branch wins over an older declined one
    assert decide_bump(facts(branch_exists=True, declined=OLD, open_pr=PR)).action == "update"


def test_an_open_pr_with_the_same_lock_is_up_to_date() -> None:
    same = facts(branch_exists=True, open_pr=PR, proposed_lock=LOCK, lock=LOCK)
    d = decide_bump(same)
    assert d == BumpDecision("up-to-date", "PR #7 already proposes b10088; nothing changed", PR)
    assert d.final and result_of(d).pr == 7
    # the same answer whatever the gate said: the PR already shows that lock's gate
    assert decide_bump(facts(**{**same.__dict__, "gate": "fail"})).action == "up-to-date"


def test_an_older_proposal_is_updated_in_place() -> None:
    d = decide_bump(facts(branch_exists=True, open_pr=PR, proposed_lock="old", lock=LOCK))
    assert d.action == "update" and not d.final and d.pr == PR and not d.notice
    assert d.message == "PR #7 proposes an older pin of b10088: updating it in place"
    # the lock is not known yet (None): never "up to date"
    assert decide_bump(facts(branch_exists=True, open_pr=PR, proposed_lock=None)).action == (
        "update"
    )
    # a ready PR whose gate now fails gets the notice; a draft does not need it
    failing = decide_bump(facts(branch_exists=True, open_pr=PR, lock=LOCK, gate="fail"))
    assert failing.action == "update" and failing.notice
    draft = PrFact(7, PR.url, draft=True)
    assert not decide_bump(facts(branch_exists=True, open_pr=draft, gate="fail")).notice
    assert not decide_bump(facts(branch_exists=True, open_pr=PR, gate="pass")).notice


def test_no_pr_opens_one_and_a_gate_that_did_not_pass_makes_it_a_draft() -> None:
    assert decide_bump(facts()) == BumpDecision("open", "no PR proposes b10088 yet: a new PR")
    assert decide_bump(facts(gate="pass")).action == "open"
    for outcome in ("fail", "inconclusive"):
        d = decide_bump(facts(gate=outcome, branch_exists=True))
        assert d.action == "draft" and not d.final and d.pr is None
        assert d.message == f"no PR proposes b10088; the gate says {outcome}: a draft PR"


# --- bump --to ---------------------------------------------------------------------------

NOW = datetime(2026, 7, 30, tzinfo=UTC)
PIN = Pin("b10068", "5" * 40)


def build(n: int, day: int) -> Build:
    return Build(n, f"b{n}", datetime(2026, 7, day, tzinfo=UTC))


def screened(missing: dict[int, list[str]] | None = None) -> list[Screened]:
    return screen([build(10075, 21), build(10088, 29)], missing or {}, NOW, 3.0)


def test_to_refuses_a_build_that_is_not_newer() -> None:
    for tag, why in (("b10000", "older than the pin b10068"), ("b10068", "the pinned build")):
        with pytest.raises(ConfigError) as err:
            choose(PIN, screened(), tag, 3.0, lambda b: None)
        assert err.value.line() == (
            f"cannot bump to {tag}: it is {why}: bump only moves the pin forward. "
            f"To pin {tag} on purpose, run 'llamapin lock {tag}' and commit the lock"
        )


def test_to_refuses_an_unknown_build_and_one_without_every_asset() -> None:
    with pytest.raises(ConfigError) as err:
        choose(PIN, screened(), "b10099", 3.0, lambda b: None)
    assert "upstream lists no published build b10099 among the 2 newer than b10068" in str(
        err.value
    )
    with pytest.raises(ConfigError) as err:
        choose(
            PIN,
            screened({10075: ["release b10075 has no asset for linux-x64"]}),
            "b10075",
            3.0,
            lambda b: None,
        )
    assert err.value.line().startswith(
        "cannot bump to b10075: it lacks an asset this project needs: "
        "release b10075 has no asset for linux-x64. Pick a build with every asset"
    )
    with pytest.raises(ConfigError, match="bad build id"):
        choose(PIN, screened(), "latest", 3.0, lambda b: None)


def test_to_reports_the_cooldown_and_noise_without_applying_them() -> None:
    noise = Relevance(False, {}, {"docs": 3}, [], 3)
    d = choose(PIN, screened(), "b10088", 3.0, lambda b: noise)
    assert d.bump and d.target is not None and d.target.tag == "b10088"
    assert d.reason == f"b10088 was chosen with --to (1.0 days old (< 3)); {noise.reason()}"
    assert d.relevance is noise
    d = choose(PIN, screened(), "b10075", 3.0, lambda b: None)
    assert d.reason == (
        "b10075 was chosen with --to (9.0 days old); its changes could not be listed"
    )


# --- the dry run's preview, and the guard in the one place that pushes -------------------


def pull(number: int, branch: str, draft: bool = False) -> api.PullRequest:
    return api.PullRequest.model_validate(
        {
            "number": number,
            "html_url": f"https://github.com/acme/app/pull/{number}",
            "head": {"ref": branch},
            "draft": draft,
        }
    )


def proposal(outcome: str) -> Proposal:
    return Proposal(BRANCH, "main", "c" * 40, "b10088", "chore: bump", "the body", outcome, [])


def test_preview_says_what_would_be_published() -> None:
    older = pull(3, "llamapin/bump-b10075")
    fresh = Remote(None, [older], None)
    result = preview(fresh, proposal("pass"), "chore: bump\n\nLlamapin-Bump: b10088\n")
    assert result.action == "dry-run" and not result.draft and result.pr is None
    assert result.message == (
        f"dry run: would push cccccccccccc to {BRANCH} and open a PR for b10088 (gate pass), "
        "closing #3; nothing was pushed, opened or commented"
    )
    assert result.preview is not None
    assert (result.preview.would, result.preview.closes) == ("open", [3])
    text = preview_text(result.message, result.preview)
    assert text.splitlines()[1:5] == [
        f"branch: {BRANCH} (base main)",
        f"commit: {'c' * 40}",
        "    chore: bump",
        "",
    ]
    assert text.endswith("PR title: chore: bump\nPR body:\nthe body")
    draft = preview(fresh, proposal("fail"), "m")
    assert draft.draft and draft.preview is not None and draft.preview.would == "draft"
    assert "open a draft PR for b10088 (gate fail)" in draft.message
    mine = pull(7, BRANCH)
    update = preview(Remote("d" * 40, [mine], mine), proposal("pass"), "m")
    assert update.pr == 7 and "update PR #7 in place" in update.message
    assert "closing" not in update.message
    declined = preview(Remote("d" * 40, [], None, pull(3, BRANCH)), proposal("pass"), "m")
    assert declined.action == "declined" and declined.preview is None


def test_push_and_propose_pushes_nothing_on_a_final_decision(tmp_path: Path) -> None:
    # No git repository and no server: a push or a request would fail loudly.
    with httpx.Client() as http:
        gh = GitHub("http://127.0.0.1:9/api/v3", "acme/app", None, http)
        forge = Forge(tmp_path, Config(), gh)
        remote = Remote("d" * 40, [], None, pull(3, BRANCH))
        result = push_and_propose(forge, remote, proposal("pass"), post_status=True)
    assert result.action == "declined" and result.pr == 3
    assert gh.calls == 0
