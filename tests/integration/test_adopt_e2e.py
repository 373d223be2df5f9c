"""Adoption end to end, with nothing but what docs/adopting.md says: a fresh Tauri-shaped
repository runs ``llamapin init --install <wheel>``, ``llamapin lock b10068 --write`` and
commits; then the generated workflows' ``run:`` steps are run in order with bash, as the
runner would, each exactly once, and every one must succeed on the first try.

Real: this checkout built as a wheel and pip-installed into a fresh virtual environment (the
workflow's own install step), the package index (the wheel's dependencies, the engine
wheel's hashes), the b10068 engine and the gate model from the cache, git with a local bare
repository as origin. GitHub is the local fake (tags and releases for ``lock`` and ``check``,
the app's repository for ``bump``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with gguf; no stubs

from llamapin.pin import read_lock
from llamapin.workflows import BUMP_PATH, GATE_PATH
from tests.conftest import COMMIT_10068, SKULK
from tests.fakes.github import FakeGitHub
from tests.gitremote import git, publish
from tests.integration.test_upstream import (
    APP,
    LLAMA,
    PUBLISHED,
    when,
    writes,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "ghs_e2efaketoken000000000000000000000000"  # noqa: S105  # the fake's
NETWORK = re.compile(r"(?i)proxy|ca_bundle|ca_certs|^ssl_cert_|^pip_cert$")
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
# What the b10068 linux-x64 wheel's llama-server really loads (its closure), and the dylibs a
# Tauri app lists for its Mac build in the same list: drift compares only like with like.
LINUX_LIBS = [
    "libggml-base.so.0",
    "libggml-cpu.so.0",
    "libggml-rpc.so.0",
    "libggml-vulkan.so.0",
    "libggml.so.0",
    "libllama-common.so.0",
    "libllama-server-impl.so",
    "libllama.so.0",
    "libmtmd.so.0",
    "libvulkan.so.1",
]
MAC_LIBS = ["libggml-base.0.dylib", "libggml.0.dylib", "libllama.0.dylib"]
ENGINE_TS = (
    "// Fetched and bundled by the app's own script; llamapin keeps these in step with the lock.\n"
    "export const LLAMA_CPP_TAG = 'b9000';\n"
    f"export const LLAMA_CPP_SHA256 = '{'0' * 64}';\n"
)


def shell(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert res.returncode == 0, f"{cmd}: {res.stdout[-3000:]}{res.stderr[-3000:]}"
    return res.stdout


def llamapin(root: Path, *args: str) -> str:
    """A documented command, run as the user runs it (in the project, a new process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "PYTHONPATH")}
    return shell([sys.executable, "-m", "llamapin", *args], root, env)


def tauri_app(tmp_path: Path, github: FakeGitHub) -> tuple[Path, Path]:
    """The app before adoption, on main, pushed to its (bare, local) origin."""
    bare = tmp_path / "remote.git"
    shell(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], tmp_path)
    root = tmp_path / "app"
    (root / "src-tauri").mkdir(parents=True)
    (root / "scripts").mkdir()
    (root / "package.json").write_text(
        json.dumps({"name": "app", "private": True, "scripts": {"tauri": "tauri"}}, indent=2)
    )
    conf = {
        "productName": "app",
        "identifier": "com.acme.app",
        "bundle": {"macOS": {"frameworks": MAC_LIBS + LINUX_LIBS}},
    }
    (root / "src-tauri" / "tauri.conf.json").write_text(json.dumps(conf, indent=2))
    (root / "scripts" / "ensure-llama-server.ts").write_text(ENGINE_TS)
    (root / ".gitignore").write_text("node_modules/\n.llamapin/\n")
    publish(root, bare, github, APP)
    return root, bare


