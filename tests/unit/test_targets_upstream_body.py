"""A bump of a config with targets: the PR body's table of every target's assets (sha256
pinned now -> proposed) and its shared-library section per target, rendered from plain
values; a config without targets keeps today's body."""

from __future__ import annotations

import tomllib

from llamapin.config import Config
from llamapin.inert import republished
from llamapin.pin import Asset, Pin
from llamapin.upstream import bump as bp
from llamapin.upstream.render import Summary
from llamapin.upstream.rules import Decision
from tests.unit.test_sec_inputs import COMPARE, HOSTILE, assert_inert_markdown, hostile_verdict

TARGETS = """
[engine]
source = "release"
[bundle]
frameworks_file = "src-tauri/tauri.conf.json"

[targets.linux-x64]
platform = "linux-x64"
[targets.linux-x64.bundle]
dir = ".llamapin/linux"

[targets.macos-arm64]
platform = "macos-arm64"
gated = false
[targets.macos-arm64.bundle]
dir = ".llamapin/macos"

[targets.windows-x64]
platform = "windows-x64"
gated = false
[targets.windows-x64.engine]
windows_variant = "cuda-12.4"
"""
OLD = Pin(
    "b10068",
    "0" * 40,
    {
        "linux-x64": Asset("llama-b10068-bin-ubuntu-x64.zip", "1" * 64),
        "macos-arm64": Asset("llama-b10068-bin-macos-arm64.zip", "2" * 64),
        "retired": Asset("old.zip", "9" * 64),
    },
)
NEW = Pin(
    "b10088",
    "f" * 40,
    {
        "linux-x64": Asset("llama-b10088-bin-ubuntu-x64.zip", "3" * 64),
        "macos-arm64": Asset("llama-b10088-bin-macos-arm64.zip", "2" * 64),
        "windows-x64": Asset("llama-b10088-bin-win-cuda-12.4-x64.zip", "4" * 64),
        "windows-x64-cudart": Asset("cudart-llama-bin-win-cuda-12.4-x64.zip", "5" * 64),
    },
)


def config(text: str = TARGETS) -> Config:
    return Config.model_validate(tomllib.loads(text))


def test_every_targets_assets_old_and_new() -> None:
    rows = bp.asset_rows(config(), OLD, NEW)
    assert [(r.target, r.key) for r in rows] == [
        ("linux-x64", "linux-x64"),
        ("macos-arm64", "macos-arm64"),
        ("windows-x64", "windows-x64"),
        ("windows-x64", "windows-x64-cudart"),
        ("", "retired"),  # a key only the old pin carries
    ]
    lines = bp.assets_markdown(rows)
    assert lines[0].startswith("### Assets per target (sha256 pinned now -> proposed")
    assert lines[4] == (
        f"| `linux-x64` | `linux-x64` | `llama-b10088-bin-ubuntu-x64.zip` | "
        f"`{'1' * 64}` -> `{'3' * 64}` |"
    )
    assert lines[5].endswith(f"| `{'2' * 64}` (unchanged) |")
    assert lines[6].endswith(f"| none -> `{'4' * 64}` |")  # a target new to the pin
    assert lines[8] == f"| other | `retired` | not in the proposed pin | `{'9' * 64}` -> none |"


def closure_targets(cfg: Config) -> list[bp.TargetChange]:
    return [
        bp.TargetChange(
            cfg.pick("linux-x64"), bp.closure_change(["a.so"], ["a.so"], None), gated=True
        ),
        bp.TargetChange(
            cfg.pick("macos-arm64"),
            bp.closure_change(["libggml.0.dylib"], ["libggml.0.dylib", "libnew.0.dylib"], []),
        ),
        bp.TargetChange(
            cfg.pick("windows-x64"),
            None,
            skipped="cannot relink: llvm-lipo not found. " + HOSTILE[0],
        ),
    ]


def test_a_closure_section_per_target() -> None:
    cfg = config()
    text = bp.targets_closure_markdown(closure_targets(cfg))
    parts = text.split("\n\n#### ")
    assert parts[0] == (
        "#### `linux-x64` (linux-x64) (gated)\n\n"
        "The shared-library closure is unchanged: nothing to re-bundle or re-sign."
    )
    assert parts[1].startswith("`macos-arm64` (macos-arm64)\n\n- new library: `libnew.0.dylib`")
    assert "**Remediation**: in `src-tauri/tauri.conf.json`" in parts[1]
    assert "- add `libnew.0.dylib`" in parts[1]
    assert parts[2].startswith(
        "`windows-x64` (windows-x64)\n\nNot ensured on this host: `cannot relink"
    )
    # without a declared list, the remediation names the target's own manifest
    plain = config(TARGETS.replace('frameworks_file = "src-tauri/tauri.conf.json"', ""))
    change = bp.closure_change([], ["libnew.0.dylib"], None)
    text = bp.closure_markdown(change, plain.pick("macos-arm64"))
    assert "manifest (`.llamapin/macos/llamapin-manifest.json`)" in text


def body(cfg: Config, made: bp.Made) -> str:
    summary = Summary(COMPARE, 2, {}, [], [], [], [])
    return bp.pr_body(
        OLD,
        NEW,
        Decision(True, None, "newer", []),
        summary,
        made.closure(cfg),
        hostile_verdict(),
        [],
        made.rows(cfg, OLD, NEW),
    )


def test_the_pr_body_with_and_without_targets() -> None:
    cfg = config()
    change = bp.closure_change([], [], None)
    made = bp.Made("h", hostile_verdict(), change, ["llamapin.lock"], closure_targets(cfg))
    text = body(cfg.pick("linux-x64"), made)
    assert "### Assets per target" in text and "### Assets (sha256" not in text
    assert "#### `macos-arm64` (macos-arm64)" in text and "Not ensured on this host" in text
    assert_inert_markdown(republished(text, (COMPARE,)))
    # without targets: today's table and today's one closure section
    plain = Config()
    made = bp.Made("h", hostile_verdict(), change, ["llamapin.lock"])
    text = body(plain, made)
    assert "### Assets (sha256, verified on download)\n\n| key | file | size | sha256 |" in text
    assert "####" not in text and "Assets per target" not in text
    assert "### Shared libraries\n\nThe shared-library closure is unchanged" in text


def test_hostile_asset_names_stay_inert_in_the_target_table() -> None:
    evil = Pin("b10088", "f" * 40, {"linux-x64": Asset("`x`|" + " ".join(HOSTILE), "3" * 64)})
    lines = bp.assets_markdown(bp.asset_rows(config(), OLD, evil))
    html = assert_inert_markdown("\n".join(lines))
    assert html.count("<tr>") == 6  # the header and five rows: no cell broke out of the table
