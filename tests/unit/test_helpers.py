"""Small pure helpers around ensure and sources."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from llamapin.config import Config, EngineConfig, ModelConfig
from llamapin.engine.ensure import BuildInfo, can_execute, parse_version, provenance_problems
from llamapin.engine.sources import build_jobs
from llamapin.errors import BinaryFormatError, LlamapinError, ModelError
from llamapin.fetch import Cache
from llamapin.model import ensure_model, gguf_architecture
from llamapin.pin import Pin

PIN = Pin("b10068", "571d0d540df04f25298d0e159e520d9fc62ed121")


def test_parse_version() -> None:
    assert parse_version("version: 10068 (571d0d540)\nbuilt with") == BuildInfo(10068, "571d0d540")
    assert parse_version("version: 0 (unknown)") == BuildInfo(0, None)
    assert parse_version("garbage") == BuildInfo(None, None)


def test_provenance_problems() -> None:
    assert provenance_problems(BuildInfo(10068, "571d0d5"), PIN) == []
    assert provenance_problems(BuildInfo(1, "571d0d5"), PIN) == []  # shallow clone: no number
    assert provenance_problems(BuildInfo(10069, "3ce7da2"), PIN) == [
        "build number 10069, pin says 10068",
        "commit 3ce7da2, pin says 571d0d540df04f25298d0e159e520d9fc62ed121",
    ]


def test_can_execute_and_build_jobs() -> None:
    assert can_execute("elf", "Linux") and not can_execute("macho", "Linux")
    assert can_execute("macho", "Darwin") and not can_execute("elf", "Windows")
    gib = 1024**3
    assert build_jobs(16, 24 * gib, 2.0) == 12  # memory bounds it
    assert build_jobs(2, 24 * gib, 2.0) == 2  # cores bound it
    assert build_jobs(8, gib // 2, 2.0) == 1  # never zero


def test_error_rendering() -> None:
    err = LlamapinError("what", "why", "Do this", detail="line1\nline2\n")
    assert err.render() == "error: what: why. Do this\nline1\nline2"


def test_model_errors(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    with httpx.Client() as http:
        with pytest.raises(ModelError, match="does not exist"):
            ensure_model(
                ModelConfig(path="missing.gguf", sha256="0" * 64), cache, "", http, tmp_path
            )
        with pytest.raises(ModelError, match="no model configured"):
            ensure_model(ModelConfig(index_parts=[], sha256="0" * 64), cache, "", http, tmp_path)
        with pytest.raises(ModelError, match="bad model part"):
            ensure_model(
                ModelConfig(index_parts=["nonsense"], sha256="0" * 64), cache, "", http, tmp_path
            )
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(BinaryFormatError, match="GGUF header"):
        gguf_architecture(junk)


def test_config_model_default_is_the_field_notes_model() -> None:
    cfg = Config()
    assert cfg.model.sha256.startswith("a5fd3b62")
    assert EngineConfig().version.format(number=10068) == "0.10068.0"
