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
from llamapin.errors import ConfigError, LlamapinError
from llamapin.pin import Pin, pin_from_dict, read_lock
from llamapin.procenv import forget_secrets, register_secrets, take_secret

HELP = """llamapin keeps a bundled llama.cpp llama-server pinned, current and proven.

\b
  ensure   turn the pin into an installed, verified, pruned, relinked bundle
  gate     start the engine with a real model and prove it works (and is not slower)
  verify   re-check an installed bundle against its manifest
  locators check (or --write) the pin values kept in other project files
  drift    compare the bundle's libraries with a declared list (tauri.conf.json)
  init     write the gate and bump workflows into the project
  archs    list the model architectures a build supports
  check-model  does the pinned engine support a GGUF model's architecture?
  check    is there an upstream build worth adopting? (decision and reasons)
  bump     open (or update) a pull request that adopts it, with the gate result

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
            register_secrets(self._config.upstream.token_env, self._config.forge.token_env)
        return self._config

    def pin(self) -> tuple[Pin, str]:
        from llamapin.paths import inside_root

        lock = inside_root(self.root, self.config.lock, "lock")
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
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Project root (where llamapin.lock lives).",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: llamapin.toml, else [tool.llamapin] in pyproject.toml).",
)
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


def _binary(path: Path) -> Path:
    """A llama-server binary, or the one a bundle directory's manifest names."""
    from llamapin.engine.bundle import read_manifest

    if path.is_dir():
        manifest = read_manifest(path)
        return path / manifest.binary if manifest else path / "llama-server"
    return path


