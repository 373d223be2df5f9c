"""`llamapin bump`: turn a check's decision into a reviewed-by-a-human pull request.

Branch ``llamapin/bump-<tag>`` in a separate worktree (the user's checkout is
never touched), rewrite the pin and its locators, ensure the candidate, gate it
against the current pin, commit with a sign-off, push, then open or update the
PR and close the ones it supersedes.

In CI the work is split so no upstream binary runs next to a write token:
``prepare_bump`` (no token) makes, ensures and gates the commit and writes it as a git
bundle with a plan; ``publish_bump`` (the token) verifies that change against the
repository, pushes it and opens the PR, and runs no upstream code. ``run_bump`` is the
one-shot local run.

Nothing here merges, approves, or enables auto-merge: the PR waits for a human.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from llamapin import report
from llamapin.config import Config
from llamapin.engine.bundle import declared_libraries, drift
from llamapin.engine.ensure import EnsureResult, ensure
from llamapin.errors import ConfigError, ForgeError, IntegrityError, LlamapinError
from llamapin.gate.verdict import Verdict
from llamapin.inert import code, republished, sanitize
from llamapin.pin import (
    Asset,
    Pin,
    build_number,
    lock_text,
    pin_from_dict,
    write_locators,
    write_lock,
)
from llamapin.procenv import env_for
from llamapin.upstream import github_models as api
from llamapin.upstream.assets import keys_for
from llamapin.upstream.changes import Relevance
from llamapin.upstream.check import run_check
from llamapin.upstream.feeds import Build
from llamapin.upstream.github import GitHub, redact
from llamapin.upstream.pr_comment import post_report
from llamapin.upstream.render import Summary
from llamapin.upstream.rules import Decision, Screened, screen
from llamapin.upstream.service import Upstream, summarize
from llamapin.workflows import REF_PATTERN

BRANCH_PREFIX = "llamapin/bump-"
TRAILER = "Llamapin-Bump"


def git(args: list[str], cwd: Path, *, secret: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, env=env_for("git")
    )
    if check and proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        first = next((x for x in lines if x.startswith(("fatal:", "error:"))), None)
        raise ForgeError(
            f"git {args[0]} failed",
            redact((first or f"exit status {proc.returncode}").rstrip("."), secret),
            "Check the repository, the remote and its credentials",
            detail=redact(proc.stderr, secret),
        )
    return proc.stdout


def repo_from_url(url: str) -> str | None:
    match = re.search(r"github\.com[:/]([\w.-]+/[\w.-]+?)(?:\.git)?/?$", url.strip())
    return match.group(1) if match else None


# --- pure parts: what the branch holds, and what the PR says -----------------------------------


@dataclass(frozen=True)
class BranchCommit:
    sha: str
    author: str
    subject: str
    trailer: str


def parse_log(text: str) -> list[BranchCommit]:
    out = []
    for record in text.split("\x1e"):
        fields = record.strip("\n").split("\x00")
        if len(fields) == 4:
            out.append(BranchCommit(*(f.strip() for f in fields)))
    return out


def foreign(commits: list[BranchCommit]) -> list[BranchCommit]:
    """Commits on a bump branch that llamapin did not make."""
    return [c for c in commits if not c.trailer]


@dataclass(frozen=True)
class ClosureChange:
    added: list[str]
    removed: list[str]
    declared_missing: list[str]
    declared_extra: list[str]


def closure_change(old: list[str], new: list[str], declared: list[str] | None) -> ClosureChange:
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    missing, extra = drift(new, declared) if declared is not None else ([], [])
    return ClosureChange(added, removed, missing, extra)


def closure_markdown(change: ClosureChange, cfg: Config) -> str:
    lines = []
    where = cfg.bundle.frameworks_file
    listed_off = bool(where and (change.declared_missing or change.declared_extra))
    if not change.added and not change.removed and listed_off:
        lines.append(
            "The shared-library closure is unchanged, but the declared list already differs "
            "from it (before this bump):"
        )
    elif not change.added and not change.removed:
        lines.append("The shared-library closure is unchanged: nothing to re-bundle or re-sign.")
    for name in change.added:
        lines.append(f"- new library: `{name}`")
    for name in change.removed:
        lines.append(f"- library no longer needed: `{name}`")
    if listed_off:
        lines.append("")
        lines.append(f"**Remediation**: in `{where}`, `{cfg.bundle.frameworks_path}`:")
        lines += [f"- add `{n}`" for n in change.declared_missing]
        lines += [f"- remove `{n}`" for n in change.declared_extra]
        lines.append("then rebuild and re-sign the app bundle.")
    elif change.added or change.removed:
        lines.append("")
        lines.append(
            "**Remediation**: bundle and sign exactly the libraries listed in the new "
            f"manifest (`{code(cfg.bundle.dir.rstrip('/'))}/llamapin-manifest.json`)."
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class TargetChange:
    """One target's side of a bump: its closure change, or why this host did not ensure
    it (``skipped``, one line)."""

    cfg: Config  # the target's view
    change: ClosureChange | None
    gated: bool = False
    skipped: str = ""


def targets_closure_markdown(targets: list[TargetChange]) -> str:
    """The closure difference of every target, one section each."""
    parts = []
    for t in targets:
        view = t.cfg
        head = f"#### `{code(view.target_name)}` ({view.engine.resolved_platform()})"
        head += " (gated)" if t.gated else ""
        if t.change is None:
            text = f"Not ensured on this host: `{code(t.skipped, 400)}`"
        else:
            text = closure_markdown(t.change, view)
        parts.append(f"{head}\n\n{text}")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class AssetRow:
    """One asset of one target, pinned now and proposed."""

    target: str
    key: str
    old: Asset | None
    new: Asset | None


def asset_rows(cfg: Config, old: Pin, new: Pin) -> list[AssetRow]:
    """Every target's assets (the keys its engine source installs from), then the other
    keys either pin carries."""
    rows: list[AssetRow] = []
    for view in cfg.shared.views():
        for key in keys_for(view.engine, view.engine.resolved_platform()):
            rows.append(AssetRow(view.target_name, key, old.assets.get(key), new.assets.get(key)))
    listed = {r.key for r in rows}
    for key in sorted((old.assets.keys() | new.assets.keys()) - listed):
        rows.append(AssetRow("", key, old.assets.get(key), new.assets.get(key)))
    return rows


def assets_markdown(rows: list[AssetRow]) -> list[str]:
    """The per-target asset table: file and sha256, pinned now -> proposed."""

    def sha(asset: Asset | None) -> str:
        return "none" if asset is None else f"`{asset.sha256}`"

    lines = [
        "### Assets per target (sha256 pinned now -> proposed, verified on download)",
        "",
        "| target | key | file | sha256 |",
        "|---|---|---|---|",
    ]
    for r in rows:
        name = f"`{code(r.new.name)}`" if r.new else "not in the proposed pin"
        target = f"`{code(r.target)}`" if r.target else "other"
        same = r.old is not None and r.new is not None and r.old.sha256 == r.new.sha256
        change = f"{sha(r.new)} (unchanged)" if same else f"{sha(r.old)} -> {sha(r.new)}"
        lines.append(f"| {target} | `{code(r.key)}` | {name} | {change} |")
    return lines


def commits_markdown(summary: Summary) -> str:
    lines = [
        f"[{summary.total_commits} upstream commits]({summary.compare_url})",
        "",
    ]
    if summary.added is None:
        lines.append("**New model architectures**: unknown (no source of one build on the index)")
    else:
        added = ", ".join(f"`{code(a)}`" for a in summary.added) or "none"
        lines.append(f"**New model architectures**: {added}")
        if summary.removed:
            removed = ", ".join(f"`{code(a)}`" for a in summary.removed)
            lines.append(f"**Removed architectures**: {removed}")
    lines.append(
        f"**Server**: {len(summary.server_commits)} commit(s), "
        f"{len(summary.server_paths)} file(s) under tools/server"
    )
    lines.append("")
    lines.append("Commits by area:")
    for area, subjects in summary.groups.items():
        shown = "; ".join(sanitize(s, 120) for s in subjects[:5])
        more = f" (+{len(subjects) - 5} more)" if len(subjects) > 5 else ""
        lines.append(f"- **{sanitize(area, 40)}** ({len(subjects)}): {shown}{more}")
    return "\n".join(lines)


def pr_title(old: Pin, new: Pin) -> str:
    return f"chore(engine): bump llama.cpp {old.build} -> {new.build}"


def pr_body(
    old: Pin,
    new: Pin,
    decision: Decision,
    summary: Summary,
    closure: str,
    verdict: Verdict,
    notes: list[str],
    rows: list[AssetRow] | None = None,
) -> str:
    """The PR's description. ``rows``: a config with targets lists every target's assets
    (old -> new); without, the proposed pin's assets."""
    gate = verdict.outcome.upper()
    head = [
        f"## llama.cpp {old.build} -> {new.build}",
        "",
        f"**Gate: {gate}**"
        + ("" if verdict.outcome == "pass" else f": {sanitize(verdict.reasons[0], 300)}"),
        "",
        f"Why now: {sanitize(decision.reason, 400)}",
        "",
        "| | pinned now | proposed |",
        "|---|---|---|",
        f"| build | {old.build} | {new.build} |",
        f"| commit | `{old.commit}` | `{new.commit}` |",
        "",
    ]
    if rows is not None:
        head += assets_markdown(rows)
    else:
        head += [
            "### Assets (sha256, verified on download)",
            "",
            "| key | file | size | sha256 |",
            "|---|---|---|---|",
        ]
        for key, asset in sorted(new.assets.items()):
            name, size = code(asset.name), asset.size or ""
            head.append(f"| `{code(key)}` | `{name}` | {size} | `{asset.sha256}` |")
    head += [f"- {sanitize(n, 300)}" for n in notes]
    body = [
        *head,
        "",
        "### Upstream changes",
        "",
        commits_markdown(summary),
        "",
        "### Shared libraries",
        "",
        closure,
        "",
        "### Gate report",
        "",
        report.markdown(verdict),
        "",
        "---",
        "Opened by llamapin. A person reviews and merges this: llamapin never merges, "
        "approves, or enables auto-merge.",
    ]
    return "\n".join(body)