def adopt(root: Path, github: FakeGitHub, wheel: Path) -> None:
    """docs/adopting.md, step by step: the config, init, lock --write, commit."""
    git(root, "checkout", "--quiet", "-b", "adopt-llamapin")
    (root / "dist").mkdir()
    shell(["cp", str(wheel), str(root / "dist")], root)
    (root / "llamapin.toml").write_text(
        "[bundle]\n"
        'frameworks_file = "src-tauri/tauri.conf.json"\n'
        'frameworks_path = "bundle.macOS.frameworks"\n\n'
        "[upstream]  # GitHub Enterprise-style: where llama.cpp's tags and releases are read\n"
        f'api_url = "{github.api}"\nhtml_url = "{github.url}"\n\n'
        f'[forge]\napi_url = "{github.api}"\nrepo = "{APP}"\n\n'
        "[[locators]]\n"
        'file = "scripts/ensure-llama-server.ts"\nfield = "build"\n'
        "regex = \"LLAMA_CPP_TAG = '(?P<value>b\\\\d+)'\"\n\n"
        "[[locators]]\n"
        'file = "scripts/ensure-llama-server.ts"\nfield = "assets.wheel-linux-x64.sha256"\n'
        "regex = \"LLAMA_CPP_SHA256 = '(?P<value>[0-9a-f]{64})'\"\n"
    )
    said = llamapin(root, "init", "--install", f"dist/{wheel.name}")
    assert (root / GATE_PATH).is_file() and (root / BUMP_PATH).is_file(), said
    said = llamapin(root, "lock", "b10068", "--write")
    assert said.startswith(f"wrote llamapin.lock: b10068 at commit {COMMIT_10068}"), said
    pin = read_lock(root / "llamapin.lock")
    assert pin.assets["wheel-linux-x64"].sha256 == SKULK[10068]
    ts = (root / "scripts" / "ensure-llama-server.ts").read_text()
    assert "LLAMA_CPP_TAG = 'b10068'" in ts and f"LLAMA_CPP_SHA256 = '{SKULK[10068]}'" in ts
    git(root, "add", "llamapin.lock", "llamapin.toml", ".github/workflows", "scripts", "dist")
    git(root, "commit", "--quiet", "-m", "Pin llama.cpp b10068 with llamapin")
    assert git(root, "status", "--porcelain") == ""


def substitute(text: str, exprs: dict[str, str], where: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) not in exprs:
            pytest.fail(f"{where}: ${{{{ {m.group(1)} }}}} is an expression this run does not set")
        return exprs[m.group(1)]

    return EXPR.sub(one, text)


def condition(cond: str | None, exprs: dict[str, str], where: str) -> bool:
    """An ``if:``: always(), or ``NAME == 'literal'`` over the values this run sets."""
    if cond is None or cond == "always()":
        return True
    m = re.fullmatch(r"([\w.-]+) == '([^']*)'", cond.strip())
    if m is None or m.group(1) not in exprs:
        pytest.fail(f"{where}: cannot evaluate if: {cond}")
    return exprs[m.group(1)] == m.group(2)


def run_job(
    job: dict[str, Any], exprs: dict[str, str], base: dict[str, str], cwd: Path, name: str
) -> dict[str, str]:
    """The job's steps in order as the runner runs them: ``uses:`` skipped (noted), each
    ``run:`` with bash -eo pipefail and the job's and step's env; each must exit 0 once.
    Returns each run step's name and what it printed (stdout)."""
    ran: dict[str, str] = {}
    assert condition(job.get("if"), exprs, name)
    job_env = {k: substitute(str(v), exprs, name) for k, v in job.get("env", {}).items()}
    for i, step in enumerate(job["steps"]):
        where = f"{name} step {i} ({step.get('name', step.get('uses'))})"
        if "uses" in step:
            print(f"skipped {where}: uses {step['uses']}")
            continue
        scope = {**exprs, **{f"env.{k}": v for k, v in job_env.items()}}
        if not condition(step.get("if"), scope, where):
            print(f"skipped {where}: if: {step['if']} is false")
            continue
        env = {**base, **job_env}
        env.update({k: substitute(str(v), scope, where) for k, v in step.get("env", {}).items()})
        script = substitute(step["run"], scope, where)
        started = time.monotonic()
        res = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        print(f"ran {where} in {time.monotonic() - started:.0f} s: exit {res.returncode}")
        assert res.returncode == 0, f"{where} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
        ran[step.get("name", "")] = res.stdout
    return ran


