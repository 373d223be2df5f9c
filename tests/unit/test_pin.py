from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamapin.errors import ConfigError, LocatorError
from llamapin.pin import (
    Asset,
    Locator,
    Pin,
    build_number,
    check_locators,
    pin_from_dict,
    pin_to_dict,
    read_locator,
    read_lock,
    rewrite_text,
    with_asset,
    write_locators,
    write_lock,
)

COMMIT = "571d0d540df04f25298d0e159e520d9fc62ed121"
SHA = "e2b5c19fa9097f326c65a1a14ebeaad71db20ba148c07aa8d435d13f854e5463"
PIN = Pin(
    "b10068",
    COMMIT,
    {
        "macos-arm64": Asset(
            "llama-b10068-bin-macos-arm64.tar.gz", SHA, 5, "https://example.invalid/a"
        )
    },
)

TS = """// engine pin
export const LLAMA_CPP_TAG = 'b9590';
export const LLAMA_CPP_SHA256 = 'aaaa';
const other = 'b9590-not-this';
"""


def test_build_number_orders_numerically() -> None:
    assert build_number("b10068") > build_number("b9590")
    with pytest.raises(ConfigError, match="bad build id"):
        build_number("10068")


@given(st.integers(0, 10**7), st.integers(0, 10**7))
def test_build_ids_order_by_number_never_by_text(a: int, b: int) -> None:
    assert (build_number(f"b{a}") < build_number(f"b{b}")) == (a < b)


@given(st.text(max_size=12))
def test_anything_that_is_not_a_build_id_is_our_own_error(text: str) -> None:
    if re.fullmatch(r"b\d+", text, re.ASCII):
        assert build_number(text) == int(text[1:])
    else:
        with pytest.raises(ConfigError, match="bad build id"):
            build_number(text)