def commit_message(old: Pin, new: Pin, summary: Summary, verdict: Verdict) -> str:
    added = ", ".join(summary.added) if summary.added else "none"
    return (
        f"{pr_title(old, new)}\n\n"
        f"From {old.build} ({old.commit[:12]}) to {new.build} ({new.commit[:12]}): "
        f"{summary.total_commits} upstream commits.\n"
        f"New model architectures: {added if summary.added is not None else 'unknown'}.\n"
        f"Gate: {verdict.outcome}.\n\n"
        f"{TRAILER}: {new.build}\n"
    )


# --- the decision: what a bump does, given what it found ----------------------------------


@dataclass(frozen=True)
class PrFact:
    """A pull request, as the decision needs it."""

    number: int
    url: str
    draft: bool = False


Action = Literal["none", "up-to-date", "declined", "update", "open", "draft"]
FINAL: tuple[Action, ...] = ("none", "up-to-date", "declined")


@dataclass(frozen=True)
class BumpFacts:
    """Everything the bump decision reads, as plain values (no git, no HTTP)."""

    target: str | None  # the build to propose; None when the check found none
    reason: str = ""  # the check's reason
    branch: str = ""
    branch_exists: bool = False
    foreign: tuple[BranchCommit, ...] = ()  # commits on the branch llamapin did not make
    open_pr: PrFact | None = None  # the open PR from the branch
    declined: PrFact | None = None  # a PR from the branch closed without merging
    proposed_lock: str | None = None  # the lock the branch holds now
    lock: str | None = None  # the lock this bump writes (None: not known yet)
    gate: str | None = None  # the gate's outcome (None: not gated yet)


@dataclass(frozen=True)
class BumpDecision:
    """What to do. ``none``, ``up-to-date`` and ``declined`` end the run; ``update``,
    ``open`` and ``draft`` publish (before the gate has run, ``open`` stands for both)."""

    action: Action
    message: str
    pr: PrFact | None = None
    notice: bool = False  # the PR is ready for review but the gate now fails: say so on top

    @property
    def final(self) -> bool:
        return self.action in FINAL


