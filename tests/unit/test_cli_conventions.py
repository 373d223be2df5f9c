"""One set of CLI conventions, for every command of the real CLI (its real ``main``):
help text on every option and examples at the end of every command's help; ``--json``
gives one JSON document on stdout on success and on failure; exit codes 0 pass, 1 fail,
2 usage or environment error. Every URL points at 127.0.0.1:9 (refused), so nothing
leaves the machine."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest

from llamapin import progress
from llamapin.cli import cli
from llamapin.engine.bundle import MANIFEST, Manifest, file_table
from llamapin.errors import DOCS_URL, LocatorError
from llamapin.pin import Locator, check_locators, read_lock
from llamapin.upstream.feeds import Build
from llamapin.upstream.rules import Screened, decide

OFFLINE = """
[engine]
index_url = "http://127.0.0.1:9/simple"
base_url = "http://127.0.0.1:9"
[upstream]
api_url = "http://127.0.0.1:9/api"
html_url = "http://127.0.0.1:9"
[forge]
api_url = "http://127.0.0.1:9/api"
repo = "o/r"
"""
LOCK = '[pin]\nbuild = "b10068"\ncommit = "571d0d540df04f25298d0e159e520d9fc62ed121"\n'
COMMANDS = sorted(cli.commands)
# the arguments each command needs to get as far as reading the config
ARGS: dict[str, list[str]] = {"check-model": ["MODEL"], "lock": ["b10068"]}


def project(root: Path, config: str = OFFLINE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "llamapin.toml").write_text(config)
    (root / "llamapin.lock").write_text(LOCK)
    return root


def args_for(name: str, tmp_path: Path) -> list[str]:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    return [str(model) if a == "MODEL" else a for a in ARGS.get(name, [])]


def one_error(out: str) -> dict[str, str]:
    doc = json.loads(out)  # the whole of stdout is one JSON document
    assert set(doc) == {"error"}, doc
    error: dict[str, str] = doc["error"]
    assert {"what", "why", "fix"} <= set(error) and all(error[k] for k in ("what", "why", "fix"))
    return error


# --- help -----------------------------------------------------------------------------------


def test_top_level_help_lists_each_command_once(run_cli: Any) -> None:
    res = run_cli("--help")
    assert res.code == 0
    for name in COMMANDS:
        assert len(re.findall(rf"^\s+{re.escape(name)}\s", res.out, re.MULTILINE)) == 1, name
    assert DOCS_URL in " ".join(res.out.split())
    assert "Examples:" in res.out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_and_the_help_ends_with_examples(name: str, run_cli: Any) -> None:
    command = cli.commands[name]
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help and param.help.strip(), f"{name} {param.opts} has no help"
    assert "--json" in {o for p in command.params for o in p.opts}, name
    assert command.short_help, name  # the top-level list shows a whole sentence
    res = run_cli(name, "--help")
    assert res.code == 0
    text = res.out.split("\nOptions:")[0].rstrip()
    lines = text.splitlines()
    examples = next(i for i, line in enumerate(lines) if line.strip() == "Examples:")
    tail = [line.strip() for line in lines[examples + 1 :] if line.strip()]
    assert 1 <= len(tail) <= 2 and all(line.startswith("llamapin ") for line in tail), tail


# --- --json on failure: one document on stdout, one line on stderr, exit 2 -------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_json_error_on_a_bad_config(name: str, tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", "[gate]\nctx_size = -1\n")
    res = run_cli("--root", str(root), name, *args_for(name, tmp_path), "--json")
    assert res.code == 2, (res.out, res.err)
    error = one_error(res.out)
    assert "ctx_size" in error["what"] + error["why"]
    assert res.err.startswith("error: ") and "Traceback" not in res.err


@pytest.mark.parametrize("name", COMMANDS)
def test_text_error_prints_nothing_on_stdout(name: str, tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", "[gate]\nctx_size = -1\n")
    res = run_cli("--root", str(root), name, *args_for(name, tmp_path))
    assert res.code == 2 and res.out == "" and res.err.startswith("error: ")


@pytest.mark.parametrize("name", COMMANDS)
def test_json_error_on_a_usage_error(name: str, run_cli: Any) -> None:
    res = run_cli(name, "--json", "--no-such-option")
    assert res.code == 2
    error = one_error(res.out)
    assert "no-such-option" in error["what"] and f"llamapin {name} --help" in error["fix"]


def test_usage_error_without_json_is_text_only(run_cli: Any) -> None:
    res = run_cli("verify", "--no-such-option", "--", "--json")
    assert res.code == 2 and res.out == "" and "See 'llamapin verify --help'" in res.err


def test_network_error_as_json(tmp_path: Path, run_cli: Any) -> None:
    res = run_cli("--root", str(project(tmp_path / "app")), "check", "--json")
    assert res.code == 2
    assert one_error(res.out)["what"]


# --- verify: a tampered bundle is a fail (1), no bundle is an environment error (2) ----------


def bundle(root: Path) -> Path:
    target = root / ".llamapin/engine"
    target.mkdir(parents=True)
    (target / "llama-server").write_bytes(b"\x7fELF not really an engine")
    (target / "libggml.so.0").write_bytes(b"a library")
    manifest = Manifest(
        key="k",
        pin={"build": "b10068"},
        source={},
        binary="llama-server",
        files=file_table(target),
        closure={"libs": ["libggml.so.0"], "format": "elf"},
    )
    (target / MANIFEST).write_text(manifest.to_json())
    return target


def test_verify_exit_codes_and_json(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app")
    missing = run_cli("--root", str(root), "verify", "--json")
    assert missing.code == 2 and "no valid manifest" in one_error(missing.out)["what"]
    target = bundle(root)
    ok = run_cli("--root", str(root), "verify", "--json")
    assert ok.code == 0, ok.err
    doc = json.loads(ok.out)
    assert doc["files"] == 2 and doc["pin"] == "b10068" and doc["bundle"] == str(target)
    assert doc["macos"] is None
    assert run_cli("--root", str(root), "verify").out.startswith("ok: 2 files")
    (target / "libggml.so.0").write_bytes(b"a library, tampered")
    bad = run_cli("--root", str(root), "verify", "--json")
    assert bad.code == 1, bad.err
    error = one_error(bad.out)
    assert "differs from its manifest" in error["what"] and "changed: libggml" in error["detail"]
    assert run_cli("--root", str(root), "verify").code == 1


# --- locators --------------------------------------------------------------------------------


def test_locators_none_configured(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app")
    res = run_cli("--root", str(root), "locators")
    assert res.code == 0
    assert "no locators configured" in res.out and "[[locators]]" in res.out and "ok" not in res.out
    doc = json.loads(run_cli("--root", str(root), "locators", "--json").out)
    assert doc == {"pin": "b10068", "locators": 0, "drift": []}


def test_locators_json_ok_drift_and_write(tmp_path: Path, run_cli: Any) -> None:
    locator = '[[locators]]\nfile = "v.ts"\nfield = "build"\nregex = "B = \\"(b\\\\d+)\\""\n'
    config = OFFLINE + locator
    root = project(tmp_path / "app", config)
    (root / "v.ts").write_text('const B = "b10068"\n')
    ok = run_cli("--root", str(root), "locators", "--json")
    assert ok.code == 0 and json.loads(ok.out) == {"pin": "b10068", "locators": 1, "drift": []}
    assert run_cli("--root", str(root), "locators").out.startswith("ok: 1 locator(s)")
    (root / "v.ts").write_text('const B = "b9999"\n')
    bad = run_cli("--root", str(root), "locators", "--json")
    assert bad.code == 1
    doc = json.loads(bad.out)
    assert len(doc["drift"]) == 1 and doc["error"]["fix"] == "Run 'llamapin locators --write'"
    text = run_cli("--root", str(root), "locators")
    assert text.code == 1 and "b9999" in text.out and "pin values drifted" in text.err
    wrote = run_cli("--root", str(root), "locators", "--write", "--json")
    assert wrote.code == 0 and json.loads(wrote.out) == {"pin": "b10068", "rewrote": ["v.ts"]}
    assert 'B = "b10068"' in (root / "v.ts").read_text()


def test_locator_that_matches_nothing_does_not_advise_a_more_specific_pattern(
    tmp_path: Path,
) -> None:
    (tmp_path / "v.ts").write_text("nothing here\n")
    pin = read_lock_text(tmp_path)
    with pytest.raises(LocatorError) as none:
        check_locators(tmp_path, [Locator("v.ts", "build", "regex", r'B = "(b\d+)"')], pin)
    assert "matched 0 times" in none.value.what and "more specific" not in none.value.fix
    (tmp_path / "v.ts").write_text('B = "b1"\nB = "b2"\n')
    with pytest.raises(LocatorError) as two:
        check_locators(tmp_path, [Locator("v.ts", "build", "regex", r'B = "(b\d+)"')], pin)
    assert "more specific" in two.value.fix


def read_lock_text(tmp_path: Path) -> Any:
    (tmp_path / "l.lock").write_text(LOCK)
    return read_lock(tmp_path / "l.lock")


# --- drift -----------------------------------------------------------------------------------


def test_drift_json_ok_and_fail(tmp_path: Path, run_cli: Any) -> None:
    config = OFFLINE + '[bundle]\nframeworks_file = "tauri.conf.json"\n'
    root = project(tmp_path / "app", config)
    bundle(root)
    listed = {"bundle": {"macOS": {"frameworks": ["libggml.so.0", "libx.dylib"]}}}
    (root / "tauri.conf.json").write_text(json.dumps(listed))
    ok = run_cli("--root", str(root), "drift", "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out) == {"listed": 1, "needed": [], "extra": [], "other_platforms": 1}
    text = run_cli("--root", str(root), "drift")
    assert "not compared: 1" in text.out and "ok: 1 listed" in text.out
    listed["bundle"]["macOS"]["frameworks"] = ["libother.so.1"]
    (root / "tauri.conf.json").write_text(json.dumps(listed))
    bad = run_cli("--root", str(root), "drift", "--json")
    assert bad.code == 1
    doc = json.loads(bad.out)
    assert doc["needed"] == ["libggml.so.0"] and doc["extra"] == ["libother.so.1"]
    assert doc["error"]["why"] == "1 missing, 1 extra"
    text = run_cli("--root", str(root), "drift")
    assert text.code == 1 and "needed but not listed: libggml.so.0" in text.out


# --- init ------------------------------------------------------------------------------------


def test_init_json(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app")
    res = run_cli("--root", str(root), "init", "--install", "llamapin==0.1.0", "--json")
    assert res.code == 0, res.err
    files = json.loads(res.out)["files"]
    assert {f["status"] for f in files} == {"wrote"} and len(files) == 2
    gate_yml = (root / files[0]["path"]).read_text() + (root / files[1]["path"]).read_text()
    assert "--report-json reports/gate.json" in gate_yml and " --json " not in gate_yml


# --- gate: the report options and the deprecated --json FILE ----------------------------------


def test_gate_json_file_and_report_json_together_are_refused(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app")
    res = run_cli("--root", str(root), "gate", "--json", "a.json", "--report-json", "b.json")
    assert res.code == 2 and "both --json FILE and --report-json FILE" in res.err
    assert res.out == ""  # --json FILE is the old report option, not JSON output


def test_gate_bare_json_reports_errors_as_json(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", OFFLINE + '[gate]\nsuite = "missing.toml"\n')
    res = run_cli("--root", str(root), "gate", "--json")
    assert res.code == 2
    one_error(res.out)


def test_gate_deprecated_json_file_says_so(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", OFFLINE + '[gate]\nsuite = "missing.toml"\n')
    res = run_cli("--root", str(root), "gate", "--json", str(tmp_path / "g.json"))
    assert res.code == 2 and "deprecated" in res.err and "--report-json" in res.err
    assert res.out == ""


# --- check: the real blocker is named --------------------------------------------------------


def screened(number: int, age: float, missing: tuple[str, ...], cooled: bool) -> Screened:
    build = Build(number, f"b{number}", datetime(2026, 11, 20, tzinfo=UTC))
    return Screened(build, age, missing, cooled)


def test_check_names_a_missing_asset_before_the_cooldown(tmp_path: Path) -> None:
    pin = read_lock_text(tmp_path)
    blocked = [
        screened(10090, 0.5, (), False),
        screened(10089, 5.0, ("macos-arm64: no asset",), True),
    ]
    d = decide(pin, blocked, 3.0, lambda b: None, lambda b: None, [])
    assert not d.bump
    assert d.reason.startswith("b10089 is past the cooldown but lacks an asset")
    assert "macos-arm64: no asset" in d.reason and "inside the 3-day cooldown" in d.reason
    young = decide(pin, blocked[:1], 3.0, lambda b: None, lambda b: None, [])
    assert young.reason.startswith("the newest complete build, b10090")


# --- progress lines in logs ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_meter_lines_in_a_log() -> None:
    out, clock = io.StringIO(), Clock()
    meter = progress.Meter("model.gguf", 3_000_000, stream=out, interval=10, clock=clock)
    meter.update(1_000_000)  # no time has passed: no line
    clock.now += 10
    meter.update(1_000_000)
    clock.now += 5
    meter.update(1_000_000)
    clock.now += 5
    meter.finish()
    assert out.getvalue().splitlines() == [
        "model.gguf: start (3.0 MB)",
        "model.gguf: 2.0 MB of 3.0 MB at 200.0 kB/s, 10 s",
        "model.gguf: done, 3.0 MB in 20.0 s (150.0 kB/s)",
    ]


def test_meter_unknown_size_and_terminal() -> None:
    out, clock = io.StringIO(), Clock()
    meter = progress.Meter("x", None, stream=out, interval=1, clock=clock)
    clock.now += 2
    meter.update(500)
    assert out.getvalue().splitlines() == ["x: start", "x: 500 B at 250 B/s, 2 s"]
    tty = Tty()
    quiet = progress.Meter("x", 10, stream=tty, clock=clock)
    quiet.update(10)
    quiet.finish()
    assert tty.getvalue() == "" and quiet.done == 10


def test_human_bytes() -> None:
    assert progress.human_bytes(999) == "999 B"
    assert progress.human_bytes(2_500_000_000) == "2.5 GB"


def test_is_log_of_closed_and_plain_streams() -> None:
    closed = io.StringIO()
    closed.close()
    assert progress.is_log(closed) is False
    assert progress.is_log(io.StringIO()) is True
    assert progress.is_log(Tty()) is False


def test_step_heartbeat_and_outcome() -> None:
    out = io.StringIO()
    with progress.step("cmake build", stream=out, interval=0.05):
        deadline = time.monotonic() + 30
        while "still running" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    lines = out.getvalue().splitlines()
    assert lines[0] == "cmake build: start"
    assert any(line.startswith("cmake build: still running") for line in lines)
    assert re.fullmatch(r"cmake build: done in \d+\.\d s", lines[-1])
    failed = io.StringIO()
    with pytest.raises(RuntimeError), progress.step("unpack x", stream=failed, interval=60):
        raise RuntimeError("boom")
    assert failed.getvalue().splitlines()[-1].startswith("unpack x: failed in ")
    assert threading.active_count() < 50
    tty = Tty()
    with progress.step("quiet", stream=tty, interval=0) as beat:
        beat()  # due at once, and still silent on a terminal
    assert tty.getvalue() == ""


def test_a_step_that_forks_beats_from_its_callers_loop_without_a_thread() -> None:
    """thread=False: no thread runs while lifetime.run forks; its tick writes the lines."""
    now = [100.0]
    out = io.StringIO()
    before = threading.active_count()
    with progress.step(
        "cmake build", stream=out, interval=15, clock=lambda: now[0], thread=False
    ) as beat:
        assert threading.active_count() == before
        for t in (5.0, 16.0, 20.0, 31.5):
            now[0] = 100.0 + t
            beat()
    assert out.getvalue().splitlines() == [
        "cmake build: start",
        "cmake build: still running, 16 s",
        "cmake build: still running, 32 s",
        "cmake build: done in 31.5 s",
    ]


# --- errors no site handled, Ctrl-C and signals: still one JSON document ---------------------


@pytest.fixture
def boom() -> Any:
    """A command on the real group that fails the way a bug, Ctrl-C or a signal would."""
    from llamapin.cli import json_option

    @cli.command("conventions-boom")
    @click.argument("kind")
    @json_option()
    def command(kind: str, as_json: bool) -> None:
        if kind == "abort":  # what click raises for Ctrl-C or end of input at a prompt
            raise click.Abort()
        if kind == "term":  # a real SIGTERM to this process, as CI sends on cancel
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        raise RuntimeError("first line\nsecond line")

    yield command
    cli.commands.pop("conventions-boom")


@pytest.mark.parametrize(
    ("kind", "what", "code"),
    [
        ("abort", "interrupted by the user", 130),
        ("term", "stopped (SIGTERM); engines and other child processes were stopped", 143),
        ("bug", "unexpected RuntimeError", 2),
    ],
)
def test_unhandled_failures_as_json(
    kind: str, what: str, code: int, boom: Any, run_cli: Any
) -> None:
    res = run_cli("conventions-boom", kind, "--json")
    assert res.code == code
    assert one_error(res.out)["what"] == what
    assert res.err.startswith("error: ") and res.err.count("\n") == 1
    text = run_cli("conventions-boom", kind)
    assert text.code == code and text.out == ""


def test_verify_with_authenticode_required(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path / "app", OFFLINE + "[bundle]\nrequire_authenticode = true\n")
    bundle(root)
    res = run_cli("--root", str(root), "verify", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["authenticode"] == []


def test_a_real_download_logs_start_and_end(
    tmp_path: Path, served: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import hashlib

    from llamapin.fetch import Cache, download

    body = b"x" * 300_000
    url = served.add("/parts/model.gguf.part1", body)
    blob = download(url, hashlib.sha256(body).hexdigest(), Cache(tmp_path / "c"), size=len(body))
    assert blob.read_bytes() == body
    lines = capsys.readouterr().err.splitlines()  # captured stderr is not a terminal
    assert "model.gguf.part1: start (300.0 kB)" in lines
    assert any(
        re.fullmatch(r"model\.gguf\.part1: done, 300\.0 kB in .* s \(.*/s\)", x) for x in lines
    )
