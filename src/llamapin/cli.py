"""Command-line interface: argument parsing and rendering only."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from llamapin import __version__
from llamapin.config import Config, is_windows, load_config
from llamapin.errors import DOCS_URL, ConfigError, LlamapinError
from llamapin.pin import Pin, pin_from_dict, read_lock
from llamapin.procenv import forget_secrets, register_secrets, take_secret

HELP = f"""llamapin keeps a bundled llama.cpp llama-server pinned, current and proven.

Configuration: llamapin.toml or [tool.llamapin] in pyproject.toml (all optional).
The pin: llamapin.lock (llamapin's built-in default pin when there is none).
Every command takes --json: one JSON document on stdout, an error too
({{"error": {{"what", "why", "fix"}}}}). Exit codes: 0 pass, 1 fail, 2 usage or
environment error. Documentation: {DOCS_URL}

\b
Examples:
  llamapin ensure
  llamapin gate --report-markdown reports/gate.md
"""
F = TypeVar("F", bound=Callable[..., Any])
JSON_HELP = 'Print one JSON document on stdout (on failure: {"error": {what, why, fix}}).'


class Output:
    """How this run reports: text, or one JSON document on stdout (set by --json)."""

    json = False


def _note_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        Output.json = True
    return value


def _note_gate_json(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    _note_json(ctx, param, value == "-")  # bare --json; --json FILE is the old report option
    return value


def json_option(help_text: str = JSON_HELP) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, callback=_note_json, help=help_text)


TARGET_HELP = (
    "The target to act on ([targets.NAME] in the config; default: the only target, or the "
    "one for this host)."
)


def _note_target(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    state = ctx.find_object(State)
    if value is not None and state is not None:
        state.target = value
    return value


def target_option(f: F) -> F:
    """``--target NAME`` on a command (the group takes it too, before the command)."""
    return click.option(
        "--target",
        "target",
        default=None,
        expose_value=False,
        callback=_note_target,
        metavar="NAME",
        help=TARGET_HELP,
    )(f)


def examples(text: str, *lines: str) -> str:
    """A command's help ending with its examples (kept as typed by ``\\b``)."""
    return text + "\n\n\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class State:
    def __init__(self, root: Path, config: Path | None, target: str | None = None) -> None:
        self.root = root
        self._config_path = config
        self._config: Config | None = None
        self._shared: Config | None = None
        self.target = target

    @property
    def config(self) -> Config:
        """The config as the chosen target sees it (``--target``; see ``Config.pick``)."""
        if self._config is None:
            self._config = self.shared.pick(self.target)
        return self._config

    @property
    def shared(self) -> Config:
        """The config as written, every target in it (``init`` writes CI for all of them)."""
        if self._shared is None:
            self._shared = load_config(self.root, self._config_path)
            register_secrets(self._shared.upstream.token_env, self._shared.forge.token_env)
        return self._shared

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


def fail(data: dict[str, Any], as_json: bool, what: str, why: str, fix: str) -> NoReturn:
    """A check that failed (exit 1): the result with its error as JSON, or one line."""
    if as_json:
        emit({**data, "error": {"what": what, "why": why, "fix": fix}}, True, "")
    click.echo(f"error: {what}: {why}. {fix}", err=True)
    sys.exit(1)


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
@click.option("--target", default=None, metavar="NAME", help=TARGET_HELP)
@click.pass_context
def cli(ctx: click.Context, root: Path, config: Path | None, target: str | None) -> None:
    ctx.obj = State(root.resolve(), config, target)


@cli.command(
    short_help="Install the pinned engine as a verified, pruned, relinked bundle.",
    help=examples(
        "Install the pinned engine: fetch, verify, unpack, prune, relink, sign.",
        "llamapin ensure",
        "llamapin ensure --force --json",
    ),
)
@click.option("--force", is_flag=True, help="Reinstall even when the bundle is current.")
@json_option()
@target_option
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


@cli.command(
    short_help="Start the engine with a real model and prove it works (and is not slower).",
    help=examples(
        "Start the engine with a real model and decide pass / fail / inconclusive.",
        "llamapin gate --report-markdown reports/gate.md --report-junit reports/gate.xml",
        "llamapin gate --baseline-lock base.lock --json > verdict.json",
    ),
)
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
@click.option(
    "--report-markdown",
    "--markdown",
    "md_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the Markdown report to FILE (--markdown is the old spelling).",
)
@click.option(
    "--report-json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the JSON report to FILE.",
)
@click.option(
    "--report-junit",
    "--junit",
    "junit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the JUnit XML report to FILE (--junit is the old spelling).",
)
@click.option(
    "--json",
    "json_arg",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="",
    callback=_note_gate_json,
    help="Print the verdict as one JSON document on stdout instead of Markdown. "
    "Deprecated: --json FILE still writes the report file; use --report-json FILE.",
)
@target_option
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
    json_arg: str | None,
) -> None:
    import os

    from llamapin import report
    from llamapin.engine.ensure import ensure as run_ensure
    from llamapin.gate.run import bundle_check, gate_engine, suite_in_root
    from llamapin.gate.suite import load_suite
    from llamapin.gate.verdict import Check

    as_json = json_arg == "-"
    if json_arg is not None and not as_json:  # the old spelling of --report-json FILE
        if json_path is not None:
            raise ConfigError(
                "both --json FILE and --report-json FILE given",
                "they name the same report",
                "Use --report-json FILE alone",
            )
        json_path = Path(json_arg)
        say(
            "warning: 'gate --json FILE' is deprecated and will print the verdict on stdout "
            "in a later version; use '--report-json FILE' (it still wrote the file this time)"
        )
    cfg = state.config
    if not cfg.gated:
        windows = is_windows(cfg.engine.resolved_platform())
        raise ConfigError(
            f"target {cfg.target_name} is not gated",
            (
                "a Windows target is not gated (llamapin does not run on Windows hosts yet)"
                if windows
                else f"[targets.{cfg.target}] sets gated = false"
            )
            + ": CI runs ensure, verify and drift for it, and no gate",
            "Gate another target (--target NAME)"
            + ("" if windows else ", or set gated = true for this one"),
        )
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
    click.echo(report.to_json(verdict).rstrip("\n") if as_json else md)
    for warning in verdict.warnings:
        click.echo(f"gate: warning: {warning}", err=True)
    if verdict.outcome == "fail":
        click.echo(f"gate: FAIL: {verdict.reasons[0]}", err=True)
        sys.exit(1)
    if verdict.outcome == "inconclusive":
        click.echo(f"gate: INCONCLUSIVE: {verdict.reasons[0]}", err=True)
        sys.exit(cfg.gate.inconclusive_exit)
    click.echo("gate: PASS", err=True)