def decide_bump(f: BumpFacts) -> BumpDecision:
    """The bump's decision over plain values. A branch holding someone else's commits is an
    error (llamapin never overwrites it); a PR a person declined is never reopened; an open
    PR that already proposes this lock is left alone; an older proposal is updated in place;
    otherwise a PR is opened, as a draft when the gate did not pass."""
    if f.target is None:
        return BumpDecision("none", f"nothing to bump: {f.reason}")
    if f.foreign:
        first = f.foreign[0]
        raise ForgeError(
            f"branch {f.branch} has commits llamapin did not make",
            f"{len(f.foreign)} foreign commit(s), e.g. {first.sha[:12]} by {first.author}: "
            f"{first.subject!r}",
            "llamapin will not overwrite someone's work: merge or move those commits, "
            "or delete the branch, then run bump again",
        )
    failing = f.gate is not None and f.gate != "pass"
    mine = f.open_pr
    if mine is None and f.branch_exists and f.declined is not None:
        closed = f.declined
        return BumpDecision(
            "declined",
            f"PR #{closed.number} for {f.target} was closed without merging: llamapin "
            f"will not reopen it. A newer eligible build gets its own PR; to propose "
            f"{f.target} again, delete the branch {f.branch}",
            closed,
        )
    if mine is None:
        if failing:
            return BumpDecision(
                "draft", f"no PR proposes {f.target}; the gate says {f.gate}: a draft PR"
            )
        return BumpDecision("open", f"no PR proposes {f.target} yet: a new PR")
    if f.branch_exists and f.lock is not None and f.proposed_lock == f.lock:
        return BumpDecision(
            "up-to-date", f"PR #{mine.number} already proposes {f.target}; nothing changed", mine
        )
    return BumpDecision(
        "update",
        f"PR #{mine.number} proposes an older pin of {f.target}: updating it in place",
        mine,
        notice=failing and not mine.draft,
    )


def choose(
    pin: Pin,
    screened: list[Screened],
    tag: str,
    cooldown_days: float,
    relevance_of: Callable[[Build], Relevance | None],
) -> Decision:
    """``bump --to``: the chosen build, through the rules that make a build adoptable at
    all (newer than the pin, published, every asset there). The cooldown and the noise
    rule choose among builds, so with a build chosen by hand they are reported, not
    applied."""
    number = build_number(tag)
    if number <= pin.number:
        where = "the pinned build" if number == pin.number else f"older than the pin {pin.build}"
        raise ConfigError(
            f"cannot bump to {tag}",
            f"it is {where}: bump only moves the pin forward",
            f"To pin {tag} on purpose, run 'llamapin lock {tag}' and commit the lock",
        )
    found = next((s for s in screened if s.build.tag == tag), None)
    if found is None:
        raise ConfigError(
            f"cannot bump to {tag}",
            f"upstream lists no published build {tag} among the {len(screened)} newer than "
            f"{pin.build}",
            "Pick a build that 'llamapin check' lists",
        )
    if found.missing:
        raise ConfigError(
            f"cannot bump to {tag}",
            f"it lacks an asset this project needs: {'; '.join(found.missing)}",
            "Pick a build with every asset ('llamapin check' lists why each is not ready)",
        )
    rel = relevance_of(found.build)
    why = rel.reason() if rel else "its changes could not be listed"
    age = found.reasons(cooldown_days)[0]
    reason = f"{tag} was chosen with --to ({age}); {why}"
    return Decision(True, found.build, reason, screened, rel)


# --- the I/O -------------------------------------------------------------------------------


@dataclass
class BumpResult:
    action: str  # "none", "up-to-date", "declined", "opened", "updated"
    message: str
    pr: int | None = None
    url: str | None = None
    draft: bool = False
    superseded: list[int] = field(default_factory=list)
    verdict: str | None = None
    preview: Preview | None = None  # bump --dry-run: what would have been published
    warnings: list[str] = field(default_factory=list)  # what went wrong after the PR was made


@dataclass(frozen=True)
class Preview:
    """What a dry run would publish."""

    would: str  # "open", "draft" or "update"
    branch: str
    base: str
    commit: str
    commit_message: str
    title: str
    body: str
    closes: list[int]


@dataclass
class Forge:
    """This project's repository: its git remote and its GitHub API."""

    root: Path
    cfg: Config
    gh: GitHub

    @property
    def remote(self) -> str:
        return self.cfg.forge.remote

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        return git(list(args), cwd or self.root, secret=self.gh.token, check=check)

    def base(self) -> str:
        if self.cfg.forge.base:
            return self.cfg.forge.base
        return api.get(self.gh, api.Repository, "repos/{repo}").default_branch

    def remote_sha(self, branch: str) -> str | None:
        out = self.git("ls-remote", "--heads", self.remote, f"refs/heads/{branch}")
        return out.split()[0] if out.strip() else None

    def open_prs(self, base: str) -> list[api.PullRequest]:
        return [
            pr
            for pr in api.items(
                self.gh, api.PullRequest, f"repos/{{repo}}/pulls?state=open&base={base}"
            )
            if pr.head.ref.startswith(BRANCH_PREFIX)
        ]

    def declined(self, branch: str) -> api.PullRequest | None:
        """A PR from this branch that a person closed without merging, if any."""
        owner = self.gh.repo.split("/")[0]
        path = f"repos/{{repo}}/pulls?state=closed&head={owner}:{branch}"
        return next(
            (pr for pr in api.items(self.gh, api.PullRequest, path) if not pr.merged_at), None
        )

    def branch_commits(self, base: str, branch: str) -> list[BranchCommit]:
        self.git(
            "fetch",
            "--quiet",
            self.remote,
            f"+refs/heads/{branch}:refs/llamapin/{branch}",
            f"+refs/heads/{base}:refs/llamapin/base",
        )
        log = self.git(
            "log",
            f"--format=%H%x00%an <%ae>%x00%s%x00%(trailers:key={TRAILER},valueonly)%x1e",
            f"refs/llamapin/base..refs/llamapin/{branch}",
        )
        return parse_log(log)