def runner_env(tmp_path: Path, venv: Path, temp: Path) -> dict[str, str]:
    """A runner's environment: setup-python's interpreter first on PATH (the fresh venv),
    no PYTHONPATH, no token but those the workflow passes, the user's cache under HOME."""
    own = {str(REPO / ".venv" / "bin"), str(Path(sys.executable).parent)}
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p not in own]
    home = Path.home()
    network = {k: v for k, v in os.environ.items() if NETWORK.search(k)}  # the host's proxy/CA
    return {
        **network,
        "PATH": os.pathsep.join([str(venv / "bin"), *path]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "RUNNER_TEMP": str(temp),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "PIP_CACHE_DIR": str(home / ".cache" / "pip"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def fresh_venv(path: Path) -> Path:
    shell([sys.executable, "-m", "venv", str(path)], path.parent)
    return path


def adopted(tmp_path: Path, github: FakeGitHub) -> tuple[Path, Path]:
    """The app after following the docs: a fresh repository, adopted on a branch."""
    github.repo(LLAMA).tags["b10068"] = {"type": "commit", "sha": COMMIT_10068}
    github.add_release(LLAMA, "b10068", COMMIT_10068, when(PUBLISHED[10068]))
    root, bare = tauri_app(tmp_path, github)
    wheels = tmp_path / "wheels"
    shell([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), "."], REPO)
    (wheel,) = wheels.glob("llamapin-*.whl")
    adopt(root, github, wheel)
    return root, bare


@pytest.mark.engine
@pytest.mark.skipif(sys.platform != "linux", reason="the default pin is linux-x64's wheel")
def test_adopt_from_the_docs_and_the_first_prs_gate_is_green(
    tmp_path: Path, github: FakeGitHub
) -> None:
    started = time.monotonic()
    root, _ = adopted(tmp_path, github)
    gate = yaml.safe_load((root / GATE_PATH).read_text())
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    exprs = {  # the adoption's pull request into main
        "github.event_name": "pull_request",
        "github.base_ref": "main",
        "github.ref": "refs/pull/1/merge",
        "runner.temp": str(temp),
    }
    base = runner_env(tmp_path, fresh_venv(tmp_path / "gate-venv"), temp)
    ran = run_job(gate["jobs"]["engine-gate"], exprs, base, root, "engine-gate")
    assert list(ran) == [
        "Install llamapin",
        "Baseline pin (the target branch's llamapin.lock)",
        "Ensure the pinned engine (fetch, verify, prune, relink, sign)",
        "Check pin copies and the declared library list",
        "Gate",
    ]
    which = shell(["bash", "-c", "command -v llamapin"], root, base).strip()
    assert which == str(tmp_path / "gate-venv" / "bin" / "llamapin")  # the workflow's install
    assert not (temp / "baseline.lock").exists()  # main has no pin yet: nothing to compare
    verdict = json.loads((root / "reports" / "gate.json").read_text())
    assert verdict["outcome"] == "pass", verdict["reasons"]
    assert verdict["pin"].startswith("b10068")
    assert (root / "reports" / "gate.md").read_text().startswith("## llamapin gate: ✅ PASS")
    checked = ran["Check pin copies and the declared library list"].splitlines()
    assert checked == [
        "ok: 2 locator(s) match b10068",
        "not compared: 3 listed file(s) of other platforms",  # the Mac build's dylibs
        "ok: 10 listed libraries match the closure",
    ]
    assert (root / "reports" / "gate.xml").is_file()
    manifest = json.loads((root / ".llamapin" / "engine" / "llamapin-manifest.json").read_text())
    assert sorted(manifest["closure"]["libs"]) == LINUX_LIBS  # what drift compared, and matched
    print(f"adoption and the gate workflow: {time.monotonic() - started:.0f} s")


@pytest.mark.skipif(sys.platform != "linux", reason="the default pin is linux-x64's wheel")
def test_adopt_from_the_docs_and_the_bump_workflow_runs(tmp_path: Path, github: FakeGitHub) -> None:
    """After the adoption PR is merged, the scheduled bump: prepare, then publish, each on a
    fresh runner (a new clone of main, a new venv). b10068 is upstream's newest build, so
    nothing is proposed, and nothing is written to GitHub or the remote."""
    started = time.monotonic()
    root, bare = adopted(tmp_path, github)
    git(root, "push", "--quiet", "origin", "adopt-llamapin:main")
    bump = yaml.safe_load((root / BUMP_PATH).read_text())
    temp = tmp_path / "runner-temp"  # one directory: the artifact prepare uploads, publish reads
    temp.mkdir()
    exprs = {
        "github.token": TOKEN,
        "github.repository": APP,
        "github.event_name": "schedule",
        "runner.temp": str(temp),
        "secrets.LLAMAPIN_APP_ID != ''": "false",
        "steps.app-token.outputs.token || secrets.LLAMAPIN_BUMP_TOKEN || github.token": TOKEN,
        "steps.app-token.outputs.token == '' && secrets.LLAMAPIN_BUMP_TOKEN == ''": "true",
    }
    before = git(bare, "for-each-ref")
    said: dict[str, str] = {}
    for job in ("prepare", "publish"):
        checkout = tmp_path / f"{job}-checkout"
        shell(["git", "clone", "--quiet", "-b", "main", str(bare), str(checkout)], tmp_path)
        env = runner_env(tmp_path, fresh_venv(tmp_path / f"{job}-venv"), temp)
        ran = run_job(bump["jobs"][job], exprs, env, checkout, job)
        names = list(ran)
        assert names[0] == "Install llamapin", names
        assert names[-1].startswith("Check upstream" if job == "prepare" else "Verify the prepared")
        said[job] = ran[names[-1]]
    assert "no upstream build is newer than b10068" in said["prepare"]
    assert said["publish"].strip() == "nothing to bump: the prepare job found no build to adopt"
    plan = json.loads((temp / "llamapin-bump" / "plan.json").read_text())
    assert plan["action"] == "none"  # b10068 is the newest build upstream: nothing to propose
    assert [c.line for c in github.calls if "/releases" in c.path]  # check read upstream
    assert writes(github) == [] and git(bare, "for-each-ref") == before
    assert github.repos[APP].pulls == {}
    print(f"adoption and the bump workflow: {time.monotonic() - started:.0f} s")
