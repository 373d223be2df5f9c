"""Command-line interface: argument parsing and rendering only."""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import click

from llamapin import __version__
from llamapin.config import Config, load_config
from llamapin.errors import LlamapinError
from llamapin.pin import Pin, pin_from_dict, read_lock

HELP = """llamapin keeps a bundled llama.cpp llama-server pinned, current and proven.

\b
  ensure   turn the pin into an installed, verified, pruned, relinked bundle
  gate     start the engine with a real model and prove it works (and is not slower)
  verify   re-check an installed bundle against its manifest
  locators check (or --write) the pin values kept in other project files

Configuration: llamapin.toml or [tool.llamapin] in pyproject.toml (all optional).
The pin: llamapin.lock (llamapin's built-in default pin when there is none).
"""


class State:
    def __init__(self, root: Path, config: Path | None) -> None:
        self.root = root
        self._config_path = config
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.root, self._config_path)
        return self._config

    def pin(self) -> tuple[Pin, str]:
        lock = self.root / self.config.lock
        if lock.exists():
            return read_lock(lock), str(lock)
        import tomllib

        data = tomllib.loads(files("llamapin").joinpath("default.lock").read_text())
        return pin_from_dict(data, "built-in default"), "llamapin's built-in default pin"


def say(text: str) -> None:
    click.echo(text, err=True)


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


@click.group(help=HELP)
@click.version_option(__version__, prog_name="llamapin")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="Project root (where llamapin.lock lives).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Config file (default: llamapin.toml, else [tool.llamapin] in pyproject.toml).")
@click.pass_context
def cli(ctx: click.Context, root: Path, config: Path | None) -> None:
    ctx.obj = State(root.resolve(), config)


@cli.command(help="Install the pinned engine: fetch, verify, unpack, prune, relink, sign.")
@click.option("--force", is_flag=True, help="Reinstall even when the bundle is current.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def ensure(state: State, force: bool, as_json: bool) -> None:
    from llamapin.engine.ensure import ensure as run_ensure
    from llamapin.engine.ensure import result_dict

    pin, origin = state.pin()
    say(f"pin {pin.build} ({pin.commit[:12]}) from {origin}")
    res = run_ensure(state.config, state.root, pin, force=force, say=say)
    lines = [f"{'ok (no-op)' if res.noop else 'installed'}: {res.binary}"]
    if not res.noop:
        lines.append(
            f"kept {res.kept} files ({res.kept_bytes / 1e6:.1f} MB), dropped "
            f"{len(res.dropped)} ({res.dropped_bytes / 1e6:.1f} MB saved)"
        )
    lines += res.notes
    emit(result_dict(res), as_json, "\n".join(lines))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except LlamapinError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted by the user; engines were stopped", err=True)
        sys.exit(130)