def forge_for(cfg: Config, root: Path, token: str | None) -> Forge:
    from llamapin import fetch

    repo = cfg.forge.repo
    if repo is None:
        url = git(["remote", "get-url", cfg.forge.remote], root, check=False)
        repo = repo_from_url(url)
    if repo is None:
        raise ConfigError(
            "no repository to open the pull request in",
            f"forge.repo is not set and remote '{cfg.forge.remote}' is not a GitHub URL",
            "Set forge.repo = 'owner/name' in the config",
        )
    api = GitHub(
        cfg.forge.api_url,
        repo,
        token,
        fetch.client(),
        token_env=cfg.forge.token_env,
        max_wait_s=cfg.upstream.max_wait_s,
    )
    return Forge(root, cfg, api)


def worktree_path(cfg: Config, root: Path, branch: str) -> Path:
    key = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir).expanduser() / "worktrees" / key / branch.replace("/", "-")


GateFn = Callable[[Config, Path, Pin, EnsureResult, EnsureResult], Verdict]
Git = Callable[..., str]


@dataclass(frozen=True)
class Made:
    """The signed-off commit a bump made on top of the base, and what the gate said."""

    head: str
    verdict: Verdict
    change: ClosureChange
    files: list[str]
    targets: list[TargetChange] = field(default_factory=list)

    def closure(self, cfg: Config) -> str:
        """The PR's shared-library section: the one closure change, or with targets every
        target's."""
        if not cfg.shared.targets:
            return closure_markdown(self.change, cfg)
        return targets_closure_markdown(self.targets)

    def rows(self, cfg: Config, old: Pin, new: Pin) -> list[AssetRow] | None:
        """The per-target asset table's rows (None without targets)."""
        return asset_rows(cfg, old, new) if cfg.shared.targets else None


def make_commit(
    up: Upstream,
    run: Git,
    root: Path,
    base_ref: str,
    new_pin: Pin,
    summary: Summary,
    gate: GateFn,
    say: Callable[[str], None],
) -> Made:
    """In a throwaway worktree at ``base_ref``: rewrite the pin and its locators, ensure the
    candidate and the baseline, gate them, and commit. This half runs upstream code, so it
    must never run in a process that holds a token that can write the repository."""
    cfg, pin = up.cfg, up.pin
    wt = worktree_path(cfg, root, BRANCH_PREFIX + new_pin.build)
    if wt.exists():
        run("worktree", "remove", "--force", str(wt), check=False)
        shutil.rmtree(wt, ignore_errors=True)
    run("worktree", "prune")
    wt.parent.mkdir(parents=True, exist_ok=True)
    run("worktree", "add", "--quiet", "--detach", str(wt), base_ref)
    try:
        write_lock(wt / cfg.lock, new_pin)
        changed = [cfg.lock, *write_locators(wt, cfg.locator_list(), new_pin)]
        cand, basel, change = ensure_pair(cfg, wt, root, pin, new_pin, say)
        verdict = gate(cfg, wt, new_pin, cand, basel)
        # Every other target after the gate: one that shares the gated target's bundle
        # directory replaces the engine the gate ran.
        targets = [TargetChange(cfg, change, gated=True)]
        for view in cfg.shared.views():
            if view.target is not None and view.target != cfg.target:
                targets.append(ensure_target(view, wt, root, pin, new_pin, say))
        run("add", "--", *changed, cwd=wt)
        ident = ["-c", f"user.name={cfg.forge.author_name}"]
        ident += ["-c", f"user.email={cfg.forge.author_email}"]
        run(
            *ident,
            "commit",
            "--quiet",
            "--signoff",
            "-m",
            commit_message(pin, new_pin, summary, verdict),
            cwd=wt,
        )
        head = run("rev-parse", "HEAD", cwd=wt).strip()
    finally:
        run("worktree", "remove", "--force", str(wt), check=False)
        shutil.rmtree(wt, ignore_errors=True)
    return Made(head, verdict, change, changed, targets)


def ensure_pair(
    view: Config, wt: Path, root: Path, pin: Pin, new_pin: Pin, say: Callable[[str], None]
) -> tuple[EnsureResult, EnsureResult, ClosureChange]:
    """Ensure one target's candidate (in the worktree) and baseline (in the checkout), and
    the change of its closure against its declared list."""
    of = f" for target {view.target}" if view.target else ""
    say(f"ensure the candidate {new_pin.build}{of}")
    cand = ensure(view, wt, new_pin, say=say)
    say(f"ensure the current pin {pin.build}{of} as the baseline")
    basel = ensure(view, root, pin, say=say)
    old, new = basel.manifest.closure["libs"], cand.manifest.closure["libs"]
    return cand, basel, closure_change(list(old), list(new), _declared(view, wt))


def ensure_target(
    view: Config, wt: Path, root: Path, pin: Pin, new_pin: Pin, say: Callable[[str], None]
) -> TargetChange:
    """One more target's ``ensure_pair``; a target this host cannot finish (a tool missing,
    a platform the command does not build) is reported as not ensured. A digest or
    provenance that does not match fails the bump."""
    try:
        change = ensure_pair(view, wt, root, pin, new_pin, say)[2]
    except IntegrityError:
        raise
    except LlamapinError as exc:
        say(f"target {view.target_name} not ensured on this host: {exc.line()}")
        return TargetChange(view, None, skipped=exc.line())
    return TargetChange(view, change)


@dataclass(frozen=True)
class Remote:
    """What the forge holds for a bump branch before anything is pushed."""

    existing_sha: str | None
    prs: list[api.PullRequest]
    mine: api.PullRequest | None
    declined: api.PullRequest | None = None
    foreign: tuple[BranchCommit, ...] = ()
    proposed_lock: str | None = None

    def facts(
        self, tag: str, branch: str, *, lock: str | None = None, gate: str | None = None
    ) -> BumpFacts:
        return BumpFacts(
            tag,
            "",
            branch,
            self.existing_sha is not None,
            self.foreign,
            _pr_fact(self.mine),
            _pr_fact(self.declined),
            self.proposed_lock,
            lock,
            gate,
        )


def _pr_fact(pr: api.PullRequest | None) -> PrFact | None:
    return None if pr is None else PrFact(pr.number, pr.html_url, pr.draft)


def result_of(d: BumpDecision) -> BumpResult:
    """The result of a decision that ends the run."""
    pr = d.pr
    if pr is None:
        return BumpResult(d.action, d.message)
    return BumpResult(d.action, d.message, pr.number, pr.url)


