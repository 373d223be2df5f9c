"""`llamapin init` sets up the runtime a delegated ensure command needs (bun, node) in the
jobs that run ensure, and the workflows still pass actionlint and zizmor."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with gguf; no stubs

from llamapin.workflows import SETUP_BUN, SETUP_NODE
from tests.integration.test_init import actionlint, lint, zizmor

__all__ = ["actionlint"]  # the fixture, shared with test_init


@pytest.mark.parametrize(
    ("command", "setup", "corepack"),
    [
        ("bun run engine:ensure", SETUP_BUN, False),
        ("pnpm run engine:ensure", SETUP_NODE, True),
        ("scripts/fetch-engine.sh", None, False),
    ],
)
def test_init_sets_up_the_ensure_runtime(
    tmp_path: Path,
    run_cli: Any,
    actionlint: Path,
    command: str,
    setup: str | None,
    corepack: bool,
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "llamapin.toml").write_text(
        f'[engine]\nplatform = "linux-x64"\n\n[ensure]\ncommand = "{command}"\n'
    )
    res = run_cli("--root", str(tmp_path), "init", "--install", "llamapin==1.2.3")
    assert res.code == 0, res.err
    for name, runs_ensure in (("gate", "engine-gate"), ("bump", "prepare")):
        workflow = tmp_path / f".github/workflows/llamapin-{name}.yml"
        text = workflow.read_text()
        jobs = yaml.safe_load(text)["jobs"]
        assert runs_ensure in jobs
        for job, spec in jobs.items():
            uses = [s.get("uses", "") for s in spec["steps"]]
            names = [s.get("name", "") for s in spec["steps"]]
            runtime = [i for i, u in enumerate(uses) if "setup-bun" in u or "setup-node" in u]
            if setup is None or job != runs_ensure:
                assert runtime == []
                continue
            # the runtime is set up before llamapin is installed, so before ensure runs
            assert [uses[i] for i in runtime] == [setup.split(" # ")[0]]
            install = names.index("Install llamapin")
            assert runtime[0] < install
            enable = [i for i, s in enumerate(spec["steps"]) if s.get("run") == "corepack enable"]
            assert enable == ([runtime[0] + 1] if corepack else [])
        assert text.count(setup or "no setup step") == (setup is not None)
        checked = lint(workflow, actionlint)
        assert checked.returncode == 0, checked.stdout
        found = zizmor(workflow)
        assert found.returncode == 0, found.stdout + found.stderr
        assert "No findings" in found.stdout + found.stderr