def test_lock_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "llamapin.lock"
    write_lock(path, PIN)
    assert read_lock(path) == PIN
    assert path.read_text().startswith("# llamapin.lock")
    plain = Pin("b1", COMMIT, {"x": Asset("n", SHA)})
    assert pin_from_dict(pin_to_dict(plain), "t") == plain


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({}, "cannot read the pin"),
        ({"pin": {"build": "b1", "commit": "abc"}}, "bad commit"),
        ({"pin": {"build": "x1", "commit": COMMIT}}, "bad build id"),
        (
            {
                "pin": {
                    "build": "b1",
                    "commit": COMMIT,
                    "assets": {"a": {"name": "n", "sha256": "zz"}},
                }
            },
            "bad sha256",
        ),
    ],
)
def test_bad_pins_are_refused(data: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        pin_from_dict(data, "test")


def test_read_lock_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no lock file"):
        read_lock(tmp_path / "missing.lock")
    bad = tmp_path / "bad.lock"
    bad.write_text("[pin\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        read_lock(bad)


def test_pin_fields() -> None:
    assert PIN.get("build") == "b10068"
    assert PIN.get("build_number") == "10068"
    assert PIN.get("commit") == COMMIT
    assert PIN.get("assets.macos-arm64.sha256") == SHA
    assert PIN.get("assets.macos-arm64.size") == "5"
    assert Pin("b1", COMMIT, {"k": Asset("n", SHA)}).get("assets.k.url") == ""
    with pytest.raises(ConfigError, match="unknown pin field"):
        PIN.get("assets.macos-arm64.colour")
    with pytest.raises(ConfigError, match="has no asset 'linux-x64'"):
        PIN.asset("linux-x64")
    assert with_asset(PIN, "k", Asset("n", SHA)).assets["k"].name == "n"


def test_regex_locator_rewrites_only_the_value(tmp_path: Path) -> None:
    (tmp_path / "ensure.ts").write_text(TS)
    loc = Locator("ensure.ts", "build", "regex", r"LLAMA_CPP_TAG = '(?P<value>b\d+)'")
    sha = Locator(
        "ensure.ts", "assets.macos-arm64.sha256", "regex", r"LLAMA_CPP_SHA256 = '([0-9a-f]*)'"
    )
    assert read_locator(tmp_path, loc) == "b9590"
    assert check_locators(tmp_path, [loc, sha], PIN) == [
        "ensure.ts: build is 'b9590', llamapin.lock says 'b10068'",
        f"ensure.ts: assets.macos-arm64.sha256 is 'aaaa', llamapin.lock says '{SHA}'",
    ]
    assert write_locators(tmp_path, [loc, sha], PIN) == ["ensure.ts"]
    assert (tmp_path / "ensure.ts").read_text() == TS.replace(
        "TAG = 'b9590'", "TAG = 'b10068'"
    ).replace("'aaaa'", f"'{SHA}'")
    assert check_locators(tmp_path, [loc, sha], PIN) == []
    assert write_locators(tmp_path, [loc], PIN) == []


def test_json_and_toml_locators(tmp_path: Path) -> None:
    conf = {"bundle": {"externalBin": ["x"]}, "engine": {"tag": "b9590", "note": "b9590"}}
    text = json.dumps(conf, indent=2) + "\n"
    (tmp_path / "tauri.conf.json").write_text(text)
    loc = Locator("tauri.conf.json", "build", "json", "engine.tag")
    assert read_locator(tmp_path, loc) == "b9590"
    write_locators(tmp_path, [loc], PIN)
    assert (tmp_path / "tauri.conf.json").read_text() == text.replace(
        '"tag": "b9590"', '"tag": "b10068"'
    )
    toml_text = '[engine]\ncommit = "abc"  # keep me\n'
    (tmp_path / "p.toml").write_text(toml_text)
    tloc = Locator("p.toml", "commit", "toml", "engine.commit")
    write_locators(tmp_path, [tloc], PIN)
    assert (tmp_path / "p.toml").read_text() == f'[engine]\ncommit = "{COMMIT}"  # keep me\n'


@pytest.mark.parametrize(
    ("name", "text", "kind", "expr", "match"),
    [
        ("a.ts", "const A = 'b1';\nconst A = 'b1';\n", "regex", r"A = '(b\d+)'", "matched 2"),
        ("a.ts", "const A = 'b1';\n", "regex", r"A = 'b\d+'", "no capture group"),
        ("a.ts", "x", "regex", r"(", "bad regex"),
        ("a.json", '{"a": {"b": "v"}, "c": {"b": "v"}}', "json", "a.b", "ambiguous"),
        ("a.json", '{"a": 1}', "json", "a", "points at a int"),
        ("a.json", '{"a": {}}', "json", "a.b", "found nothing"),
        ("a.json", "{", "json", "a", "cannot parse"),
        ("a.toml", "a = [", "toml", "a", "cannot parse"),
    ],
)
def test_locator_errors(
    tmp_path: Path, name: str, text: str, kind: str, expr: str, match: str
) -> None:
    (tmp_path / name).write_text(text)
    loc = Locator(name, "build", kind, expr)  # type: ignore[arg-type]
    with pytest.raises(LocatorError, match=match):
        read_locator(tmp_path, loc)


def test_locator_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LocatorError, match="does not exist"):
        write_locators(tmp_path, [Locator("nope.ts", "build", "regex", "(x)")], PIN)


@given(
    before=st.text(alphabet=st.characters(blacklist_characters="'\r"), max_size=40),
    after=st.text(alphabet=st.characters(blacklist_characters="'\r"), max_size=40),
    number=st.integers(min_value=1, max_value=99999),
)
def test_rewrite_changes_only_the_pin_bytes(before: str, after: str, number: int) -> None:
    text = f"{before}\nconst LLAMA_CPP_TAG = 'b1';\n{after}"
    if text.count("LLAMA_CPP_TAG = '") != 1:
        return
    loc = Locator("f", "build", "regex", r"LLAMA_CPP_TAG = '(b\d+)'")
    out = rewrite_text(text, loc, f"b{number}")
    assert out == text.replace("LLAMA_CPP_TAG = 'b1'", f"LLAMA_CPP_TAG = 'b{number}'")