def read_remote(forge: Forge, base: str, branch: str) -> Remote:
    """The branch, its commits and lock, and the PRs, as they are now (reads only)."""
    existing_sha = forge.remote_sha(branch)
    strangers: list[BranchCommit] = []
    declined = proposed = None
    if existing_sha is not None:
        strangers = foreign(forge.branch_commits(base, branch))
        declined = forge.declined(branch)
        proposed = forge.git("show", f"refs/llamapin/{branch}:{forge.cfg.lock}", check=False)
    prs = forge.open_prs(base)
    mine = next((p for p in prs if p.head.ref == branch), None)
    return Remote(existing_sha, prs, mine, declined, tuple(strangers), proposed)


def remote_state(forge: Forge, base: str, branch: str, tag: str) -> Remote | BumpResult:
    """The branch and PRs as they are now, or the result that ends the run: a branch holding
    someone else's commits is an error; a PR a person declined is never reopened."""
    remote = read_remote(forge, base, branch)
    decision = decide_bump(remote.facts(tag, branch))
    return result_of(decision) if decision.final else remote


def up_to_date(forge: Forge, remote: Remote, branch: str, tag: str, lock: str) -> BumpResult | None:
    """The result when the open PR already proposes exactly this lock."""
    decision = decide_bump(remote.facts(tag, branch, lock=lock))
    return result_of(decision) if decision.final else None


@dataclass(frozen=True)
class Proposal:
    """Everything the PR says; the commit it points at is already made."""

    branch: str
    base: str
    head: str
    build: str
    title: str
    body: str
    outcome: str
    reasons: list[str]
    report: str | None = None  # the gate's Markdown report, posted as the PR's report comment


def push_and_propose(
    forge: Forge, remote: Remote, prop: Proposal, *, post_status: bool
) -> BumpResult:
    """Push the commit (with a lease on what the branch held), then open or update its PR,
    close the ones it supersedes, and post the commit status if asked. Runs no upstream code.
    The decision is taken once more on what was read: a final one pushes nothing."""
    cfg, branch = forge.cfg, prop.branch
    decision = decide_bump(remote.facts(prop.build, branch, gate=prop.outcome))
    if decision.final:
        return result_of(decision)
    lease = f"refs/heads/{branch}:{remote.existing_sha or ''}"
    forge.git(
        "push",
        "--quiet",
        f"--force-with-lease={lease}",
        forge.remote,
        f"{prop.head}:refs/heads/{branch}",
    )
    body = prop.body
    draft = prop.outcome != "pass"
    if decision.notice:
        body = (
            "> **The gate now fails for this update.** Mark this PR as a draft, or close it.\n\n"
            + body
        )
    if decision.pr is None:
        pr = api.post(
            forge.gh,
            api.PullRequest,
            "repos/{repo}/pulls",
            {
                "title": prop.title,
                "head": branch,
                "base": prop.base,
                "body": body,
                "draft": draft,
                "maintainer_can_modify": False,
            },
        )
        action = "opened"
    else:
        pr = api.patch(
            forge.gh,
            api.PullRequest,
            f"repos/{{repo}}/pulls/{decision.pr.number}",
            {"title": prop.title, "body": body},
        )
        action = "updated"
    number = pr.number
    if cfg.forge.labels:
        forge.gh.post(f"repos/{{repo}}/issues/{number}/labels", {"labels": cfg.forge.labels})
    if cfg.forge.reviewers:
        forge.gh.post(
            f"repos/{{repo}}/pulls/{number}/requested_reviewers",
            {"reviewers": cfg.forge.reviewers},
        )
    superseded = []
    for other in superseded_by(remote, branch):
        api.post(
            forge.gh,
            api.Comment,
            f"repos/{{repo}}/issues/{other}/comments",
            {"body": f"Superseded by #{number} ({prop.build}). Closed by llamapin."},
        )
        api.patch(forge.gh, api.PullRequest, f"repos/{{repo}}/pulls/{other}", {"state": "closed"})
        superseded.append(other)
    if post_status:
        api.post(
            forge.gh,
            api.Status,
            f"repos/{{repo}}/statuses/{prop.head}",
            {
                "state": "success" if prop.outcome == "pass" else "failure",
                "context": cfg.forge.status_context,
                "description": "; ".join([f"gate {prop.outcome}", *prop.reasons])[:140],
            },
        )
    warnings = []
    if prop.report is not None:
        author = pr.user.login if pr.user else None
        warning = post_report(forge.gh, number, prop.report, (compare_prefix(cfg),), author)
        warnings += [warning] if warning else []
    return BumpResult(
        action,
        f"{action} PR #{number} for {prop.build} (gate {prop.outcome})"
        + (" as a draft" if draft and action == "opened" else ""),
        number,
        pr.html_url,
        draft,
        superseded,
        prop.outcome,
        warnings=warnings,
    )


def superseded_by(remote: Remote, branch: str) -> list[int]:
    """The open bump PRs a PR from ``branch`` closes."""
    return [p.number for p in remote.prs if p.head.ref != branch]


def preview(remote: Remote, prop: Proposal, message: str) -> BumpResult:
    """``bump --dry-run``: what would be published, and nothing published."""
    decision = decide_bump(remote.facts(prop.build, prop.branch, gate=prop.outcome))
    if decision.final:
        return result_of(decision)
    if decision.pr is not None:
        would = f"update PR #{decision.pr.number} in place"
    elif decision.action == "draft":
        would = "open a draft PR"
    else:
        would = "open a PR"
    closes = superseded_by(remote, prop.branch)
    return BumpResult(
        "dry-run",
        f"dry run: would push {prop.head[:12]} to {prop.branch} and {would} for {prop.build} "
        f"(gate {prop.outcome})"
        + (f", closing #{', #'.join(map(str, closes))}" if closes else "")
        + "; nothing was pushed, opened or commented",
        None if decision.pr is None else decision.pr.number,
        None if decision.pr is None else decision.pr.url,
        decision.action == "draft",
        verdict=prop.outcome,
        preview=Preview(
            decision.action,
            prop.branch,
            prop.base,
            prop.head,
            message,
            prop.title,
            prop.body,
            closes,
        ),
    )