@cli.command(
    short_help="Re-check an installed bundle against its manifest and signatures.",
    help=examples(
        "Re-check an installed bundle (BUNDLE, default: bundle.dir) against its manifest "
        "and signatures. A bundle that differs from its manifest, a bad signature or a "
        "macOS floor above the app's is a fail (exit 1); no bundle at all exits 2.",
        "llamapin verify",
        "llamapin verify path/to/bundle --json",
    ),
)
@click.argument("bundle", required=False, type=click.Path(file_okay=False, path_type=Path))
@json_option()
@target_option
@click.pass_obj
def verify(state: State, bundle: Path | None, as_json: bool) -> None:
    from llamapin.engine import macos, pe
    from llamapin.engine.bundle import read_manifest, verify_bundle
    from llamapin.errors import BundleError, SignatureError

    target = bundle or state.root / state.config.bundle.dir
    try:
        manifest = verify_bundle(target)
        if state.config.bundle.require_authenticode:
            pe.require_signed(target)
        authenticode = pe.signature_note(pe.signature_report(target))
        minimums = macos.bundle_minimums(target)
        declared = macos.declared_minimum(state.root, state.config.bundle) if minimums else None
        macos.check_floor(minimums, declared)
    except (BundleError, SignatureError) as exc:
        if read_manifest(target) is not None:  # an installed bundle failed its check
            exc.exit_code = 1
        raise
    floor = (
        macos.highest([v for a in minimums.values() for v in a.values() if v]) if minimums else None
    )
    lines = [
        f"ok: {len(manifest.files)} files in {target} match the manifest "
        f"(pin {manifest.pin['build']})"
    ]
    if minimums:
        said = f", the app declares {declared[0]} ({declared[1]})" if declared else ""
        lines.append(f"macOS: the bundle's files need macOS {floor or 'unknown'}{said}")
    data = {
        "bundle": str(target),
        "files": len(manifest.files),
        "pin": manifest.pin.get("build"),
        "macos": {"floor": floor, "declared": declared[0] if declared else None}
        if minimums
        else None,
        "authenticode": authenticode,
    }
    emit(data, as_json, "\n".join(lines + authenticode))


