"""Property: malformed config, lock, suite and locator files, fed to every command of the
real CLI (its real ``main``, in this process), end in exit 2 and one error line, never a
traceback. Every URL points at 127.0.0.1:9 (discard: refused), so nothing leaves the machine,
and every input is broken in a file the command reads before it would touch the network.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamapin.cli import main

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
GOOD_LOCK = (
    '[pin]\nbuild = "b10068"\ncommit = "571d0d540df04f25298d0e159e520d9fc62ed121"\n'
    '[pin.assets.x]\nname = "a.zip"\nsha256 = "' + "0" * 64 + '"\n'
)
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- what can be wrong with any file --------------------------------------------------------

text = st.text(alphabet="abc xyz=[]{}\"'.,#\n0123456789", max_size=40)
not_utf8 = st.tuples(st.binary(max_size=30), st.binary(max_size=30)).map(
    lambda p: p[0] + b"\xff\xfe\xc3" + p[1]
)
bad_toml = text.map(lambda t: (t + "\n= [ oops\n").encode())
too_deep = st.integers(1500, 4000).map(lambda n: ("a = " + "[" * n + "]" * n + "\n").encode())
wrong_value = st.sampled_from(["-1", "-7.5", '"lots"', "[1, 2]", "{ a = 1 }", "-inf", "nan"])
scalar = st.sampled_from(["5", '"x"', "[1]", "true", "1979-05-27"])
any_file = st.one_of(not_utf8, bad_toml, too_deep)

# --- per file: shapes that parse but are wrong ----------------------------------------------

NUMERIC_KEYS = [
    ("bundle", "max_files"),
    ("bundle", "max_bytes"),
    ("gate", "ctx_size"),
    ("gate", "threads"),
    ("gate", "health_timeout_s"),
    ("gate", "inconclusive_exit"),
    ("gate.perf", "alpha"),
    ("gate.perf", "n_predict"),
    ("ensure", "timeout_s"),
    ("upstream", "max_pages"),
    ("upstream", "cooldown_days"),
]
BAD_REGEXES = ["(", "(?P<value>a)\\\\1", "(?P<value>a)(?=b)", "[", "(?P<value>a{2000}{2000})"]
config_file = st.one_of(
    any_file,
    st.tuples(st.sampled_from(NUMERIC_KEYS), wrong_value).map(
        lambda kv: f"[{kv[0][0]}]\n{kv[0][1]} = {kv[1]}\n".encode()
    ),
    st.tuples(st.sampled_from(["engine", "bundle", "gate", "upstream", "forge"]), scalar).map(
        lambda sv: f"{sv[0]} = {sv[1]}\n".encode()
    ),
    st.from_regex(r"[a-z]{3,8}_typo", fullmatch=True).map(lambda k: f"{k} = 1\n".encode()),
    st.sampled_from(BAD_REGEXES).map(
        lambda r: f'[[locators]]\nfile = "a.ts"\nfield = "build"\nregex = "{r}"\n'.encode()
    ),
    scalar.map(lambda v: f"locators = {v}\n".encode()),
)
lock_file = st.one_of(
    any_file,
    scalar.map(lambda v: f"pin = {v}\n".encode()),
    st.sampled_from(['"1"', '"bX"', "5", "[1]", '"b-1"']).map(
        lambda b: GOOD_LOCK.replace('"b10068"', b).encode()
    ),
    st.sampled_from(['"xyz"', "7", '"' + "A" * 40 + '"']).map(
        lambda c: GOOD_LOCK.replace('"571d0d540df04f25298d0e159e520d9fc62ed121"', c).encode()
    ),
    st.sampled_from(['"../../x"', "1", '"' + "g" * 64 + '"']).map(
        lambda s: GOOD_LOCK.replace('"' + "0" * 64 + '"', s).encode()
    ),
    st.just(b"x = 1\n"),
)
suite_file = st.one_of(
    any_file,
    scalar.map(lambda v: f"prompt = {v}\n".encode()),
    st.sampled_from(
        [
            'text = "x"\ncontains = "a"\nn_predict = "lots"',
            'text = "x"\nequals_number = "seven"',
            'text = "x"\nregex = "(a)\\\\1"',
            'text = "x"\none_of = []',
            'text = "x"\ncontains = "a"\nbogus = 1',
            'contains = "a"',
            'text = "x"',
            'text = "x"\ncontains = "a"\nendpoint = "grpc"',
        ]
    ).map(lambda body: f"[[prompt]]\n{body}\n".encode()),
)
json_locator_file = st.one_of(
    not_utf8,
    text.map(lambda t: ("{" + t).encode()),  # never valid JSON
    st.integers(1500, 4000).map(lambda n: ("[" * n + "]" * n).encode()),
    st.sampled_from(['{"a": {"c": "b1"}}', '{"a": {"b": 5}}', '{"a": ["b"]}', "[1, 2]", "7"]).map(
        str.encode
    ),
)

# --- the commands, and which files each reads first ----------------------------------------

EVERY = [
    ["ensure"],
    ["verify"],
    ["gate", "--perf", "off"],
    ["locators"],
    ["drift"],
    ["archs"],
    ["check"],
    ["bump"],
    ["init"],
    ["check-model", "m.gguf"],
]
READ_THE_LOCK = [c for c in EVERY if c[0] not in ("verify", "drift", "init")]


def invoke(root: Path, args: list[str]) -> tuple[int, str]:
    """The real ``main`` as the console script runs it; (exit code, stderr)."""
    err, out = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = [
        "llamapin",
        "--root",
        str(root),
        *(str(root / a) if a == "m.gguf" else a for a in args),
    ]
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.argv = argv
    return code, err.getvalue()


def assert_one_line(code: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr


def project(files: dict[str, bytes]) -> contextlib.AbstractContextManager[str]:
    tmp = tempfile.TemporaryDirectory(prefix="llamapin-bad-")
    root = Path(tmp.name)
    (root / "m.gguf").write_bytes(b"GGUF")
    for name, data in files.items():
        (root / name).write_bytes(data)
    return tmp


@pytest.mark.parametrize("args", EVERY, ids=lambda a: a[0])
@SETTINGS
@given(bad=config_file)
def test_a_malformed_config(args: list[str], bad: bytes) -> None:
    with project({"llamapin.toml": bad}) as root:
        assert_one_line(*invoke(Path(root), args))


@pytest.mark.parametrize("args", READ_THE_LOCK, ids=lambda a: a[0])
@SETTINGS
@given(bad=lock_file)
def test_a_malformed_lock(args: list[str], bad: bytes) -> None:
    with project({"llamapin.toml": OFFLINE.encode(), "llamapin.lock": bad}) as root:
        assert_one_line(*invoke(Path(root), args))


@pytest.mark.parametrize("in_config", [False, True], ids=["--suite", "gate.suite"])
@SETTINGS
@given(bad=suite_file)
def test_a_malformed_suite(in_config: bool, bad: bytes) -> None:
    config = OFFLINE + ('[gate]\nsuite = "s.toml"\n' if in_config else "")
    files = {"llamapin.toml": config.encode(), "llamapin.lock": GOOD_LOCK.encode(), "s.toml": bad}
    with project(files) as root:
        args = ["gate", "--perf", "off"] + ([] if in_config else ["--suite", f"{root}/s.toml"])
        assert_one_line(*invoke(Path(root), args))
        assert not (Path(root) / ".llamapin").exists()  # refused before ensure or any engine


LOCATOR = '[[locators]]\nfile = "a.json"\nfield = "build"\njson = "a.b"\n'


@pytest.mark.parametrize("args", [["locators"], ["locators", "--write"]], ids=["check", "write"])
@SETTINGS
@given(bad=json_locator_file)
def test_a_malformed_locator_file(args: list[str], bad: bytes) -> None:
    files = {"llamapin.toml": (OFFLINE + LOCATOR).encode(), "a.json": bad}
    with project(files) as root:
        assert_one_line(*invoke(Path(root), args))
        assert (Path(root) / "a.json").read_bytes() == bad  # never rewritten
