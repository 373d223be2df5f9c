"""Hostile inputs: regexes that would backtrack for ever, limits that make no sense,
suite values of the wrong type, files that are not UTF-8 or nest too deeply, and
untrusted text (engine answers, build info, file names) in reports and PR bodies.

Everything here runs the real parsers, the real CLI (as a process where a hang is
the failure mode), real files, and renders real reports from real Verdict values.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from llamapin.config import Config, load_config
from llamapin.errors import ConfigError, LocatorError
from llamapin.gate.compare import Comparison
from llamapin.gate.suite import Assertion, check, load_suite, parse_suite
from llamapin.gate.verdict import Check, EngineInfo, PerfReport, PromptOutcome, Verdict
from llamapin.inert import ZWSP, code, sanitize, xml_text
from llamapin.pin import Asset, Pin, read_lock
from llamapin.report import junit, markdown
from llamapin.saferegex import asset_pattern, compile_user
from llamapin.upstream import bump as bp
from llamapin.upstream.assets import Lookup, resolve_asset
from llamapin.upstream.feeds import Build, FeedAsset
from llamapin.upstream.render import Summary
from llamapin.upstream.rules import Decision

LLAMAPIN = [sys.executable, "-m", "llamapin"]
EVIL = "(a+)+$"  # exponential in a backtracking engine on 'aaaa...ab'
EVIL_TEXT = "a" * 40 + "b"
# Generous: a backtracking engine needs about 2**40 steps (days); RE2 needs microseconds.
# The limit also covers starting Python and llamapin on a loaded shared CI machine.
DEADLINE_S = 300
COMPARE = "http://127.0.0.1:9/compare"
OFFLINE = 'index_url = "http://127.0.0.1:9/simple"\n'


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLAMAPIN, "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


# --- 5b: linear-time regexes ------------------------------------------------------------------


def test_catastrophic_locator_regex_returns_promptly_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "llamapin.toml").write_text(
        f'[[locators]]\nfile = "a.ts"\nfield = "build"\nregex = "(?P<value>{EVIL})"\n'
    )
    (tmp_path / "a.ts").write_text(EVIL_TEXT + "\n")
    done = run(tmp_path, "locators")  # a backtracking engine never returns: the timeout fails
    assert done.returncode == 2
    assert "matched 0 times" in one_error_line(done.stderr)


def test_catastrophic_suite_regex_returns_promptly(tmp_path: Path) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(f'[[prompt]]\ntext = "x"\nregex = "{EVIL}"\n')
    script = (
        "import sys\n"
        "from llamapin.gate.suite import check, load_suite\n"
        "a = load_suite(__import__('pathlib').Path(sys.argv[1])).prompts[0].assertions[0]\n"
        f"print(check(a, {EVIL_TEXT!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(suite)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=True,
    )
    assert done.stdout.strip() == f"does not match /{EVIL}/"


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\\1", r"invalid escape sequence: \1"),  # a backreference
        ("(?=a)b", "invalid perl operator: (?="),  # lookahead
        ("(?<!a)b", "invalid perl operator"),  # lookbehind
        ("(", "missing )"),
    ],
)
def test_unsupported_suite_regex_is_refused_when_the_suite_is_loaded(
    tmp_path: Path, pattern: str, why: str
) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(f'[[prompt]]\nname = "p1"\ntext = "x"\nregex = "{pattern}"\n')
    with pytest.raises(ConfigError) as info:
        load_suite(suite)
    line = info.value.line()
    assert str(suite) in line and "prompt 'p1'" in line and why in line
    assert "no backreferences" in line and "no lookaround" in line  # says what RE2 lacks
    assert "\n" not in line


def test_unsupported_locator_regex_is_refused_when_the_config_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "llamapin.toml").write_text(
        '[[locators]]\nfile = "never-read.ts"\nfield = "build"\n'
        "regex = '''(?P<value>b\\d+)(?=;)'''\n"
    )
    with pytest.raises(ConfigError, match=r"locators\.0.*invalid perl operator.*RE2"):
        load_config(tmp_path)
    done = run(tmp_path, "locators")  # the CLI: one line, exit 2, the file is never opened
    assert done.returncode == 2 and "no lookaround" in one_error_line(done.stderr)


def test_bad_asset_pattern_is_refused_when_the_config_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "llamapin.toml").write_text(
        '[upstream.asset_patterns]\nlinux-x64 = "llama-{tag}-(x)\\\\1"\n'
    )
    with pytest.raises(ConfigError, match=r"upstream\.asset_patterns\.linux-x64"):
        load_config(tmp_path)


def test_asset_patterns_match_whole_names_with_a_literal_tag() -> None:
    cfg = Config()
    build = Build(
        10,
        "b10",
        datetime(2026, 1, 1, tzinfo=UTC),
        assets=(
            FeedAsset("llama-b10-bin-ubuntu-x64.zip.sig", 1, "0" * 64, "u"),
            FeedAsset("llama-b10-bin-ubuntu-x64.tar.gz", 2, "1" * 64, "u"),
        ),
    )
    lookup = Lookup({a.name: a for a in build.assets}, [], [])
    asset, _ = resolve_asset("linux-x64", build, cfg, lookup)
    assert asset == Asset("llama-b10-bin-ubuntu-x64.tar.gz", "1" * 64, 2)
    # the alternation is anchored as a whole (a bare "a|b" + "$" would not be)
    pattern = asset_pattern("x-{tag}|y-{tag}", "b1.0", "t")
    assert pattern.search("y-b1.0") and not pattern.search("x-b1.0z")
    assert not pattern.search("x-b1x0")  # the tag is literal: '.' is not a wildcard


def test_safe_regex_wrapper() -> None:
    pattern = compile_user(r"v(?P<value>\d+)", "t", multiline=True)
    found = pattern.search("é\nv12")
    assert found is not None
    assert found.span("value") == (3, 5) and found.group("value") == "12"
    assert found.group() == "v12" and found.span() == (2, 5)
    assert [m.span(1) for m in pattern.finditer("v1 v22")] == [(1, 2), (4, 6)]
    assert pattern.groups == 1 and pattern.groupindex == {"value": 1}
    # a lone surrogate (JSON from an engine may hold one) cannot break matching
    lone = compile_user("a", "t").search("\ud800a")
    assert lone is not None and lone.span() == (1, 2)
    with pytest.raises(ConfigError, match="it is a int, not a string"):
        compile_user(7, "the test")
    with pytest.raises(LocatorError, match="bad regex"):
        compile_user("(", "the test", error=LocatorError)


# --- 5c: limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ("[bundle]\nmax_files = 0\n", "bundle.max_files"),
        ("[bundle]\nmax_bytes = -1\n", "bundle.max_bytes"),
        ("[gate]\nctx_size = 0\n", "gate.ctx_size"),
        ("[gate]\nthreads = 0\n", "gate.threads"),
        ("[gate]\nhealth_timeout_s = -5\n", "gate.health_timeout_s"),
        ("[gate]\nrequest_timeout_s = 0\n", "gate.request_timeout_s"),
        ("[gate]\nrequest_timeout_s = inf\n", "gate.request_timeout_s"),
        ("[gate]\nhealth_timeout_s = nan\n", "gate.health_timeout_s"),
        ("[gate]\ntop_n = 0\n", "gate.top_n"),
        ("[gate]\ninconclusive_exit = 256\n", "gate.inconclusive_exit"),
        ("[gate]\ninconclusive_exit = -1\n", "gate.inconclusive_exit"),
        ("[gate]\nmin_agreement = 1.5\n", "gate.min_agreement"),
        ("[gate]\nmax_divergence_kl = 0\n", "gate.max_divergence_kl"),
        ("[gate.perf]\ntolerance = 1.0\n", "gate.perf.tolerance"),
        ("[gate.perf]\nalpha = 0\n", "gate.perf.alpha"),
        ("[gate.perf]\nbeta = 1\n", "gate.perf.beta"),
        ("[gate.perf]\nmin_pairs = 0\n", "gate.perf.min_pairs"),
        ("[gate.perf]\nmin_pairs = 10\nmax_pairs = 5\n", "min_pairs (10) exceeds max_pairs (5)"),
        ("[gate.perf]\nbudget_s = 0\n", "gate.perf.budget_s"),
        ("[gate.perf]\nn_predict = -3\n", "gate.perf.n_predict"),
        ("[gate.perf]\nprompt_sentences = 0\n", "gate.perf.prompt_sentences"),
        ("[gate.perf]\nprompt_sentences = 101\n", "gate.perf.prompt_sentences"),
        (
            "[gate]\nctx_size = 512\n[gate.perf]\nprompt_sentences = 30\n",
            "need about 632 tokens, more than ctx_size (512)",
        ),
        ("[gate.perf]\nsigma_floor = 0\n", "gate.perf.sigma_floor"),
        ("[ensure]\ntimeout_s = 0\n", "ensure.timeout_s"),
        ("[engine]\nbuild_memory_per_job_gib = 0\n", "engine.build_memory_per_job_gib"),
        ("[upstream]\ncooldown_days = -1\n", "upstream.cooldown_days"),
        ("[upstream]\nmax_pages = 0\n", "upstream.max_pages"),
    ],
)
def test_zero_negative_and_non_finite_limits_are_refused(
    tmp_path: Path, toml: str, where: str
) -> None:
    (tmp_path / "llamapin.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert where in info.value.line()


def test_edge_limits_that_make_sense_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "llamapin.toml").write_text(
        "[upstream]\ncooldown_days = 0\n[gate]\ninconclusive_exit = 0\nthreads = 1\n"
        "min_agreement = 0\n[gate.perf]\nmin_pairs = 5\nmax_pairs = 5\n"
    )
    cfg = load_config(tmp_path)
    assert cfg.upstream.cooldown_days == 0 and cfg.gate.inconclusive_exit == 0
    assert cfg.gate.perf.min_pairs == cfg.gate.perf.max_pairs == 5


# --- 7: one line for every bad suite value ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('text = "x"\ncontains = "a"\nn_predict = "lots"', "n_predict must be a positive whole"),
        ('text = "x"\ncontains = "a"\nn_predict = 0', "n_predict must be a positive whole"),
        ('text = "x"\ncontains = "a"\nn_predict = true', "n_predict must be a positive whole"),
        ('text = "x"\nequals_number = "seven"', "equals_number must be a number"),
        ('text = "x"\nequals_number = nan', "equals_number must be a number"),
        ('text = "x"\nequals_number = true', "equals_number must be a number"),
        ('text = "x"\ncontains = true', "contains must be a non-empty string or a number"),
        ('text = "x"\ncontains = " "', "contains must be a non-empty string"),
        ('text = "x"\none_of = []', "one_of must be a non-empty list"),
        ('text = "x"\none_of = ["a", 3]', "one_of must be a non-empty list"),
        ('text = "x"\nregex = 3', "regex must be a string"),
        ('text = "x"\njson_equals = { when = 1979-05-27 }', "json_equals must be a TOML value"),
        ('text = "x"\njson_equals = [{ t = 07:32:00 }]', "json_equals must be a TOML value"),
        ('text = 3\ncontains = "a"', "text must be a string"),
        ('text = "x"\ncontains = "a"\nsystem = 3', "system must be a string"),
        ('text = "x"\ncontains = "a"\ncontain = "typo"', "unknown key(s) contain"),
        ('name = 3\ntext = "x"\ncontains = "a"', "has a name that is not a non-empty string"),
    ],
)
def test_wrong_suite_values_fail_when_loaded(tmp_path: Path, body: str, why: str) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(f"[[prompt]]\n{body}\n")
    with pytest.raises(ConfigError) as info:
        load_suite(suite)
    assert why in info.value.line() and "\n" not in info.value.line()


def test_suite_shapes_and_encodings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="entry 1 is a int, not a table"):
        parse_suite({"prompt": [1]}, "t")
    with pytest.raises(ConfigError, match="its name must be a string"):
        parse_suite({"name": [], "prompt": [{"text": "x", "contains": "a"}]}, "t")
    ok = parse_suite({"prompt": [{"text": "x", "contains": 7, "json_equals": {"a": [1.5]}}]}, "t")
    assert [a.kind for a in ok.prompts[0].assertions] == ["contains", "json_equals"]
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[[prompt]]\ntext = "café"\ncontains = "é"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="it is not UTF-8 text"):
        load_suite(latin1)
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError, match="invalid suite"):
        load_suite(deep)


def test_an_engine_answer_of_deeply_nested_json_is_a_failed_assertion() -> None:
    answer = "[" * 100_000 + "]" * 100_000
    assert check(Assertion("json_equals", [1]), answer) == "has JSON nested too deeply to read"


def test_a_bad_suite_fails_the_gate_before_any_download_or_engine(tmp_path: Path) -> None:
    (tmp_path / "llamapin.toml").write_text(f"[engine]\n{OFFLINE}")
    (tmp_path / "s.toml").write_text('[[prompt]]\ntext = "x"\nequals_number = "seven"\n')
    done = run(tmp_path, "gate", "--perf", "off", "--suite", str(tmp_path / "s.toml"))
    assert done.returncode == 2
    assert "equals_number must be a number" in one_error_line(done.stderr)
    assert not (tmp_path / ".llamapin").exists()  # no bundle, no logs: nothing started


# --- 7: shapes and encodings of the other files -------------------------------------------------


def test_deeply_nested_or_misshapen_files_are_one_line(tmp_path: Path) -> None:
    nested = "a = " + "[" * 100_000 + "]" * 100_000 + "\n"
    (tmp_path / "llamapin.toml").write_text(nested)
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path)
    (tmp_path / "llamapin.toml").unlink()
    (tmp_path / "pyproject.toml").write_text("tool = 5\n")  # not a table: no llamapin config
    assert load_config(tmp_path) == Config()
    lock = tmp_path / "llamapin.lock"
    lock.write_text(nested)
    with pytest.raises(ConfigError, match="cannot parse"):
        read_lock(lock)
    lock.write_text("pin = [1, 2]\n")
    with pytest.raises(ConfigError, match="cannot read the pin"):
        read_lock(lock)
    lock.unlink()  # the built-in pin from here on
    (tmp_path / "llamapin.toml").write_text(
        '[[locators]]\nfile = "a.json"\nfield = "build"\njson = "a.b"\n'
    )
    (tmp_path / "a.json").write_text("[" * 100_000 + "]" * 100_000)
    done = run(tmp_path, "locators")
    assert done.returncode == 2 and "cannot parse a.json" in one_error_line(done.stderr)


# --- 7: the last-resort handler -----------------------------------------------------------------

BOOM = """
import sys
import click
from llamapin.cli import cli, main

