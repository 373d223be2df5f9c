"""gate.fit: which devices an engine lists (`--list-devices`), asked of real processes, and
the setting the engine gets from it. The engine itself is in tests/integration/test_gate.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamapin.server import accelerators, fit_env


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_a_cpu_only_engine_lists_nothing_and_gets_fit_off(tmp_path: Path) -> None:
    engine = script(tmp_path, "cpu", 'echo "Available devices:"')
    assert accelerators(engine) == ()
    assert fit_env("auto", engine) == {"LLAMA_ARG_FIT": "off"}


def test_an_engine_with_a_gpu_keeps_llama_cpps_default(tmp_path: Path) -> None:
    engine = script(
        tmp_path,
        "gpu",
        'echo "ggml_vulkan: Found 1 Vulkan devices:"\n'
        'echo "Available devices:"\n'
        'echo "  Vulkan0: NVIDIA GeForce RTX 4090 (24564 MiB, 23888 MiB free)"',
    )
    assert accelerators(engine) == ("Vulkan0: NVIDIA GeForce RTX 4090 (24564 MiB, 23888 MiB free)",)
    assert fit_env("auto", engine) == {}


@pytest.mark.parametrize(
    "body",
    [
        'echo "error: invalid argument: --list-devices" >&2; exit 1',  # a build from before it
        "echo nothing to say",
        "kill -9 $$",
    ],
)
def test_an_engine_that_cannot_say_keeps_the_default(tmp_path: Path, body: str) -> None:
    engine = script(tmp_path, "old", body)
    assert accelerators(engine) is None
    assert fit_env("auto", engine) == {}


def test_a_hanging_or_missing_engine_keeps_the_default(tmp_path: Path) -> None:
    hangs = script(tmp_path, "hangs", "sleep 600")
    assert accelerators(hangs, timeout=1.0) is None
    assert accelerators(tmp_path / "missing") is None
    assert fit_env("auto", tmp_path / "missing") == {}
    not_executable = tmp_path / "plain"
    not_executable.write_text("x")
    assert accelerators(not_executable) is None


def test_on_and_off_are_passed_as_they_are_and_never_probe(tmp_path: Path) -> None:
    missing = tmp_path / "never-run"
    assert fit_env("on", missing) == {"LLAMA_ARG_FIT": "on"}
    assert fit_env("off", missing) == {"LLAMA_ARG_FIT": "off"}


def test_the_answer_is_asked_once_per_version_of_the_binary(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    engine = script(tmp_path, "counted", f'echo x >> "{counter}"; echo "Available devices:"')
    assert accelerators(engine) == () and accelerators(engine) == ()
    assert counter.read_text().count("x") == 1
    replaced = tmp_path / "counted.new"
    replaced.write_text(
        f'#!/bin/sh\necho x >> "{counter}"\necho "Available devices:"\necho "  Metal: Apple M1"\n'
    )
    replaced.chmod(0o755)
    os.replace(replaced, engine)  # a new file at the same path: asked again
    assert accelerators(engine) == ("Metal: Apple M1",)
    assert counter.read_text().count("x") == 2
