"""lifetime.run: a command that is done while something it started still holds its output
pipe open is not waited for; what it left behind is stopped (a real shell and a real
background process)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil

from llamapin import lifetime


def test_a_leftover_holding_the_pipe_is_stopped(tmp_path: Path) -> None:
    pidfile = f"{tmp_path}/leftover.pid"
    began = time.monotonic()
    proc = lifetime.run(
        ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo done"],
        env={"PATH": os.environ["PATH"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout == "done\n"
    assert time.monotonic() - began < 100  # not the leftover's 300 s
    with open(pidfile) as handle:
        pid = int(handle.read())
    try:
        leftover = psutil.Process(pid)
        leftover.wait(timeout=30)
    except psutil.NoSuchProcess:
        pass
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
