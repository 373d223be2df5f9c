"""A bad flag, choice or command is one line too, like every other error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--config", "{tmp}", "gate"],
            "error: Invalid value for '--config': File '{tmp}' is a directory. See '",
        ),
        (["gate", "--perf", "zz"], "error: Invalid value for '--perf': 'zz' is not one of"),
        (["nosuch"], "error: No such command 'nosuch'. See '"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "llamapin", "--root", str(tmp_path), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected.replace("{tmp}", str(tmp_path)))
    assert "Usage:" not in proc.stderr and "Traceback" not in proc.stderr
