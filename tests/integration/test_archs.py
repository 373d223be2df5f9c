"""archs and check-model on real llama.cpp sources from the package index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_ensure import WHEEL_PIN, project

pytestmark = pytest.mark.engine


def with_arch(model: Path, arch: bytes, dest: Path) -> Path:
    """The real model with its header's architecture renamed (same length)."""
    data = bytearray(model.read_bytes())
    at = data.find(b"gemma3", data.find(b"general.architecture"))
    data[at : at + len(arch)] = arch
    dest.write_bytes(bytes(data))
    return dest


def test_archs_of_two_real_builds(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", WHEEL_PIN)
    pinned = run_cli("--root", str(root), "archs", "--json")
    assert pinned.code == 0
    old = json.loads(pinned.out)
    assert old["build"] == "b10068"
    assert "gemma3" in old["architectures"] and "laguna" not in old["architectures"]
    newer = run_cli("--root", str(root), "archs", "--at", "b11434")
    assert newer.code == 0 and "laguna" in newer.out.split()


def test_check_model_supported_and_unknown(tmp_path: Path, run_cli: Any, model: Path) -> None:
    root = project(tmp_path / "app", WHEEL_PIN)
    ok = run_cli("--root", str(root), "check-model", str(model))
    assert ok.code == 0
    assert "'gemma3' model; the pinned build b10068 supports it" in ok.out
    future = with_arch(model, b"gemma9", tmp_path / "future.gguf")
    res = run_cli("--root", str(root), "check-model", str(future))
    assert res.code == 1
    assert (
        "needs architecture 'gemma9': no llama.cpp build on the package index knows it" in res.err
    )


@pytest.mark.slow
def test_check_model_names_the_first_build_that_supports_it(
    tmp_path: Path, run_cli: Any, model: Path
) -> None:
    """'laguna' is one of 19 architectures upstream added between b10068 and b11434."""
    root = project(tmp_path / "app", WHEEL_PIN)
    laguna = with_arch(model, b"laguna", tmp_path / "laguna.gguf")
    res = run_cli("--root", str(root), "check-model", str(laguna))
    assert res.code == 1
    assert "the pinned build b10068 predates it;" in res.err
    first = res.err.split("; b")[1].split(" ")[0]
    older = run_cli("--root", str(root), "archs", "--at", f"b{int(first)}", "--json")
    assert "laguna" in json.loads(older.out)["architectures"]
