"""An engine's log reaches the user's terminal and the CI log through error details: it must
not carry escape sequences or lines that a CI runner obeys as workflow commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llamapin.errors import EngineError
from llamapin.inert import ZWSP, terminal
from llamapin.server import Server, ServerSpec

HOSTILE_LOG = (
    "printf 'loading\\n::add-mask::ghs_fake\\n  ::error file=x::pwned\\n"
    "\\033[2J\\033]0;retitled\\007\\033[31mred\\033[0m\\r::warning::cr\\n'"
)


def test_a_hostile_engine_log_prints_inert(tmp_path: Path) -> None:
    engine = tmp_path / "llama-server"
    engine.write_text(f"#!/bin/sh\n{HOSTILE_LOG}\nexit 3\n")
    engine.chmod(0o755)
    spec = ServerSpec(engine, tmp_path / "m.gguf", tmp_path / "engine.log", health_timeout_s=60)
    with pytest.raises(EngineError) as caught:
        Server(spec).start()
    printed = caught.value.render()
    assert "engine stopped: the engine exited with code 3" in printed.splitlines()[0]
    assert "\x1b" not in printed and "\x07" not in printed and "\r" not in printed
    assert not [line for line in printed.splitlines() if line.lstrip().startswith("::")]
    assert f"{ZWSP}::add-mask::ghs_fake" in printed  # still readable, no longer a command
    assert "red" in printed and "retitled" not in printed


def test_terminal_keeps_plain_text() -> None:
    text = "error: x: y. z\n  detail line: 1\n\tkey: value"
    assert terminal(text) == text
    assert re.fullmatch(r"a\nb", terminal("a\r\nb"))