@cli.command(
    short_help="Check (or --write) the pin values kept in other project files.",
    help=examples(
        "Check that pin values kept in other files (a TS constant, a JSON field, a TOML "
        "key) match llamapin.lock.",
        "llamapin locators",
        "llamapin locators --write",
    ),
)
@click.option("--write", is_flag=True, help="Rewrite them to the lock's values.")
@json_option()
@target_option
@click.pass_obj
def locators(state: State, write: bool, as_json: bool) -> None:
    from llamapin.pin import check_locators, write_locators

    pin, _ = state.pin()
    locs = state.config.locator_list()
    if not locs:
        emit(
            {"pin": pin.build, "locators": 0, "drift": []},
            as_json,
            "no locators configured: nothing to check. To keep a pin value in another file "
            "in step, add a [[locators]] table (file, field, and one of regex, json, toml) "
            f"to the config; see {DOCS_URL}",
        )
        return
    if write:
        changed = write_locators(state.root, locs, pin)
        emit(
            {"pin": pin.build, "rewrote": changed},
            as_json,
            f"rewrote {len(changed)} file(s): {', '.join(changed) or 'none needed'}",
        )
        return
    drift = check_locators(state.root, locs, pin)
    data = {"pin": pin.build, "locators": len(locs), "drift": drift}
    if drift:
        if not as_json:
            click.echo("\n".join(drift))
        fail(
            data,
            as_json,
            "pin values drifted from llamapin.lock",
            "the files above disagree",
            "Run 'llamapin locators --write'",
        )
    emit(data, as_json, f"ok: {len(locs)} locator(s) match {pin.build}")


@cli.command(
    short_help="Compare the bundle's libraries with a declared list (tauri.conf.json).",
    help=examples(
        "Compare the bundle's libraries with a declared list (bundle.frameworks_file, e.g. "
        "tauri.conf.json). A difference is a fail (exit 1).",
        "llamapin drift",
        "llamapin drift --json",
    ),
)
@json_option()
@target_option
@click.pass_obj
def drift(state: State, as_json: bool) -> None:
    from llamapin.engine.bundle import (
        LIBRARY_LABELS,
        declared_libraries,
        split_declared,
        verify_bundle,
    )
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
    fmt = str(manifest.closure.get("format", "elf"))
    node, other = split_declared(node, fmt)
    if other and not node:
        raise ConfigError(
            f"{cfg.bundle.frameworks_path} lists no {LIBRARY_LABELS.get(fmt, fmt)} libraries",
            f"the bundle is a {fmt} build, and the list names {len(other)} file(s) of another "
            f"platform (first: {other[0]})",
            "Point bundle.frameworks_file and bundle.frameworks_path at this platform's list",
        )
    needed, extra = closure_drift(list(manifest.closure["libs"]), node, fmt)
    lines = [f"not compared: {len(other)} listed file(s) of other platforms"] if other else []
    lines += [f"needed but not listed: {name}" for name in needed]
    lines += [f"listed but not needed: {name}" for name in extra]
    data = {"listed": len(node), "needed": needed, "extra": extra, "other_platforms": len(other)}
    if needed or extra:
        if not as_json:
            click.echo("\n".join(lines))
        fail(
            data,
            as_json,
            f"the bundle's closure and {cfg.bundle.frameworks_path} differ",
            f"{len(needed)} missing, {len(extra)} extra",
            "Update the list to match",
        )
    emit(data, as_json, "\n".join([*lines, f"ok: {len(node)} listed libraries match the closure"]))


