"""`llamapin bump`: turn a check's decision into a reviewed-by-a-human pull request.

Branch ``llamapin/bump-<tag>`` in a separate worktree (the user's checkout is
never touched), rewrite the pin and its locators, ensure the candidate, gate it
against the current pin, commit with a sign-off, push, then open or update the
PR and close the ones it supersedes.

Nothing here merges, approves, or enables auto-merge: the PR waits for a human.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from llamapin import report
from llamapin.config import Config
from llamapin.engine.bundle import declared_libraries, drift
from llamapin.engine.ensure import EnsureResult, ensure
from llamapin.errors import ConfigError, ForgeError
from llamapin.gate.verdict import Verdict
from llamapin.pin import Pin, lock_text, write_locators, write_lock
from llamapin.upstream.changes import sanitize
from llamapin.upstream.check import Decision, Summary, Upstream, run_check, summarize
from llamapin.upstream.github import GitHub, redact

BRANCH_PREFIX = "llamapin/bump-"
TRAILER = "Llamapin-Bump"


def git(args: list[str], cwd: Path, *, secret: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
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
    if not change.added and not change.removed:
        lines.append("The shared-library closure is unchanged: nothing to re-bundle or re-sign.")
    for name in change.added:
        lines.append(f"- new library: `{name}`")
    for name in change.removed:
        lines.append(f"- library no longer needed: `{name}`")
    where = cfg.bundle.frameworks_file
    if where and (change.declared_missing or change.declared_extra):
        lines.append("")
        lines.append(f"**Remediation**: in `{where}`, `{cfg.bundle.frameworks_path}`:")
        lines += [f"- add `{n}`" for n in change.declared_missing]
        lines += [f"- remove `{n}`" for n in change.declared_extra]
        lines.append("then rebuild and re-sign the app bundle.")
    elif change.added or change.removed:
        lines.append("")
        lines.append(
            "**Remediation**: bundle and sign exactly the libraries listed in the new "
            "manifest (`.llamapin/engine/llamapin-manifest.json`)."
        )
    return "\n".join(lines)


def commits_markdown(summary: Summary) -> str:
    lines = [
        f"[{summary.total_commits} upstream commits]({summary.compare_url})",
        "",
    ]
    if summary.added is None:
        lines.append("**New model architectures**: unknown (no source of one build on the index)")
    else:
        added = ", ".join(f"`{sanitize(a)}`" for a in summary.added) or "none"
        lines.append(f"**New model architectures**: {added}")
        if summary.removed:
            removed = ", ".join(f"`{sanitize(a)}`" for a in summary.removed)
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
) -> str:
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
        "### Assets (sha256, verified on download)",
        "",
        "| key | file | size | sha256 |",
        "|---|---|---|---|",
    ]
    for key, asset in sorted(new.assets.items()):
        head.append(f"| {key} | `{asset.name}` | {asset.size or ''} | `{asset.sha256}` |")
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
        return str(self.gh.get("repos/{repo}")["default_branch"])

    def remote_sha(self, branch: str) -> str | None:
        out = self.git("ls-remote", "--heads", self.remote, f"refs/heads/{branch}")
        return out.split()[0] if out.strip() else None

    def open_prs(self, base: str) -> list[dict[str, Any]]:
        return [
            pr
            for pr in self.gh.paginate(f"repos/{{repo}}/pulls?state=open&base={base}")
            if str(pr["head"]["ref"]).startswith(BRANCH_PREFIX)
        ]

    def declined(self, branch: str) -> dict[str, Any] | None:
        """A PR from this branch that a person closed without merging, if any."""
        owner = self.gh.repo.split("/")[0]
        closed = self.gh.paginate(f"repos/{{repo}}/pulls?state=closed&head={owner}:{branch}")
        return next((dict(pr) for pr in closed if not pr.get("merged_at")), None)

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
    return Forge(root, cfg, GitHub(cfg.forge.api_url, repo, token, fetch.client()))


def worktree_path(cfg: Config, root: Path, branch: str) -> Path:
    key = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir).expanduser() / "worktrees" / key / branch.replace("/", "-")


GateFn = Callable[[Config, Path, Pin, EnsureResult, EnsureResult], Verdict]


def run_bump(
    up: Upstream,
    forge: Forge,
    now: datetime,
    gate: GateFn,
    say: Callable[[str], None],
    *,
    post_status: bool = False,
) -> BumpResult:
    cfg, root, pin = up.cfg, forge.root, up.pin
    decision = run_check(up, now)
    if not decision.bump or decision.target is None:
        return BumpResult("none", f"nothing to bump: {decision.reason}")
    target = decision.target
    branch = BRANCH_PREFIX + target.tag
    base = forge.base()
    existing_sha = forge.remote_sha(branch)
    if existing_sha is not None:
        strangers = foreign(forge.branch_commits(base, branch))
        if strangers:
            first = strangers[0]
            raise ForgeError(
                f"branch {branch} has commits llamapin did not make",
                f"{len(strangers)} foreign commit(s), e.g. {first.sha[:12]} by {first.author}: "
                f"{first.subject!r}",
                "llamapin will not overwrite someone's work: merge or move those commits, "
                "or delete the branch, then run bump again",
            )
    prs = forge.open_prs(base)
    mine = next((p for p in prs if p["head"]["ref"] == branch), None)
    if mine is None and existing_sha is not None:
        closed = forge.declined(branch)
        if closed is not None:
            return BumpResult(
                "declined",
                f"PR #{closed['number']} for {target.tag} was closed without merging: llamapin "
                f"will not reopen it. A newer eligible build gets its own PR; to propose "
                f"{target.tag} again, delete the branch {branch}",
                int(closed["number"]),
                str(closed["html_url"]),
            )
    new_pin, notes = up.candidate_pin(target)
    if mine is not None and existing_sha is not None:
        proposed = forge.git("show", f"refs/llamapin/{branch}:{cfg.lock}", check=False)
        if proposed == lock_text(new_pin):
            return BumpResult(
                "up-to-date",
                f"PR #{mine['number']} already proposes {target.tag}; nothing changed",
                int(mine["number"]),
                str(mine["html_url"]),
            )
        say(f"PR #{mine['number']} proposes an older pin of {target.tag}: updating it in place")
    summary = summarize(up, new_pin, decision.relevance)
    wt = worktree_path(cfg, root, branch)
    forge.git("fetch", "--quiet", forge.remote, f"+refs/heads/{base}:refs/llamapin/base")
    if wt.exists():
        forge.git("worktree", "remove", "--force", str(wt), check=False)
        shutil.rmtree(wt, ignore_errors=True)
    forge.git("worktree", "prune")
    wt.parent.mkdir(parents=True, exist_ok=True)
    forge.git("worktree", "add", "--quiet", "--detach", str(wt), "refs/llamapin/base")
    try:
        write_lock(wt / cfg.lock, new_pin)
        changed = [cfg.lock, *write_locators(wt, cfg.locator_list(), new_pin)]
        say(f"ensure the candidate {new_pin.build}")
        cand = ensure(cfg, wt, new_pin, say=say)
        say(f"ensure the current pin {pin.build} as the baseline")
        basel = ensure(cfg, root, pin, say=say)
        declared = _declared(cfg, wt)
        change = closure_change(
            list(basel.manifest.closure["libs"]), list(cand.manifest.closure["libs"]), declared
        )
        verdict = gate(cfg, wt, new_pin, cand, basel)
        forge.git("add", "--", *changed, cwd=wt)
        ident = ["-c", f"user.name={cfg.forge.author_name}"]
        ident += ["-c", f"user.email={cfg.forge.author_email}"]
        forge.git(
            *ident,
            "commit",
            "--quiet",
            "--signoff",
            "-m",
            commit_message(pin, new_pin, summary, verdict),
            cwd=wt,
        )
        head = forge.git("rev-parse", "HEAD", cwd=wt).strip()
        lease = f"refs/heads/{branch}:{existing_sha or ''}"
        forge.git(
            "push",
            "--quiet",
            f"--force-with-lease={lease}",
            forge.remote,
            f"HEAD:refs/heads/{branch}",
            cwd=wt,
        )
    finally:
        forge.git("worktree", "remove", "--force", str(wt), check=False)
        shutil.rmtree(wt, ignore_errors=True)
    body = pr_body(pin, new_pin, decision, summary, closure_markdown(change, cfg), verdict, notes)
    draft = verdict.outcome != "pass"
    if draft and mine is not None and not mine.get("draft"):
        body = (
            "> **The gate now fails for this update.** Mark this PR as a draft, or close it.\n\n"
            + body
        )
    title = pr_title(pin, new_pin)
    if mine is None:
        pr = forge.gh.post(
            "repos/{repo}/pulls",
            {
                "title": title,
                "head": branch,
                "base": base,
                "body": body,
                "draft": draft,
                "maintainer_can_modify": False,
            },
        )
        action = "opened"
    else:
        pr = forge.gh.patch(
            f"repos/{{repo}}/pulls/{mine['number']}", {"title": title, "body": body}
        )
        action = "updated"
    number = int(pr["number"])
    if cfg.forge.labels:
        forge.gh.post(f"repos/{{repo}}/issues/{number}/labels", {"labels": cfg.forge.labels})
    if cfg.forge.reviewers:
        forge.gh.post(
            f"repos/{{repo}}/pulls/{number}/requested_reviewers",
            {"reviewers": cfg.forge.reviewers},
        )
    superseded = []
    for other in prs:
        if other["head"]["ref"] == branch:
            continue
        forge.gh.post(
            f"repos/{{repo}}/issues/{other['number']}/comments",
            {"body": f"Superseded by #{number} ({new_pin.build}). Closed by llamapin."},
        )
        forge.gh.patch(f"repos/{{repo}}/pulls/{other['number']}", {"state": "closed"})
        superseded.append(int(other["number"]))
    if post_status:
        forge.gh.post(
            f"repos/{{repo}}/statuses/{head}",
            {
                "state": "success" if verdict.outcome == "pass" else "failure",
                "context": cfg.forge.status_context,
                "description": "; ".join([f"gate {verdict.outcome}", *verdict.reasons])[:140],
            },
        )
    return BumpResult(
        action,
        f"{action} PR #{number} for {new_pin.build} (gate {verdict.outcome})"
        + (" as a draft" if draft and action == "opened" else ""),
        number,
        str(pr["html_url"]),
        draft,
        superseded,
        verdict.outcome,
    )


def _declared(cfg: Config, root: Path) -> list[str] | None:
    """The declared library list, or None when there is none (or it cannot be read: the
    PR then lists the closure change without a remediation for the list)."""
    if not cfg.bundle.frameworks_file:
        return None
    try:
        return declared_libraries(root, cfg.bundle.frameworks_file, cfg.bundle.frameworks_path)
    except ConfigError:
        return None