def preview_text(message: str, p: Preview) -> str:
    """A dry run, for a person: the result line, then the commit, branch and PR body."""
    commit = "\n".join(f"    {line}".rstrip() for line in p.commit_message.rstrip().splitlines())
    return "\n".join(
        [
            message,
            f"branch: {p.branch} (base {p.base})",
            f"commit: {p.commit}",
            commit,
            f"PR title: {p.title}",
            "PR body:",
            p.body,
        ]
    )


def check_to(up: Upstream, now: datetime, tag: str) -> Decision:
    """``bump --to``: the check's I/O around :func:`choose` for one chosen build."""
    cfg = up.cfg.upstream
    feed = up.feed
    if feed.tagged:
        up.check_pin_tag()
    build_number(tag)
    builds = feed.builds(up.pin.number)
    missing = {b.number: up.missing(b) for b in builds if b.tag == tag}
    screened = screen(builds, missing, now, cfg.cooldown_days)
    # A moved tag stops the bump when the candidate's pin is made, with both commits.
    return choose(up.pin, screened, tag, cfg.cooldown_days, up.relevance)


def run_bump(
    up: Upstream,
    forge: Forge,
    now: datetime,
    gate: GateFn,
    say: Callable[[str], None],
    *,
    post_status: bool = False,
    dry_run: bool = False,
    to: str | None = None,
) -> BumpResult:
    """The one-shot bump, for a trusted local run: prepare and publish in one process.
    ``dry_run`` stops before the first write to the forge; ``to`` proposes a chosen build."""
    cfg, root, pin = up.cfg, forge.root, up.pin
    decision = run_check(up, now) if to is None else check_to(up, now, to)
    if not decision.bump or decision.target is None:
        return result_of(decide_bump(BumpFacts(None, decision.reason)))
    target = decision.target
    branch = BRANCH_PREFIX + target.tag
    base = forge.base()
    remote = read_remote(forge, base, branch)
    new_pin, notes = up.candidate_pin(target)
    first = decide_bump(remote.facts(target.tag, branch, lock=lock_text(new_pin)))
    if first.final:
        return result_of(first)
    if first.action == "update":
        say(first.message)
    summary = summarize(up, new_pin, decision.relevance)
    forge.git("fetch", "--quiet", forge.remote, f"+refs/heads/{base}:refs/llamapin/base")
    made = make_commit(up, forge.git, root, "refs/llamapin/base", new_pin, summary, gate, say)
    body = pr_body(
        pin,
        new_pin,
        decision,
        summary,
        made.closure(cfg),
        made.verdict,
        notes,
        made.rows(cfg, pin, new_pin),
    )
    prop = Proposal(
        branch,
        base,
        made.head,
        new_pin.build,
        pr_title(pin, new_pin),
        body,
        made.verdict.outcome,
        list(made.verdict.reasons),
        report.markdown(made.verdict),
    )
    if dry_run:
        return preview(remote, prop, forge.git("log", "-1", "--format=%B", made.head))
    return push_and_propose(forge, remote, prop, post_status=post_status)


# --- the split bump: an unprivileged half that runs upstream code, a privileged half that --
# --- only verifies and publishes -----------------------------------------------------------

PLAN_FILE = "plan.json"
BUNDLE_FILE = "change.bundle"
PLAN_SCHEMA = 1
BUILD_PATTERN = r"b[0-9]{1,9}"
BRANCH_RE = re.compile(rf"llamapin/bump-({BUILD_PATTERN})")
SHA1_PATTERN = r"[0-9a-f]{40}"
MAX_PLAN_BYTES = 512 * 1024
MAX_BUNDLE_BYTES = 8 * 1024 * 1024
MAX_BODY_CHARS = 60_000  # GitHub refuses PR bodies over 65536 characters