@cli.command(
    short_help="Write the gate and bump workflows into the project.",
    help="Write the gate and bump workflows into this project (.github/workflows).\n\n"
    "The workflows install llamapin with --install, or with this project's action "
    "(--action); with neither, llamapin==<this version> when the package index "
    "(engine.index_url) has it.\n\n"
    "Examples:\n\n"
    "  llamapin init --install git+https://github.com/OWNER/llamapin@<commit>\n\n"
    "  llamapin init --action OWNER/llamapin@<commit>",
)
@click.option("--force", is_flag=True, help="Replace workflow files that were edited.")
@click.option(
    "--install",
    default=None,
    help="pip requirement the workflows install llamapin with: name==version, an https "
    "wheel URL, a git+https URL at a full commit, or a path in the repository.",
)
@click.option(
    "--action",
    default=None,
    metavar="OWNER/REPO@SHA",
    help="Install llamapin with this project's composite action, pinned to a commit.",
)
@click.option(
    "--default-branch",
    default="main",
    show_default=True,
    help="The branch pushes to which are gated and bump PRs target.",
)
@json_option()
@target_option
@click.pass_obj
def init(
    state: State,
    force: bool,
    install: str | None,
    action: str | None,
    default_branch: str,
    as_json: bool,
) -> None:
    from llamapin.workflows import apply, check_action, check_branch, plan, render_all

    cfg = state.shared  # every target gets its gate job
    if state.target is not None:
        _ = state.config  # a --target given must name one of them
    check_branch(default_branch)  # the values given are checked before the index is asked
    if action is not None:
        check_action(action)
    elif install is None:
        install = _indexed_install(cfg.engine.index_url)
    planned = plan(state.root, render_all(cfg, install, default_branch, action))
    lines = apply(state.root, planned, force)
    files = [dict(zip(("status", "path"), line.split(": ", 1), strict=True)) for line in lines]
    emit({"files": files}, as_json, "\n".join(lines))


def _indexed_install(index_url: str) -> str:
    """``llamapin==<version>`` if the package index serves it (else a one-line refusal)."""
    from llamapin.errors import NotOnIndexError
    from llamapin.fetch import client, index_files
    from llamapin.workflows import default_install

    with client() as http:
        try:
            names: list[str] | None = [f.filename for f in index_files(index_url, "llamapin", http)]
        except NotOnIndexError:
            names = None
    return default_install(names, index_url)


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


@cli.command(
    short_help="List the model architectures a build supports.",
    help=examples(
        "List the model architectures a build supports (from its llama.cpp source).",
        "llamapin archs",
        "llamapin archs --at b10088 --json",
    ),
)
@click.option("--at", "build", default=None, help="Build id (default: the pinned build).")
@json_option()
@target_option
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


@cli.command(
    "check-model",
    short_help="Does the pinned engine support a GGUF model's architecture?",
    help=examples(
        "Does the pinned engine support MODEL's (a GGUF file) architecture? If not, name "
        "the first build that does. Unsupported is a fail (exit 1).",
        "llamapin check-model models/model.gguf",
        "llamapin check-model models/model.gguf --json",
    ),
)
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option()
@target_option
@click.pass_obj
def check_model(state: State, model: Path, as_json: bool) -> None:
    from llamapin.fetch import client
    from llamapin.model import gguf_architecture
    from llamapin.upstream.archs import first_supporting

    pin, _ = state.pin()
    arch = gguf_architecture(model)
    data: dict[str, Any] = {
        "model": model.name,
        "architecture": arch,
        "pin": pin.build,
        "supported": True,
        "first_supporting": None,
    }
    with client() as http:
        index = _source_index(state, http)
        if arch in index.archs(pin.number):
            emit(
                data,
                as_json,
                f"ok: {model.name} is a '{arch}' model; the pinned build {pin.build} supports it",
            )
            return
        newer = [n for n in index.numbers() if n > pin.number]
        first = first_supporting(newer, lambda n: arch in index.archs(n))
    data["supported"] = False
    what = f"{model.name} needs architecture '{arch}'"
    if first is None:
        newest = f"b{newer[-1]}" if newer else pin.build
        fail(
            data,
            as_json,
            what,
            f"no llama.cpp build on the package index knows it yet (newest checked: {newest})",
            "Serve this model with another runtime until upstream supports it, or run "
            "'llamapin check-model' again after a newer build is published",
        )
    data["first_supporting"] = f"b{first}"
    fail(
        data,
        as_json,
        what,
        f"the pinned build {pin.build} predates it; b{first} is the first build on the "
        "package index that supports it",
        f"Bump the pin to b{first} or newer ('llamapin bump --to b{first}')",
    )


