"""Adoption: `init` writes only an install step that resolves (the running version on the
configured index, --install, or this project's composite action), and action.yml installs
llamapin from its own checkout, runs a command without shell evaluation, and writes the job
summary. Real local index, real pip, real bash running the action's own scripts."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with gguf; no stubs

from llamapin import __version__
from llamapin.fetch import normalize
from llamapin.workflows import (
    BUMP_PATH,
    GATE_PATH,
    default_install,
    install_step,
    version_on_index,
)
from tests.integration.test_init import actionlint, lint, zizmor

__all__ = ["actionlint"]  # the session fixture, imported to be shared

REPO = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
JSON = "application/vnd.pypi.simple.v1+json"


class Index(http.server.BaseHTTPRequestHandler):
    """A PEP 691 index that lists what ``files`` holds for /simple/llamapin/ (404 if None)."""

    files: list[str] | None = None

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/simple/llamapin" or self.files is None:
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps(
            {
                "meta": {"api-version": "1.1"},
                "name": "llamapin",
                "files": [
                    {"filename": f, "url": f"/files/{f}", "hashes": {"sha256": "a" * 64}}
                    for f in self.files
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", JSON)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def index() -> Iterator[tuple[str, type[Index]]]:
    handler = type("Handler", (Index,), {"files": None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", handler
    finally:
        server.shutdown()
        server.server_close()


def project(tmp_path: Path, index_url: str, extra: str = "") -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "llamapin.toml").write_text(f'[engine]\nindex_url = "{index_url}"\n{extra}')
    return tmp_path


def steps(root: Path, rel: str) -> list[dict[str, Any]]:
    data = yaml.safe_load((root / rel).read_text())
    return [s for job in data["jobs"].values() for s in job["steps"]]


def test_init_uses_the_version_the_index_serves(
    tmp_path: Path, run_cli: Any, index: tuple[str, type[Index]]
) -> None:
    url, handler = index
    handler.files = [f"llamapin-{__version__}-py3-none-any.whl", "llamapin-0.0.9.tar.gz"]
    root = project(tmp_path, url)
    res = run_cli("--root", str(root), "init")
    assert res.code == 0, res.err
    for rel in (GATE_PATH, BUMP_PATH):
        installs = [s for s in steps(root, rel) if s.get("name") == "Install llamapin"]
        assert installs
        for s in installs:
            assert s["env"]["LLAMAPIN_INSTALL"] == f"llamapin=={__version__}"


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (["llamapin-0.0.9-py3-none-any.whl", f"llamapin-{__version__}1.tar.gz"], "has no llamapin"),
        (None, "has no llamapin at all"),
    ],
)
def test_init_refuses_an_install_that_would_fail(
    tmp_path: Path,
    run_cli: Any,
    index: tuple[str, type[Index]],
    files: list[str] | None,
    says: str,
) -> None:
    url, handler = index
    handler.files = files
    root = project(tmp_path, url)
    res = run_cli("--root", str(root), "init")
    assert res.code == 2
    first = res.err.splitlines()[0]
    assert first.startswith("error: cannot write an install step that works")
    assert says in first and "--install" in first and "--action" in first
    assert not (root / ".github").exists()  # nothing written


def test_init_with_the_action_lints_clean(
    tmp_path: Path, run_cli: Any, index: tuple[str, type[Index]], actionlint: Path
) -> None:
    url, _ = index  # the index is never asked: the action installs its own checkout
    root = project(tmp_path, url, '[forge]\nrepo = "my-org/my-app"\n')
    res = run_cli("--root", str(root), "init", "--action", f"my-org/llamapin@{SHA}")
    assert res.code == 0, res.err
    for rel in (GATE_PATH, BUMP_PATH):
        installs = [s for s in steps(root, rel) if s.get("name") == "Install llamapin"]
        assert installs and all(s["uses"] == f"my-org/llamapin@{SHA}" for s in installs)
        assert all("install" not in s["with"] for s in installs)
        assert lint(root / rel, actionlint).returncode == 0
        found = zizmor(root / rel)
        assert found.returncode == 0, found.stdout
    bump = yaml.safe_load((root / BUMP_PATH).read_text())
    assert bump["jobs"]["prepare"]["if"] == "github.repository == 'my-org/my-app'"


def test_init_without_a_repository_guards_forks(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path, "http://127.0.0.1:9/simple")
    assert run_cli("--root", str(root), "init", "--install", "llamapin==1.2.3").code == 0
    bump = yaml.safe_load((root / BUMP_PATH).read_text())
    assert bump["jobs"]["prepare"]["if"] == "github.event.repository.fork != true"


@pytest.mark.parametrize(
    "action",
    [
        "my-org/llamapin@v1",  # a tag can be moved
        f"my-org/llamapin@{SHA[:39]}",
        f"my-org/llamapin@{SHA}\n  run: curl evil",
        f"../llamapin@{SHA}",
        f"my-org/llamapin@{SHA.upper()}",
    ],
)
def test_init_refuses_an_unpinned_or_odd_action(tmp_path: Path, run_cli: Any, action: str) -> None:
    root = project(tmp_path, "http://127.0.0.1:9/simple")
    res = run_cli("--root", str(root), "init", "--action", action)
    assert res.code == 2
    assert res.err.startswith("error: bad --action value")
    assert not (root / ".github").exists()


def test_init_refuses_a_bad_forge_repo(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path, "http://127.0.0.1:9/simple", '[forge]\nrepo = "a\' || true"\n')
    res = run_cli("--root", str(root), "init", "--install", "llamapin==1.2.3")
    assert res.code == 2
    assert "bad repository name" in res.err.splitlines()[0]


def test_the_pure_install_rules() -> None:
    assert version_on_index(["llamapin-1.0-py3-none-any.whl"], "1.0")
    assert version_on_index(["llamapin-1.0.tar.gz"], "1.0")
    assert not version_on_index(["llamapin-1.0.1.tar.gz", "llamapin-1.01-x.whl"], "1.0")
    assert default_install([f"llamapin-{__version__}.tar.gz"], "u") == f"llamapin=={__version__}"
    with_install = install_step("llamapin==1.2.3", f"o/llamapin@{SHA}")
    assert 'install: "llamapin==1.2.3"' in with_install
    with pytest.raises(ValueError, match="needs an install spec"):
        install_step(None, None)


# --- action.yml, run for real ----------------------------------------------------------------


def action_steps() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((REPO / "action.yml").read_text())
    assert data["runs"]["using"] == "composite"
    return {s["name"]: s for s in data["runs"]["steps"]}


def run_step(
    step: dict[str, Any], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """A composite step's script as the runner runs it (bash, its env: values set)."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_action_passes_zizmor() -> None:
    found = zizmor(REPO / "action.yml")
    assert found.returncode == 0, found.stdout + found.stderr