@cli.command(help="Start the engine with a real model and decide pass / fail / inconclusive.")
@click.option(
    "--engine",
    type=click.Path(path_type=Path),
    default=None,
    help="llama-server binary or bundle dir (default: ensure the pin, use its bundle).",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    default=None,
    help="Baseline llama-server binary or bundle dir to compare with.",
)
@click.option(
    "--baseline-lock",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Lock file of the current pin: ensure it beside the candidate and compare.",
)
@click.option(
    "--perf",
    "perf_mode",
    type=click.Choice(["auto", "off", "aa"]),
    default=None,
    help="auto: compare with the baseline when there is one; aa: A/A against itself.",
)
@click.option(
    "--suite",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Suite TOML (default: gate.suite, else the built-in suite).",
)
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def gate(
    state: State,
    engine: Path | None,
    baseline: Path | None,
    baseline_lock: Path | None,
    perf_mode: str | None,
    suite: Path | None,
    md_path: Path | None,
    json_path: Path | None,
    junit_path: Path | None,
) -> None:
    import os

    from llamapin import report
    from llamapin.engine.ensure import ensure as run_ensure
    from llamapin.gate.run import bundle_check, gate_engine, suite_in_root
    from llamapin.gate.suite import load_suite
    from llamapin.gate.verdict import Check

    cfg = state.config
    pin, origin = state.pin()
    say(f"pin {pin.build} ({pin.commit[:12]}) from {origin}")
    load_suite(suite or suite_in_root(state.root, cfg.gate.suite))  # before ensure
    checks: list[Check] = []
    if engine is None:
        res = run_ensure(cfg, state.root, pin, say=say)
        engine = res.binary
        checks.append(bundle_check(res))  # ensure verified it (a no-op re-hashes every file)
    binary = _binary(engine)
    if baseline_lock is not None:
        base_pin = read_lock(baseline_lock)
        if base_pin == pin:
            say(f"the baseline lock pins the same build ({pin.build}): no baseline to compare")
        else:
            base_cfg = cfg.model_copy(
                update={
                    "bundle": cfg.bundle.model_copy(update={"dir": cfg.bundle.dir + ".baseline"})
                }
            )
            baseline = run_ensure(base_cfg, state.root, base_pin, say=say).binary
    verdict = gate_engine(
        cfg,
        state.root,
        pin,
        binary,
        _binary(baseline) if baseline else None,
        say,
        checks=checks,
        suite_path=suite,
        perf_mode=perf_mode,
    )
    md = report.markdown(verdict)
    for path, text in (
        (md_path, md),
        (json_path, report.to_json(verdict)),
        (junit_path, report.junit(verdict)),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(md + "\n")
    click.echo(md)
    for warning in verdict.warnings:
        click.echo(f"gate: warning: {warning}", err=True)
    if verdict.outcome == "fail":
        click.echo(f"gate: FAIL: {verdict.reasons[0]}", err=True)
        sys.exit(1)
    if verdict.outcome == "inconclusive":
        click.echo(f"gate: INCONCLUSIVE: {verdict.reasons[0]}", err=True)
        sys.exit(cfg.gate.inconclusive_exit)
    click.echo("gate: PASS", err=True)


@cli.command(help="Re-check an installed bundle against its manifest and signatures.")
@click.argument("bundle", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def verify(state: State, bundle: Path | None) -> None:
    from llamapin.engine.bundle import verify_bundle

    target = bundle or state.root / state.config.bundle.dir
    manifest = verify_bundle(target)
    click.echo(
        f"ok: {len(manifest.files)} files in {target} match the manifest "
        f"(pin {manifest.pin['build']})"
    )


@cli.command(help="Check that pin values kept in other files match llamapin.lock.")
@click.option("--write", is_flag=True, help="Rewrite them to the lock's values.")
@click.pass_obj
def locators(state: State, write: bool) -> None:
    from llamapin.pin import check_locators, write_locators

    pin, _ = state.pin()
    locs = state.config.locator_list()
    if write:
        changed = write_locators(state.root, locs, pin)
        click.echo(f"rewrote {len(changed)} file(s): {', '.join(changed) or 'none needed'}")
        return
    drift = check_locators(state.root, locs, pin)
    for line in drift:
        click.echo(line)
    if drift:
        click.echo(
            "error: pin values drifted from llamapin.lock: the files above disagree. "
            "Run 'llamapin locators --write'",
            err=True,
        )
        sys.exit(1)
    click.echo(f"ok: {len(locs)} locator(s) match {pin.build}")


@cli.command(help="Compare the bundle's libraries with a declared list (e.g. tauri.conf.json).")
@click.pass_obj
def drift(state: State) -> None:
    from llamapin.engine.bundle import declared_libraries, verify_bundle
    from llamapin.engine.bundle import drift as closure_drift

    cfg = state.config
    if not cfg.bundle.frameworks_file:
        raise ConfigError(
            "no declared library list to compare with",
            "bundle.frameworks_file is not set",
            "Set bundle.frameworks_file (and bundle.frameworks_path)",
        )
    manifest = verify_bundle(state.root / cfg.bundle.dir)
    node = declared_libraries(state.root, cfg.bundle.frameworks_file, cfg.bundle.frameworks_path)
    needed, extra = closure_drift(list(manifest.closure["libs"]), node)
    for name in needed:
        click.echo(f"needed but not listed: {name}")
    for name in extra:
        click.echo(f"listed but not needed: {name}")
    if needed or extra:
        click.echo(
            f"error: the bundle's closure and {cfg.bundle.frameworks_path} differ: "
            f"{len(needed)} missing, {len(extra)} extra. Update the list to match",
            err=True,
        )
        sys.exit(1)
    click.echo(f"ok: {len(node)} listed libraries match the closure")


@cli.command(help="Write the gate and bump workflows into this project (.github/workflows).")
@click.option("--force", is_flag=True, help="Replace workflow files that were edited.")
@click.option(
    "--install",
    default=f"llamapin=={__version__}",
    show_default=True,
    help="pip requirement the workflow installs llamapin with.",
)
@click.option("--default-branch", default="main", show_default=True)
@click.pass_obj
def init(state: State, force: bool, install: str, default_branch: str) -> None:
    from llamapin.workflows import BUMP_PATH, GATE_PATH, apply, plan, render

    platform = state.config.engine.resolved_platform()
    planned = plan(
        state.root,
        {
            GATE_PATH: render("gate", platform, install, default_branch),
            BUMP_PATH: render("bump", platform, install, default_branch),
        },
    )
    for line in apply(state.root, planned, force):
        click.echo(line)


def _source_index(state: State, http: Any) -> Any:
    from llamapin.fetch import Cache
    from llamapin.upstream.archs import SourceIndex

    cfg = state.config
    return SourceIndex(
        cfg.engine.index_url,
        cfg.engine.source_package,
        Cache(Path(cfg.cache_dir).expanduser()),
        http,
    )


@cli.command(help="List the model architectures a build supports (from its llama.cpp source).")
@click.option("--at", "build", default=None, help="Build id (default: the pinned build).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def archs(state: State, build: str | None, as_json: bool) -> None:
    from llamapin.fetch import client
    from llamapin.pin import build_number

    pin, _ = state.pin()
    number = build_number(build) if build else pin.number
    with client() as http:
        names = _source_index(state, http).archs(number)
    emit(
        {"build": f"b{number}", "architectures": names},
        as_json,
        f"b{number} supports {len(names)} architectures:\n" + "\n".join(names),
    )


@cli.command("check-model", help="Does the pinned engine support this GGUF model's architecture?")
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.pass_obj
def check_model(state: State, model: Path) -> None:
    from llamapin.fetch import client
    from llamapin.model import gguf_architecture
    from llamapin.upstream.archs import first_supporting

    pin, _ = state.pin()
    arch = gguf_architecture(model)
    with client() as http:
        index = _source_index(state, http)
        if arch in index.archs(pin.number):
            click.echo(
                f"ok: {model.name} is a '{arch}' model; the pinned build {pin.build} supports it"
            )
            return
        newer = [n for n in index.numbers() if n > pin.number]
        first = first_supporting(newer, lambda n: arch in index.archs(n))
    if first is None:
        newest = f"b{newer[-1]}" if newer else pin.build
        click.echo(
            f"error: {model.name} needs architecture '{arch}': no llama.cpp build on the "
            f"package index knows it yet (newest checked: {newest}). Use the app's "
            "Ollama / OpenAI-compatible provider for this model until upstream supports it",
            err=True,
        )
    else:
        click.echo(
            f"error: {model.name} needs architecture '{arch}': the pinned build "
            f"{pin.build} predates it; b{first} is the first build on the package index "
            f"that supports it. Bump the pin to b{first} or newer",
            err=True,
        )
    sys.exit(1)


def _upstream(state: State, http: Any, pin: Pin) -> Any:
    from llamapin.fetch import Cache
    from llamapin.upstream.check import Upstream
    from llamapin.upstream.github import EtagStore, GitHub

    cfg = state.config
    cache = Cache(Path(cfg.cache_dir).expanduser())
    gh = GitHub(
        cfg.upstream.api_url,
        cfg.upstream.repo,
        take_secret(cfg.upstream.token_env),
        http,
        EtagStore.open(cache.root / "github" / "etags.json"),
        token_env=cfg.upstream.token_env,
        max_wait_s=cfg.upstream.max_wait_s,
    )
    return Upstream(cfg, pin, http, cache, gh, say)


def _now(value: str | None) -> Any:
    from datetime import UTC, datetime

    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"bad --now {value!r}", "it is not an ISO 8601 time", "Use e.g. 2026-11-26T12:00:00Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


NOW_HELP = "Decide as if it were this time (ISO 8601; default: now). For replaying a decision."


@cli.command(help="Is there an upstream build worth adopting? Prints the decision and why.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.option("--now", "now_text", default=None, help=NOW_HELP)
@click.pass_obj
def check(state: State, as_json: bool, now_text: str | None) -> None:
    from llamapin.fetch import client
    from llamapin.upstream.check import decision_dict, decision_text, run_check

    pin, _ = state.pin()
    cooldown = state.config.upstream.cooldown_days
    with client() as http:
        up = _upstream(state, http, pin)
        try:
            decision = run_check(up, _now(now_text))
        finally:
            up.gh.etags.save()
    emit(decision_dict(decision, pin, cooldown), as_json, decision_text(decision, pin, cooldown))


@cli.command(help="Open or update a pull request that bumps the pin (never merges it).")
@click.option("--now", "now_text", default=None, help=NOW_HELP)
@click.option(
    "--status",
    "post_status",
    is_flag=True,
    help="Also post the gate result as a commit status on the PR head (for default tokens "
    "whose pushes trigger no workflow).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--prepare",
    "prepare_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Unprivileged half, without any forge token: check, commit, ensure and gate the "
    "candidate; write the change, its plan and the gate report into this directory.",
)
@click.option(
    "--publish",
    "publish_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Privileged half: verify what --prepare wrote, push it and open or update the PR. "
    "Runs no upstream code.",
)
@click.pass_obj
def bump(
    state: State,
    now_text: str | None,
    post_status: bool,
    as_json: bool,
    prepare_dir: Path | None,
    publish_dir: Path | None,
) -> None:
    import dataclasses

    from llamapin.fetch import client
    from llamapin.gate.run import bundle_check, gate_engine
    from llamapin.upstream.bump import forge_for, prepare_bump, publish_bump, run_bump

    if prepare_dir is not None and (publish_dir is not None or post_status):
        raise ConfigError(
            "--prepare takes neither --publish nor --status",
            "the prepare half holds no token, so it pushes and posts nothing",
            "Run 'llamapin bump --prepare DIR', then 'llamapin bump --publish DIR [--status]'",
        )
    cfg = state.config
    pin, _ = state.pin()
    now = _now(now_text)

    def gate(c: Config, wt: Path, new: Pin, cand: Any, base: Any) -> Any:
        say(f"gate {new.build} against {pin.build}")
        # An engine that will not start is a failed gate (a verdict), not an exception.
        return gate_engine(c, wt, new, cand.binary, base.binary, say, checks=[bundle_check(cand)])

    if prepare_dir is not None:  # reads no forge token: this half runs upstream code
        with client() as http:
            up = _upstream(state, http, pin)
            try:
                result = prepare_bump(up, state.root, now, gate, say, prepare_dir)
            finally:
                up.gh.etags.save()
        emit(dataclasses.asdict(result), as_json, result.message)
        return
    forge = forge_for(cfg, state.root, take_secret(cfg.forge.token_env))
    if publish_dir is not None:
        with forge.gh.http:
            result = publish_bump(forge, publish_dir, say, post_status=post_status)
    else:
        with client() as http, forge.gh.http:
            up = _upstream(state, http, pin)
            try:
                result = run_bump(up, forge, now, gate, say, post_status=post_status)
            finally:
                up.gh.etags.save()
    emit(
        dataclasses.asdict(result),
        as_json,
        result.message + (f"\n{result.url}" if result.url else ""),
    )


def main() -> None:
    from llamapin.lifetime import Terminated, guarded

    forget_secrets()
    try:
        with guarded():
            cli.main(standalone_mode=False)
    except Terminated as exc:  # SIGTERM, SIGHUP, SIGINT: every engine was stopped on the way
        click.echo(exc.line(), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # click turns Ctrl-C into Abort
        click.echo("error: interrupted by the user; engines were stopped", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # a bad flag or argument: one line, like every error
        command = (
            exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else "llamapin"
        )
        message = " ".join(exc.format_message().split()).rstrip(".")
        click.echo(f"error: {message}. See '{command} --help'", err=True)
        sys.exit(2)
    except LlamapinError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a last resort: one line, never a traceback
        click.echo(unexpected_line(exc), err=True)
        sys.exit(2)


def unexpected_line(exc: Exception) -> str:
    """One line for an error no site turned into a LlamapinError."""
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"error: a file is not UTF-8 text: byte {exc.start} cannot be decoded "
            f"({exc.reason}). Save the file as UTF-8"
        )
    if isinstance(exc, OSError) and exc.filename is not None:
        return (
            f"error: cannot use {exc.filename}: {exc.strerror or type(exc).__name__}. "
            "Check the path, what it is (a file or a directory) and its permissions"
        )
    text = " ".join(str(exc).split())[:300]
    return (
        f"error: unexpected {type(exc).__name__}: {text}. "
        "This is a bug in llamapin, please report it (with the command you ran)"
    )
