"""examples/thuki as committed: its config loads, each target sees what the README says, and
each declared library list holds only its own platform's libraries.

The end-to-end run of the example is tests/integration/test_example_thuki.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamapin.config import load_config
from llamapin.engine.bundle import declared_libraries, split_declared
from llamapin.engine.macos import declared_minimum
from llamapin.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "thuki"


def test_the_example_declares_three_targets() -> None:
    cfg = load_config(EXAMPLE)
    seen = {
        v.target: (
            v.engine.source,
            v.engine.resolved_platform(),
            v.bundle.dir,
            v.bundle.layout,
            v.gated,
            cfg.targets[str(v.target)].ci_runner(),
        )
        for v in cfg.views()
    }
    assert seen == {
        "linux-x64": (
            "wheel",
            "linux-x64",
            "src-tauri/binaries/linux",
            "flat",
            True,
            "ubuntu-24.04",
        ),
        "macos-arm64": (
            "release",
            "macos-arm64",
            "src-tauri/binaries/macos",
            "macos-app",
            True,
            "macos-15",
        ),
        "windows-x64": (
            "release",
            "windows-x64",
            "src-tauri/binaries/windows",
            "flat",
            False,
            "ubuntu-24.04",
        ),
    }
    assert cfg.for_target("windows-x64").engine.windows_variant == "cpu"
    # The shared sections stay shared: every target gates with the same settings.
    assert {v.gate.ctx_size for v in cfg.views()} == {2048}
    assert cfg.lock == "llamapin.lock" and not (EXAMPLE / "llamapin.lock").exists()


@pytest.mark.parametrize(
    ("host", "target"),
    [("linux-x64", "linux-x64"), ("macos-arm64", "macos-arm64"), ("win-x64", "windows-x64")],
)
def test_each_host_gets_its_own_target_by_default(host: str, target: str) -> None:
    assert load_config(EXAMPLE).pick(None, host=host).target == target


def test_a_host_with_no_target_must_name_one() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(EXAMPLE).pick(None, host="linux-arm64")
    assert "no target is for it" in exc.value.why and exc.value.fix == "Pass --target NAME"


@pytest.mark.parametrize(
    ("target", "fmt", "count"),
    [("macos-arm64", "macho", 10), ("linux-x64", "elf", 10), ("windows-x64", "pe", 7)],
)
def test_each_declared_list_is_its_platforms_own(target: str, fmt: str, count: int) -> None:
    bundle = load_config(EXAMPLE).for_target(target).bundle
    assert bundle.frameworks_file is not None
    listed = declared_libraries(EXAMPLE, bundle.frameworks_file, bundle.frameworks_path)
    same, other = split_declared(listed, fmt)
    assert (len(same), other) == (count, [])
    # Each entry sits in that target's bundle directory, as Tauri resolves it from src-tauri.
    assert all(f"src-tauri/{n}".startswith(bundle.dir + "/") for n in listed)


def test_the_app_declares_its_minimum_macos_once() -> None:
    bundle = load_config(EXAMPLE).for_target("macos-arm64").bundle
    assert bundle.min_macos is None  # read from tauri.conf.json, not repeated in the config
    assert declared_minimum(EXAMPLE, bundle) == (
        "13.4",
        "bundle.macOS.minimumSystemVersion in tauri.conf.json",
    )
    conf = json.loads((EXAMPLE / "src-tauri" / "tauri.conf.json").read_text())
    assert conf["bundle"]["externalBin"] == ["binaries/macos/MacOS/llama-server"]