def test_action_runs_the_command_without_evaluating_it(tmp_path: Path) -> None:
    step = action_steps()["Run llamapin"]
    assert set(step["env"]) == {"LLAMAPIN_ARGS", "LLAMAPIN_PYTHON"}
    hostile = "$(touch pwned) `touch pwned2` ; touch pwned3 * --version"
    res = run_step(step, {"LLAMAPIN_ARGS": hostile, "LLAMAPIN_PYTHON": sys.executable}, tmp_path)
    assert res.returncode != 0  # llamapin was handed the words literally and refused them
    assert "No such command '$(touch'" in res.stderr
    assert not list(tmp_path.iterdir())  # nothing ran, nothing globbed into a file
    ok = run_step(step, {"LLAMAPIN_ARGS": "--version", "LLAMAPIN_PYTHON": sys.executable}, tmp_path)
    assert ok.returncode == 0 and __version__ in ok.stdout


def test_action_summary_appends_only_an_existing_file(tmp_path: Path) -> None:
    step = action_steps()["Job summary"]
    summary = tmp_path / "summary.md"
    (tmp_path / "gate.md").write_text("## gate\nPASS\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert run_step(step, {**env, "LLAMAPIN_SUMMARY": "gate.md"}, tmp_path).returncode == 0
    assert run_step(step, {**env, "LLAMAPIN_SUMMARY": "missing.md"}, tmp_path).returncode == 0
    assert run_step(step, {**env, "LLAMAPIN_SUMMARY": ""}, tmp_path).returncode == 0
    assert summary.read_text() == "## gate\nPASS\n"


def test_action_installs_from_its_own_checkout(tmp_path: Path) -> None:
    """The action's install step, into a fresh venv: the hash-checked runtime lock, then this
    checkout without resolving anything anew; `llamapin` then runs from that venv."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    step = action_steps()["Install llamapin"]
    env = {
        "LLAMAPIN_INSTALL": "",
        "LLAMAPIN_PYTHON": str(venv / "bin" / "python"),
        "ACTION_DIR": str(REPO),
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),  # pip's own cache stays out of the user's home
        "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip"),
    }
    res = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    version = subprocess.run(
        [str(venv / "bin" / "llamapin"), "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in version.stdout
    frozen = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    locked = {
        normalize(line.split(" ")[0])
        for line in (REPO / "requirements" / "runtime.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for line in frozen.splitlines():
        if "==" in line:
            assert normalize(line) in locked, f"{line} is not the locked version"


def test_init_caches_the_configured_cache_dir(
    tmp_path: Path, run_cli: Any, actionlint: Path
) -> None:
    root = project(tmp_path, "http://127.0.0.1:9/simple")
    text = (root / "llamapin.toml").read_text()  # a top-level key, before the [engine] table
    (root / "llamapin.toml").write_text('cache_dir = "ci-cache/llamapin"\n' + text)
    assert run_cli("--root", str(root), "init", "--install", "llamapin==1.2.3").code == 0
    for rel in (GATE_PATH, BUMP_PATH):
        caches = [s for s in steps(root, rel) if "actions/cache@" in s.get("uses", "")]
        assert caches and all(s["with"]["path"] == "ci-cache/llamapin" for s in caches)
        assert lint(root / rel, actionlint).returncode == 0
    gate = next(s for s in steps(root, GATE_PATH) if "actions/cache@" in s.get("uses", ""))
    assert gate["with"]["restore-keys"] == "llamapin-${{ runner.os }}-${{ runner.arch }}-"


def test_the_default_cache_dir_is_written_as_home(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path, "http://127.0.0.1:9/simple")
    assert run_cli("--root", str(root), "init", "--install", "llamapin==1.2.3").code == 0
    caches = [s for s in steps(root, GATE_PATH) if "actions/cache@" in s.get("uses", "")]
    assert caches[0]["with"]["path"] == "~/.cache/llamapin"


@pytest.mark.parametrize("value", ["~/c ${{ github.token }}", "a/../../b", "c:\\\\x", ""])
def test_init_refuses_a_cache_dir_a_workflow_cannot_hold(
    tmp_path: Path, run_cli: Any, value: str
) -> None:
    root = project(tmp_path, "http://127.0.0.1:9/simple")
    text = (root / "llamapin.toml").read_text()
    (root / "llamapin.toml").write_text(f"cache_dir = {json.dumps(value)}\n" + text)
    res = run_cli("--root", str(root), "init", "--install", "llamapin==1.2.3")
    assert res.code == 2
    assert "cannot be written into a workflow" in res.err.splitlines()[0]
    assert not (root / ".github").exists()
