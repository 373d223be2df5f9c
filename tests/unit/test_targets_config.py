"""Targets: one config for every platform an app ships (issue 12, item 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llamapin.config import Config, load_config
from llamapin.errors import ConfigError
from tests.conftest import CliResult

THREE = """
[engine]
source = "wheel"

[gate.perf]
budget_s = 120
min_pairs = 6

[targets.macos-arm64]
platform = "macos-arm64"
gated = false
[targets.macos-arm64.engine]
source = "release"
[targets.macos-arm64.bundle]
dir = "src-tauri/resources/engine"
layout = "macos-app"
frameworks_file = "src-tauri/tauri.conf.json"

[targets.linux-x64]
platform = "linux-x64"
[targets.linux-x64.gate.perf]
budget_s = 60

[targets.windows-x64]
platform = "windows-x64"
runner = "ubuntu-22.04"
[targets.windows-x64.engine]
source = "release"
windows_variant = "cuda-12.4"
"""


def three(tmp_path: Path) -> Config:
    (tmp_path / "llamapin.toml").write_text(THREE)
    return load_config(tmp_path)


def test_a_config_without_targets_is_its_own_one_target(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg.views() == [cfg]
    assert cfg.pick(None) is cfg
    assert cfg.pick(cfg.engine.resolved_platform()) is cfg
    assert cfg.target is None and cfg.shared is cfg and cfg.gated
    assert cfg.target_name == cfg.engine.resolved_platform()
    with pytest.raises(ConfigError, match="declares no \\[targets\\]; its one implicit target"):
        cfg.pick("macos-arm64")


def test_each_target_sees_its_sections_merged_over_the_shared_ones(tmp_path: Path) -> None:
    cfg = three(tmp_path)
    mac = cfg.pick("macos-arm64")
    assert (mac.target, mac.target_name, mac.gated) == ("macos-arm64", "macos-arm64", False)
    assert (mac.engine.source, mac.engine.platform) == ("release", "macos-arm64")
    assert (mac.bundle.layout, mac.bundle.dir) == ("macos-app", "src-tauri/resources/engine")
    assert mac.gate.perf.budget_s == 120  # shared
    linux = cfg.pick("linux-x64")
    assert (linux.engine.source, linux.engine.platform) == ("wheel", "linux-x64")
    assert linux.bundle.dir == ".llamapin/engine" and linux.gated
    # a table merges key by key: the target's budget, the shared min_pairs
    assert (linux.gate.perf.budget_s, linux.gate.perf.min_pairs) == (60, 6)
    win = cfg.pick("windows-x64")
    assert win.engine.windows_variant == "cuda-12.4"
    assert [v.target for v in cfg.views()] == ["linux-x64", "macos-arm64", "windows-x64"]
    assert [v.target for v in mac.views()] == [v.target for v in cfg.views()]
    assert mac.shared is cfg and mac.for_target("linux-x64").engine.source == "wheel"


def test_runners_default_per_platform(tmp_path: Path) -> None:
    targets = three(tmp_path).targets
    assert targets["macos-arm64"].ci_runner() == "macos-15"
    assert targets["linux-x64"].ci_runner() == "ubuntu-24.04"
    assert targets["windows-x64"].ci_runner() == "ubuntu-22.04"  # configured
    assert not targets["windows-x64"].gated  # Windows: not gated unless said (refused)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("gated = true", "a Windows target cannot be gated yet: the gate runs the engine"),
        ('runner = "windows-2022"', "runner 'windows-2022': llamapin does not run on Windows"),
        ('runner = "Windows-Latest"', "runner 'Windows-Latest': llamapin does not run on Windows"),
        ('gated = "yes"', "a Windows target cannot be gated yet"),
    ],
)
def test_a_windows_target_runs_on_linux_and_is_not_gated(
    tmp_path: Path, extra: str, said: str
) -> None:
    """llamapin does not run on Windows hosts: a Windows target's ensure, verify and drift
    (PE files, any host) run on a Linux runner by default, and a gate or a Windows runner for
    it is refused on load, naming the target."""
    (tmp_path / "llamapin.toml").write_text('[targets.w]\nplatform = "win-x64"\n')
    target = load_config(tmp_path).targets["w"]
    assert (target.gated, target.ci_runner()) == (False, "ubuntu-24.04")
    (tmp_path / "llamapin.toml").write_text(f'[targets.w]\nplatform = "windows-x64"\n{extra}\n')
    with pytest.raises(ConfigError, match="targets.w: " + said.replace("(", ".")):
        load_config(tmp_path)


def test_the_default_target_is_the_only_one_or_the_hosts(tmp_path: Path) -> None:
    cfg = three(tmp_path)
    assert cfg.pick(None, host="linux-x64").target == "linux-x64"
    assert cfg.pick(None, host="win-x64").target == "windows-x64"  # upstream's spelling
    with pytest.raises(ConfigError, match=r"which target.*no target is for it.*--target NAME"):
        cfg.pick(None, host="linux-arm64")
    two = Config.model_validate(
        {"targets": {"a": {"platform": "linux-x64"}, "b": {"platform": "linux-x64"}}}
    )
    with pytest.raises(ConfigError, match="2 targets are for it"):
        two.pick(None, host="linux-x64")
    one = Config.model_validate({"targets": {"ci": {"platform": "linux-arm64"}}})
    assert one.pick(None, host="linux-x64").target == "ci"
    with pytest.raises(ConfigError, match=r"no target named 'mac'.*declares these targets: ci"):
        one.pick("mac")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            '[targets.mac]\nplatform = "macos-arm64"\n[targets.mac.engine]\nsource = "ftp"\n',
            "targets.mac.engine.source: Input should be",
        ),
        (
            '[targets.mac]\nplatform = "macos-arm64"\n[targets.mac.engine]\nplatform = "x"\n',
            "targets.mac.engine: set the target's platform as targets.NAME",
        ),
        ('[targets.mac]\nplatform = "amiga-68k"\n', "targets.mac.platform: String should match"),
        ("[targets.mac]\n", "targets.mac.platform: Field required"),
        ('[targets."../x"]\nplatform = "linux-x64"\n', "targets.../x.\\[key\\]: String should"),
        ('[targets.mac]\nplatform = "linux-x64"\nrunner = "a b"\n', "targets.mac.runner"),
        (
            '[targets.mac]\nplatform = "linux-x64"\n[targets.mac.ensure]\nenv = ["GH_TOKEN"]\n',
            "GH_TOKEN looks like a secret",
        ),
        (
            '[targets.mac]\nplatform = "linux-x64"\n[targets.mac.gate.perf]\nmin_pairs = 99\n',
            "targets.mac.gate.perf: min_pairs \\(99\\) exceeds max_pairs",
        ),
        (
            '[upstream.asset_patterns]\n"win-x64" = "llama-{tag}-bin-win-cpu-x64\\\\.zip"\n',
            "upstream.asset_patterns.win-x64: Windows release archives are found by upstream's",
        ),
    ],
)
def test_a_bad_target_is_refused_on_load_naming_its_key(
    tmp_path: Path, text: str, match: str
) -> None:
    (tmp_path / "llamapin.toml").write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(tmp_path)
    assert info.value.what.startswith("invalid config in")


def test_every_command_takes_target_before_or_after_its_name(
    tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    three(tmp_path)
    root = ["--root", str(tmp_path)]
    for args in (
        [*root, "--target", "nowhere", "verify"],
        [*root, "verify", "--target", "nowhere"],
    ):
        res = run_cli(*args)
        assert res.code == 2, res
        assert "error: no target named 'nowhere': the config declares these targets: " in res.err
    res = run_cli(*root, "verify", "--target", "macos-arm64", "--json")
    assert res.code != 0 and "src-tauri/resources/engine" in res.out + res.err


def test_the_gate_refuses_a_target_that_is_not_gated(
    tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    three(tmp_path)
    res = run_cli("--root", str(tmp_path), "gate", "--target", "macos-arm64")
    assert res.code == 2
    assert res.err.startswith("error: target macos-arm64 is not gated: [targets.macos-arm64] sets")
    assert "or set gated = true for this one" in res.err
    res = run_cli("--root", str(tmp_path), "gate", "--target", "windows-x64")
    assert res.code == 2
    assert res.err.startswith(
        "error: target windows-x64 is not gated: a Windows target is not gated (llamapin does "
        "not run on Windows hosts yet): CI runs ensure, verify and drift for it, and no gate. "
        "Gate another target (--target NAME)\n"
    ), res.err


def test_bump_refuses_to_gate_a_target_that_is_not_gated(
    tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    three(tmp_path)
    for extra in (["--dry-run"], ["--prepare", str(tmp_path / "out")]):
        res = run_cli("--root", str(tmp_path), "bump", "--target", "macos-arm64", *extra)
        assert res.code == 2, res
        assert res.err.startswith("error: target macos-arm64 is not gated: bump gates")
    assert not (tmp_path / "out").exists()


def test_a_config_without_targets_for_windows_is_not_gated(
    tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    """The one implicit target of a config for Windows: ensure, verify and drift work on it
    here, the gate is refused in one line, and init writes no gate it could not run."""
    from llamapin.workflows import render_all

    (tmp_path / "llamapin.toml").write_text('[engine]\nsource = "release"\nplatform = "win-x64"\n')
    cfg = load_config(tmp_path)
    assert not cfg.gated and cfg.target is None
    res = run_cli("--root", str(tmp_path), "gate")
    assert res.code == 2
    assert res.err.startswith(
        "error: target win-x64 is not gated: a Windows target is not gated (llamapin does not "
        "run on Windows hosts yet)"
    ), res.err
    with pytest.raises(ConfigError, match="cannot write a gate for win-x64: the config's one"):
        render_all(cfg, "llamapin==1.2.3", "main")