class PlanModel(BaseModel):
    """plan.json: what the unprivileged job says it prepared. Untrusted: every field is
    checked here, and the commit it names is checked against the repository in publish."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, regex_engine="python-re")

    schema_: Literal[1] = Field(alias="schema")
    action: Literal["none", "prepared"]
    message: Annotated[str, StringConstraints(max_length=2000)]
    branch: Annotated[str, StringConstraints(pattern=rf"^{BRANCH_RE.pattern}\Z")] | None = None
    build: Annotated[str, StringConstraints(pattern=rf"^{BUILD_PATTERN}\Z")] | None = None
    base: Annotated[str, StringConstraints(pattern=rf"^{REF_PATTERN}\Z")] | None = None
    base_sha: Annotated[str, StringConstraints(pattern=rf"^{SHA1_PATTERN}\Z")] | None = None
    head_sha: Annotated[str, StringConstraints(pattern=rf"^{SHA1_PATTERN}\Z")] | None = None
    files: (
        Annotated[list[Annotated[str, StringConstraints(max_length=500)]], Field(max_length=64)]
        | None
    ) = None
    outcome: Literal["pass", "fail", "inconclusive"] | None = None
    reasons: (
        Annotated[list[Annotated[str, StringConstraints(max_length=2000)]], Field(max_length=50)]
        | None
    ) = None
    body: Annotated[str, StringConstraints(max_length=MAX_BODY_CHARS)] | None = None


@dataclass(frozen=True)
class Plan:
    """A validated plan of a prepared bump."""

    branch: str
    build: str
    base: str
    base_sha: str
    head_sha: str
    files: list[str]
    outcome: str
    reasons: list[str]
    body: str


def _refuse(why: str, detail: str = "") -> ForgeError:
    return ForgeError(
        "refusing to publish the prepared bump",
        why,
        "Publish only what 'llamapin bump --prepare' wrote for this repository; run the "
        "prepare job again",
        detail=detail,
    )


def _read_capped(path: Path, cap: int) -> bytes:
    """A regular file's bytes, refusing links, other file types and anything over ``cap``."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise _refuse(f"{path.name} is missing from the prepared change") from None
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(f"{path.name} is not a regular file")
    with path.open("rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise _refuse(f"{path.name} is over the {cap}-byte limit")
    return data


def read_plan(out_dir: Path) -> Plan | BumpResult:
    """The prepared plan, validated field by field; a plan of no bump is its result."""
    data = _read_capped(out_dir / PLAN_FILE, MAX_PLAN_BYTES)
    try:
        raw = json.loads(data.decode("utf-8"))
        model = PlanModel.model_validate(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(f"{PLAN_FILE} is not UTF-8 JSON ({type(exc).__name__})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top)"
        raise _refuse(f"{PLAN_FILE} field {where}: {first['msg']}") from None
    if model.action == "none":
        # The prepare job's log says why; its text is not repeated in the privileged job.
        return BumpResult("none", "nothing to bump: the prepare job found no build to adopt")
    values = (
        model.branch,
        model.build,
        model.base,
        model.base_sha,
        model.head_sha,
        model.files,
        model.outcome,
        model.reasons,
        model.body,
    )
    if any(v is None for v in values):
        raise _refuse(f"{PLAN_FILE} of a prepared bump lacks a field it needs")
    plan = Plan(*values)  # type: ignore[arg-type]
    if plan.branch != BRANCH_PREFIX + plan.build:
        raise _refuse(f"the plan names branch {plan.branch} for build {plan.build}")
    if "\x00" in plan.body:
        raise _refuse("the PR body holds a NUL character")
    return plan


def current_branch(root: Path) -> str:
    name = git(["symbolic-ref", "--quiet", "--short", "HEAD"], root, check=False).strip()
    if not name:
        raise ConfigError(
            "no base branch to prepare the bump on",
            "forge.base is not set and the checkout is not on a branch (detached HEAD)",
            "Set forge.base in the config, or check out the default branch",
        )
    return name


def prepare_bump(
    up: Upstream,
    root: Path,
    now: datetime,
    gate: GateFn,
    say: Callable[[str], None],
    out_dir: Path,
    *,
    to: str | None = None,
) -> BumpResult:
    """The unprivileged half: decide, make and gate the commit, and write it as a git bundle
    with a plan and the gate report into ``out_dir``. Holds no token; pushes nothing."""
    cfg, pin = up.cfg, up.pin
    out_dir.mkdir(parents=True, exist_ok=True)
    decision = run_check(up, now) if to is None else check_to(up, now, to)
    if not decision.bump or decision.target is None:
        result = BumpResult("none", f"nothing to bump: {decision.reason}")
        _write_json(
            out_dir / PLAN_FILE,
            {"schema": PLAN_SCHEMA, "action": "none", "message": result.message[:2000]},
        )
        return result

    def run(*args: str, cwd: Path | None = None, check: bool = True) -> str:
        return git(list(args), cwd or root, check=check)

    target = decision.target
    branch = BRANCH_PREFIX + target.tag
    base = cfg.forge.base or current_branch(root)
    tracking = f"refs/remotes/{cfg.forge.remote}/{base}"
    # Fresh when the remote answers without credentials; else what the checkout fetched.
    run("fetch", "--quiet", cfg.forge.remote, f"+refs/heads/{base}:{tracking}", check=False)
    base_sha = run("rev-parse", "--verify", "--quiet", f"{tracking}^{{commit}}", check=False)
    if not base_sha.strip():
        raise ForgeError(
            f"no {tracking} to prepare the bump on",
            f"the remote '{cfg.forge.remote}' did not answer and the checkout has no copy of "
            f"branch {base}",
            "Check out the repository with its branches (fetch-depth: 0), or set forge.base",
        )
    base_sha = base_sha.strip()
    new_pin, notes = up.candidate_pin(target)
    summary = summarize(up, new_pin, decision.relevance)
    made = make_commit(up, run, root, base_sha, new_pin, summary, gate, say)
    verdict = made.verdict
    body = pr_body(
        pin,
        new_pin,
        decision,
        summary,
        made.closure(cfg),
        verdict,
        notes,
        made.rows(cfg, pin, new_pin),
    )
    ref = f"refs/llamapin/prepared/{branch}"
    run("update-ref", ref, made.head)
    bundle = out_dir / BUNDLE_FILE
    bundle.unlink(missing_ok=True)
    run("bundle", "create", "--quiet", str(bundle), ref, f"^{base_sha}")
    run("update-ref", "-d", ref)
    for name, text in (
        ("gate.md", report.markdown(verdict)),
        ("gate.json", report.to_json(verdict)),
    ):
        (out_dir / name).write_text(text, encoding="utf-8")
    _write_json(
        out_dir / PLAN_FILE,
        {
            "schema": PLAN_SCHEMA,
            "action": "prepared",
            "message": f"prepared {new_pin.build} on {branch} (gate {verdict.outcome})",
            "branch": branch,
            "build": new_pin.build,
            "base": base,
            "base_sha": base_sha,
            "head_sha": made.head,
            "files": made.files,
            "outcome": verdict.outcome,
            "reasons": [r[:2000] for r in verdict.reasons[:50]],
            "body": body[:MAX_BODY_CHARS],
        },
    )
    return BumpResult(
        "prepared",
        f"prepared {new_pin.build} on {branch} (gate {verdict.outcome}) in {out_dir}: "
        f"publish it with 'llamapin bump --publish {out_dir}'",
        verdict=verdict.outcome,
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _import_bundle(forge: Forge, plan: Plan, bundle: Path) -> None:
    """Fetch the bundle's one commit into refs/llamapin/incoming, with git's object checks."""
    _read_capped(bundle, MAX_BUNDLE_BYTES)
    heads = forge.git("bundle", "list-heads", str(bundle), check=False).split()
    if heads != [plan.head_sha, f"refs/llamapin/prepared/{plan.branch}"]:
        raise _refuse(f"{BUNDLE_FILE} does not hold exactly the commit the plan names")
    forge.git(
        "-c",
        "fetch.fsckObjects=true",
        "fetch",
        "--quiet",
        "--no-tags",
        str(bundle),
        f"+{heads[1]}:refs/llamapin/incoming",
    )


def verify_prepared(forge: Forge, plan: Plan, out_dir: Path) -> tuple[Pin, Pin]:
    """Check the prepared commit against the repository, byte for byte: one commit on the
    base, touching only the lock and the locator files, holding exactly what llamapin writes
    for the pin in its lock. Returns (the base's pin, the proposed pin)."""
    cfg = forge.cfg
    forge.git("fetch", "--quiet", forge.remote, f"+refs/heads/{plan.base}:refs/llamapin/base")
    merge_base = forge.git("merge-base", plan.base_sha, "refs/llamapin/base", check=False)
    if merge_base.strip() != plan.base_sha:
        raise _refuse(f"the base {plan.base_sha[:12]} is not on branch {plan.base}")
    _import_bundle(forge, plan, out_dir / BUNDLE_FILE)
    head = plan.head_sha
    parents = forge.git("rev-list", "--parents", "-n", "1", head).split()
    if parents != [head, plan.base_sha]:
        raise _refuse(f"commit {head[:12]} is not one commit on top of {plan.base_sha[:12]}")
    allowed = {cfg.lock, *(loc.file for loc in cfg.locator_list())}
    changed = []
    for line in forge.git("diff-tree", "-r", "--no-renames", plan.base_sha, head).splitlines():
        meta, path = line.split("\t", 1)
        old_mode, new_mode, _, _, status = meta.lstrip(":").split()
        if path not in allowed:
            raise _refuse(f"the commit changes {path!r}, which is not the lock or a locator")
        if status != "M" or old_mode != new_mode or new_mode not in ("100644", "100755"):
            raise _refuse(f"the commit changes {path!r} in a way bump never does ({status})")
        changed.append(path)
    if sorted(changed) != sorted(plan.files) or cfg.lock not in changed:
        raise _refuse("the files the commit changes are not the ones the plan declares")
    old = _pin_at(forge, plan.base_sha)
    new = _pin_at(forge, head)
    if new.build != plan.build:
        raise _refuse(f"the commit's lock pins {new.build}, the plan says {plan.build}")
    _same_as_rewrite(forge, plan, new)
    message = forge.git("log", "-1", "--format=%s%n%(trailers:key=" + TRAILER + ",valueonly)", head)
    subject, _, trailer = message.partition("\n")
    if subject != pr_title(old, new) or trailer.strip() != new.build:
        raise _refuse("the commit's subject or trailer is not the one bump writes")
    return old, new


def _pin_at(forge: Forge, rev: str) -> Pin:
    text = forge.git("show", f"{rev}:{forge.cfg.lock}")
    try:
        return pin_from_dict(tomllib.loads(text), f"{forge.cfg.lock} at {rev[:12]}")
    except tomllib.TOMLDecodeError as exc:
        raise _refuse(f"{forge.cfg.lock} at {rev[:12]} is not TOML: {exc}") from None


def _same_as_rewrite(forge: Forge, plan: Plan, new: Pin) -> None:
    """Rewrite the base's lock and locators for ``new`` in a scratch worktree; the commit must
    hold exactly those bytes (so no code rides along inside a locator file)."""
    cfg = forge.cfg
    wt = worktree_path(cfg, forge.root, "publish-" + plan.branch)
    if wt.exists():
        forge.git("worktree", "remove", "--force", str(wt), check=False)
        shutil.rmtree(wt, ignore_errors=True)
    forge.git("worktree", "prune")
    wt.parent.mkdir(parents=True, exist_ok=True)
    forge.git("worktree", "add", "--quiet", "--detach", str(wt), plan.base_sha)
    try:
        write_lock(wt / cfg.lock, new)
        write_locators(wt, cfg.locator_list(), new)
        for path in plan.files:
            want = (wt / path).read_bytes()
            got = forge.git("show", f"{plan.head_sha}:{path}").encode("utf-8")
            if want != got:
                raise _refuse(f"{path} in the commit is not what llamapin writes for {new.build}")
    finally:
        forge.git("worktree", "remove", "--force", str(wt), check=False)
        shutil.rmtree(wt, ignore_errors=True)


def compare_prefix(cfg: Config) -> str:
    """The one link a PR body holds: upstream's compare view of the two builds."""
    return f"{cfg.upstream.html_url.rstrip('/')}/{cfg.upstream.repo}/compare/"


def publish_bump(
    forge: Forge, out_dir: Path, say: Callable[[str], None], *, post_status: bool = False
) -> BumpResult:
    """The privileged half: verify what prepare wrote, push it and open or update the PR.
    Runs no upstream code (no ensure, no gate, no engine)."""
    plan = read_plan(out_dir)
    if isinstance(plan, BumpResult):
        return plan
    base = forge.base()
    if plan.base != base:
        raise _refuse(f"the plan was prepared on {plan.base}, the PR base is {base}")
    remote = remote_state(forge, base, plan.branch, plan.build)
    if isinstance(remote, BumpResult):
        return remote
    try:
        old, new = verify_prepared(forge, plan, out_dir)
    except UnicodeDecodeError:
        raise _refuse("the prepared commit holds text that is not UTF-8") from None
    first = decide_bump(
        remote.facts(plan.build, plan.branch, lock=lock_text(new), gate=plan.outcome)
    )
    if first.final:
        return result_of(first)
    if first.action == "update":
        say(first.message)
    prop = Proposal(
        plan.branch,
        base,
        plan.head_sha,
        new.build,
        pr_title(old, new),
        # The body was written by the job that ran upstream code: made inert once more here.
        republished(plan.body, (compare_prefix(forge.cfg),)),
        plan.outcome,
        plan.reasons,
        # Written by the job that ran upstream code: made inert when it is posted.
        _prepared_report(out_dir),
    )
    return push_and_propose(forge, remote, prop, post_status=post_status)


MAX_REPORT_BYTES = 1024 * 1024


def _prepared_report(out_dir: Path) -> str:
    """gate.md as prepare wrote it (capped, never through a link); a short line instead when
    it is missing or unusable, so the comment still says where the report is."""
    try:
        return _read_capped(out_dir / "gate.md", MAX_REPORT_BYTES).decode("utf-8", "replace")
    except ForgeError as exc:
        return f"The gate report could not be read from the prepared change: {exc.why}."


def _declared(cfg: Config, root: Path) -> list[str] | None:
    """The declared library list, or None when there is none (or it cannot be read: the
    PR then lists the closure change without a remediation for the list)."""
    if not cfg.bundle.frameworks_file:
        return None
    try:
        return declared_libraries(root, cfg.bundle.frameworks_file, cfg.bundle.frameworks_path)
    except ConfigError:
        return None
