from __future__ import annotations

from pathlib import Path

import pytest

from llamapin.config import Config, LocatorConfig, host_platform, load_config
from llamapin.errors import ConfigError


def test_defaults_when_nothing_is_configured(tmp_path: Path) -> None:
    cfg = load_config(tmp_path)
    assert cfg == Config()
    assert cfg.engine.source == "wheel"
    assert cfg.gate.perf.tolerance == 0.10


def test_llamapin_toml_and_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    assert load_config(tmp_path) == Config()
    (tmp_path / "pyproject.toml").write_text("[tool.llamapin.engine]\nsource = 'release'\n")
    assert load_config(tmp_path).engine.source == "release"
    (tmp_path / "llamapin.toml").write_text(
        "[bundle]\nlayout = 'macos-app'\n[[locators]]\nfile='a.ts'\nfield='build'\n"
        "regex='(b\\\\d+)'\n"
    )
    cfg = load_config(tmp_path)
    assert cfg.bundle.layout == "macos-app"
    assert cfg.locator_list()[0].kind == "regex"


def test_explicit_config(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[gate]\nctx_size = 1024\n")
    assert load_config(tmp_path, path).gate.ctx_size == 1024
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path, tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[engine\n", "cannot parse"),
        ("[engine]\nsource = 'ftp'\n", "invalid config"),
        ("[gate]\nnope = 1\n", "invalid config"),
    ],
)
def test_bad_config(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "llamapin.toml").write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(tmp_path)
    assert info.value.render().startswith("error: ")


def test_locator_needs_exactly_one_way() -> None:
    with pytest.raises(ValueError, match="exactly one"):  # refused when the config is loaded
        LocatorConfig(file="a", field="build")
    loc = LocatorConfig.model_validate({"file": "a.json", "field": "build", "json": "a.b"})
    assert loc.to_locator().kind == "json"


@pytest.mark.parametrize(
    ("system", "machine", "want"),
    [
        ("Darwin", "arm64", "macos-arm64"),
        ("Linux", "x86_64", "linux-x64"),
        ("Windows", "AMD64", "win-x64"),
        ("FreeBSD", "riscv64", "freebsd-riscv64"),
    ],
)
def test_host_platform(system: str, machine: str, want: str) -> None:
    assert host_platform(system, machine) == want
    assert host_platform() in ("linux-x64", "linux-arm64", "macos-arm64", "macos-x64")


def test_nothing_can_float_to_latest(tmp_path: Path) -> None:
    """No lock value, config key or command-line flag asks for "the newest build":
    ensure installs exactly the pin or refuses."""
    import click

    from llamapin.cli import cli
    from llamapin.pin import pin_from_dict

    with pytest.raises(ConfigError, match="bad build id 'latest'"):
        pin_from_dict({"pin": {"build": "latest", "commit": "a" * 40}}, "lock")
    with pytest.raises(ConfigError, match="bad commit 'HEAD'"):
        pin_from_dict({"pin": {"build": "b1", "commit": "HEAD"}}, "lock")
    for text in ("latest = true\n", "[engine]\nlatest = true\n", '[engine]\nfollow = "master"\n'):
        (tmp_path / "llamapin.toml").write_text(text)
        with pytest.raises(ConfigError, match="Extra inputs are not permitted"):
            load_config(tmp_path)
    ensure_cmd = cli.commands["ensure"]
    assert isinstance(ensure_cmd, click.Command)
    flags = {opt for p in ensure_cmd.params for opt in p.opts}
    # no --latest, --tag, --build, --url (--target names a platform of the one pin)
    assert flags == {"--force", "--json", "--target"}


def test_a_small_context_is_fine_without_the_perf_test(tmp_path: Path) -> None:
    """The perf prompt must fit gate.ctx_size only when the perf test can run."""
    path = tmp_path / "small.toml"
    path.write_text('[gate]\nctx_size = 128\n[gate.perf]\nmode = "off"\n')
    assert load_config(tmp_path, path).gate.ctx_size == 128
    path.write_text("[gate]\nctx_size = 128\n")
    with pytest.raises(ConfigError, match=r"need about 152 tokens, more than ctx_size \(128\)"):
        load_config(tmp_path, path)