def _upstream(state: State, http: Any, pin: Pin) -> Any:
    from llamapin.fetch import Cache
    from llamapin.upstream.github import EtagStore, GitHub
    from llamapin.upstream.service import Upstream

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


@cli.command(
    short_help="Is there an upstream build worth adopting? (decision and reasons)",
    help=examples(
        "Is there an upstream build worth adopting? Prints the decision and why (exit 0 "
        "either way).",
        "llamapin check",
        "llamapin check --json --now 2026-11-26T12:00:00Z",
    ),
)
@json_option('Print the decision as JSON (on failure: {"error": {what, why, fix}}).')
@click.option("--now", "now_text", default=None, help=NOW_HELP)
@target_option
@click.pass_obj
def check(state: State, as_json: bool, now_text: str | None) -> None:
    from llamapin.fetch import client
    from llamapin.upstream.check import run_check
    from llamapin.upstream.render import decision_dict, decision_text

    pin, _ = state.pin()
    cooldown = state.config.upstream.cooldown_days
    with client() as http:
        up = _upstream(state, http, pin)
        try:
            decision = run_check(up, _now(now_text))
        finally:
            up.gh.etags.save()
    emit(decision_dict(decision, pin, cooldown), as_json, decision_text(decision, pin, cooldown))


@cli.command(
    short_help="Pin a build: its commit and every asset's name, size and sha256.",
    help="Pin BUILD (e.g. b10068): resolve its commit (checked against its tag) and every "
    "asset the config installs from (name, size, sha256 from GitHub's release digests or "
    "the package index), and write llamapin.lock.\n\n"
    "\b\nExamples:\n  llamapin lock b10068\n  llamapin lock b10068 --write "
    "--platform macos-arm64",
)
@click.argument("build")
@click.option("--write", is_flag=True, help="Also rewrite the locators to the new pin.")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="Also pin the assets of this platform (e.g. macos-arm64); repeatable. "
    "Default: every target's platform (without targets: engine.platform).",
)
@json_option('Print what was written as JSON (on failure: {"error": {what, why, fix}}).')
@target_option
@click.pass_obj
def lock(state: State, build: str, write: bool, platforms: tuple[str, ...], as_json: bool) -> None:
    from llamapin.fetch import client
    from llamapin.paths import inside_root
    from llamapin.upstream.lock import locked_dict, locked_text, run_lock

    cfg = state.config
    current, _ = state.pin()
    had_lock = inside_root(state.root, cfg.lock, "lock").exists()
    with client() as http:
        up = _upstream(state, http, current)
        try:
            locked = run_lock(
                up,
                state.root,
                build,
                platforms=list(platforms),
                current=current if had_lock else None,
                write=write,
            )
        finally:
            up.gh.etags.save()
    emit(locked_dict(locked), as_json, locked_text(locked, bool(cfg.locators)))