@cli.command("boom")
@click.argument("kind")
@click.argument("path")
def boom(kind: str, path: str) -> None:
    if kind == "decode":
        open(path, encoding="utf-8").read()
    elif kind == "dir":
        open(path, "w")
    elif kind == "abort":  # what click raises for Ctrl-C or end of input at a prompt
        raise click.Abort()
    else:
        raise RuntimeError("first line\\nsecond line")

main()
"""


@pytest.mark.parametrize(
    ("kind", "want", "code"),
    [
        ("decode", "is not UTF-8 text: byte 0 cannot be decoded", 2),
        ("dir", "Is a directory", 2),
        ("bug", "unexpected RuntimeError: first line second line. This is a bug in llamapin", 2),
        ("abort", "error: interrupted by the user; engines were stopped", 130),
    ],
)
def test_an_error_no_site_handled_is_still_one_line(
    tmp_path: Path, kind: str, want: str, code: int
) -> None:
    target = tmp_path / "x"
    if kind == "dir":
        target.mkdir()
    else:
        target.write_bytes(b"\xff\xfe")
    # a real process running the real main(), with a command that fails the way a bug would
    done = subprocess.run(
        [sys.executable, "-c", BOOM, "boom", kind, str(target)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == code
    assert want in one_error_line(done.stderr) and len(done.stderr.splitlines()) == 1


# --- 8: untrusted text is inert -----------------------------------------------------------------

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "![x](http://evil.example/p.png)",
    "[click](http://evil.example)",
    "@org/team please look",
    "</details><details open>",
    "`code` and ``` fences",
    "first\n# Injected heading\n| fake | row |",
    "https://evil.example/autolink www.evil.example",
    "\x1b[31mred\x00nul\ud800lone\u202ereversed",
]


def assert_inert_markdown(text: str) -> str:
    """Render as GitHub would (CommonMark, tables, raw HTML allowed) and look for anything live."""
    html: str = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    for live in ("<img", "<details", "</details", "<h1", "<script", "\x1b", "\x00", "\u202e"):
        assert live not in html, (live, html)
    assert set(re.findall(r"<a [^>]*>", html)) <= {f'<a href="{COMPARE}">'}  # only our own link
    assert "Injected" not in "".join(re.findall(r"<h\d>.*?</h\d>", html))  # no injected heading
    plain = html.replace(COMPARE, "")
    assert not re.search(r"@(?!\u200b)", plain)  # no mention survives (GitHub links them)
    assert not re.search(r"(?i)https?:(?!\u200b)|www\.", plain)  # no autolink either
    return html


def hostile_verdict() -> Verdict:
    evil = "\n".join(HOSTILE)
    return Verdict(
        "fail",
        [f"prompt 'p': answer {evil}"],
        [Check("provenance", "fail", f"/props build_info {evil!r}"), Check(evil, "pass", evil)],
        [
            PromptOutcome(
                evil,
                "chat",
                evil,
                [f"contains {evil!r}"],
                evil,
                [evil],
                Comparison(0.5, 3, 4, 0.1, 0.2, 0.5),
                evil,
            )
        ],
        [EngineInfo("candidate", "/x/llama-server", evil, 1.0, 2**20)],
        PerfReport("off", "skip", evil),
        f"model`{evil}",
        f"suite`{evil}",
        1.0,
        "b1 (" + "0" * 40 + ")",
    )


def test_report_markdown_from_a_hostile_verdict_is_inert() -> None:
    text = markdown(hostile_verdict())
    html = assert_inert_markdown(text)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown as text, not run
    assert text.startswith("## llamapin gate: ❌ FAIL\n")
    assert f"@{ZWSP}org/team" in text


def test_junit_from_a_hostile_verdict_is_well_formed_and_inert() -> None:
    text = junit(hostile_verdict())
    root = ET.fromstring(text)  # NUL, ESC and a lone surrogate would make it unreadable
    assert root.get("failures") == "2" and root.get("tests") == "4"
    failure = next(f for f in root.iter("failure") if (f.text or "").startswith("prompt:"))
    assert failure.text is not None
    assert "<img src=x" in failure.text  # plain text in XML: ElementTree escaped it
    for line in failure.text.splitlines():
        assert line.startswith(("prompt:", "expected:", "answer:"))  # no injected lines
    assert "@org" not in text and "\x1b" not in text and "\u202e" not in text


def test_pr_body_with_hostile_asset_names_and_engine_text_is_inert() -> None:
    evil = "\n".join(HOSTILE)
    old = Pin("b1", "0" * 40, {"linux-x64": Asset("llama-b1.zip", "1" * 64, 1)})
    new = Pin("b2", "2" * 40, {f"k|{evil}": Asset(f"n`{evil}", "3" * 64, 2)})
    decision = Decision(True, None, evil, [])
    summary = Summary(COMPARE, 2, {evil: [evil]}, [evil], [evil], [], [])
    body = bp.pr_body(old, new, decision, summary, "no change", hostile_verdict(), [evil])
    html = assert_inert_markdown(body)
    asset_table = html.split("<th>sha256</th>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", asset_table, re.DOTALL)
    assert len(rows) == 1 and rows[0].count("<td>") == 4  # the hostile row keeps its 4 cells
    assert "<td><code>n'&lt;img src=x onerror=alert(1)&gt;" in rows[0]  # the name, as code


def test_inert_helpers() -> None:
    assert code("a`b|c\n@d") == f"a'b\\|c @{ZWSP}d"
    assert code("x" * 10, limit=5) == "xxxx…"
    assert xml_text("ok\x00\x1b\ud800\u202e\n\tend") == "ok\n\tend"
    assert sanitize("# h") == "\\# h"
    assert math.isfinite(len(xml_text("y" * 30_000)))
    assert len(xml_text("y" * 30_000)) == 20_000
