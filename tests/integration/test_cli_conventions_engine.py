"""The CLI conventions on a real engine, model and package index: gate --json prints the
verdict as one JSON document on stdout, the report options write their files, and
check-model and archs answer --json, on success and on failure (exit 1)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_archs import with_arch
from tests.integration.test_ensure import WHEEL_PIN, project

pytestmark = pytest.mark.engine


def test_gate_json_on_stdout_and_report_files(
    tmp_path: Path, run_cli: Any, model: Path, engine_bundle: Path
) -> None:
    slow_machine = {"health_timeout_s": 600.0, "request_timeout_s": 600.0}  # a loaded CI machine
    root = project(tmp_path / "app", WHEEL_PIN, gate=slow_machine)
    reports = tmp_path / "reports"
    res = run_cli(
        "--root", str(root), "gate", "--engine", str(engine_bundle), "--perf", "off",
        "--json",
        "--report-markdown", str(reports / "g.md"),
        "--report-json", str(reports / "g.json"),
        "--report-junit", str(reports / "g.xml"),
    )  # fmt: skip
    assert res.code == 0, res.err
    verdict = json.loads(res.out)  # the whole of stdout is the verdict
    assert verdict["outcome"] == "pass"
    assert json.loads((reports / "g.json").read_text()) == verdict
    assert (reports / "g.md").read_text().startswith("#")
    ET.parse(reports / "g.xml")
    assert "gate: PASS" in res.err
    # CI logs (stderr is not a terminal here): a start and an end line per prompt
    assert "prompt 1/" in res.err and ": done in " in res.err
    old = run_cli(
        "--root", str(root), "gate", "--engine", str(engine_bundle), "--perf", "off",
        "--json", str(reports / "old.json"), "--markdown", str(reports / "old.md"),
    )  # fmt: skip
    assert old.code == 0, old.err
    assert "deprecated" in old.err and json.loads((reports / "old.json").read_text())
    assert old.out.startswith("#")  # Markdown on stdout, as before


def test_check_model_and_archs_json(tmp_path: Path, run_cli: Any, model: Path) -> None:
    root = project(tmp_path / "app", WHEEL_PIN)
    ok = run_cli("--root", str(root), "check-model", str(model), "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out) == {
        "model": model.name,
        "architecture": "gemma3",
        "pin": "b10068",
        "supported": True,
        "first_supporting": None,
    }
    future = with_arch(model, b"gemma9", tmp_path / "future.gguf")
    bad = run_cli("--root", str(root), "check-model", str(future), "--json")
    assert bad.code == 1
    doc = json.loads(bad.out)
    assert doc["supported"] is False and doc["first_supporting"] is None
    assert doc["error"]["what"] == "future.gguf needs architecture 'gemma9'"
    assert "Ollama" not in bad.err and "another runtime" in doc["error"]["fix"]
    archs = run_cli("--root", str(root), "archs", "--json")
    assert archs.code == 0 and "gemma3" in json.loads(archs.out)["architectures"]


@pytest.mark.slow
def test_check_model_first_supporting_json(tmp_path: Path, run_cli: Any, model: Path) -> None:
    root = project(tmp_path / "app", WHEEL_PIN)
    laguna = with_arch(model, b"laguna", tmp_path / "laguna.gguf")
    res = run_cli("--root", str(root), "check-model", str(laguna), "--json")
    assert res.code == 1
    doc = json.loads(res.out)
    first = doc["first_supporting"]
    assert first.startswith("b") and f"llamapin bump --to {first}" in doc["error"]["fix"]