@cli.command(
    short_help="Open (or update) a pull request that adopts a newer build, with the gate.",
    help=examples(
        "Open or update a pull request that bumps the pin (never merges it).",
        "llamapin bump --dry-run",
        "llamapin bump --prepare out/ && llamapin bump --publish out/",
    ),
)
@click.option("--now", "now_text", default=None, help=NOW_HELP)
@click.option(
    "--status",
    "post_status",
    is_flag=True,
    help="Also post the gate result as a commit status on the PR head (for default tokens "
    "whose pushes trigger no workflow).",
)
@json_option()
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
@click.option(
    "--dry-run",
    is_flag=True,
    help="Do everything up to the first write to the forge (check, commit in a throwaway "
    "worktree, ensure, gate) and print the commit, branch and PR body it would publish; "
    "push, open and comment nothing.",
)
@click.option(
    "--to",
    "to",
    default=None,
    metavar="BUILD",
    help="Propose this build (e.g. b10088) instead of the newest eligible one; a build "
    "that is not newer than the pin or lacks an asset is refused with the reason.",
)
@target_option
@click.pass_obj
def bump(
    state: State,
    now_text: str | None,
    post_status: bool,
    as_json: bool,
    prepare_dir: Path | None,
    publish_dir: Path | None,
    dry_run: bool,
    to: str | None,
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
    if dry_run and (prepare_dir is not None or publish_dir is not None or post_status):
        raise ConfigError(
            "--dry-run takes neither --prepare, --publish nor --status",
            "a dry run publishes nothing, and --prepare already pushes nothing",
            "Run 'llamapin bump --dry-run' alone (with --to or --now if needed)",
        )
    if to is not None and publish_dir is not None:
        raise ConfigError(
            "--publish takes no --to",
            "publish proposes the build the prepare job chose",
            "Pass --to to 'llamapin bump --prepare DIR'",
        )
    cfg = state.config
    if publish_dir is None and not cfg.gated:  # publish only verifies and pushes: no gate
        raise ConfigError(
            f"target {cfg.target} is not gated",
            "bump gates the candidate on the target it acts on, and this one is not gated",
            "Pass --target with a gated target (the bump pins every target's assets either way)",
        )
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
                result = prepare_bump(up, state.root, now, gate, say, prepare_dir, to=to)
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
                result = run_bump(
                    up, forge, now, gate, say, post_status=post_status, dry_run=dry_run, to=to
                )
            finally:
                up.gh.etags.save()
    text = result.message + (f"\n{result.url}" if result.url else "")
    if result.preview is not None:
        from llamapin.upstream.bump import preview_text

        text = preview_text(result.message, result.preview)
    for warning in result.warnings:
        click.echo(f"bump: warning: {warning}", err=True)
    emit(dataclasses.asdict(result), as_json, text)


def json_error(what: str, why: str, fix: str, detail: str = "") -> None:
    """With --json, the error as the run's one JSON document on stdout."""
    if Output.json:
        error = {"what": what, "why": why, "fix": fix}
        emit({"error": {**error, "detail": detail} if detail else error}, True, "")


def _asked_json(args: list[str]) -> bool:
    """Whether the command line asks for --json (for errors found while parsing it)."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def main() -> None:
    from llamapin.lifetime import Terminated, guarded

    forget_secrets()
    Output.json = False
    try:
        with guarded():
            cli.main(standalone_mode=False)
    except Terminated as exc:  # SIGTERM, SIGHUP, SIGINT: every engine was stopped on the way
        json_error(exc.line().removeprefix("error: "), str(exc), "Run the command again")
        click.echo(exc.line(), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # click turns Ctrl-C into Abort
        json_error("interrupted by the user", "engines were stopped", "Run the command again")
        click.echo("error: interrupted by the user; engines were stopped", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # a bad flag or argument: one line, like every error
        command = (
            exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else "llamapin"
        )
        message = " ".join(exc.format_message().split()).rstrip(".")
        Output.json = Output.json or _asked_json(sys.argv[1:])
        json_error(message, "the command line is not valid", f"See '{command} --help'")
        click.echo(f"error: {message}. See '{command} --help'", err=True)
        sys.exit(2)
    except LlamapinError as exc:
        json_error(exc.what, exc.why, exc.fix, exc.detail)
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a last resort: one line, never a traceback
        line = unexpected_line(exc).removeprefix("error: ")
        what, _, rest = line.partition(": ")
        why, _, fix = rest.rpartition(". ")
        json_error(what, why, fix)
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
