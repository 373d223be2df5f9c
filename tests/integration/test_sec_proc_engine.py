"""The real llama-server gets no secret, and never outlives llamapin, whatever signal CI
(or a person) sends to the gate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from llamapin.server import Server, ServerSpec
from tests.integration import test_gate
from tests.integration.test_ensure import WHEEL_PIN, project

pytestmark = pytest.mark.engine
bundle = test_gate.bundle  # the real b10068 engine, installed by ensure (a fixture)
engine_pids = test_gate.engine_pids

SECRETS = {
    "GITHUB_TOKEN": "ghs_engine_must_not_see_this",
    "LLAMAPIN_BUMP_TOKEN": "bump_engine_must_not_see_this",
    "AWS_SECRET_ACCESS_KEY": "aws_engine_must_not_see_this",
    "ACTIONS_RUNTIME_TOKEN": "actions_engine_must_not_see_this",
}


def test_real_engine_environment_has_no_secret(
    tmp_path: Path, model: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    log = tmp_path / "engine.log"
    spec = ServerSpec(binary=bundle / "llama-server", model=model, log=log, health_timeout_s=600)
    with Server(spec) as server:
        assert server.proc is not None
        raw = Path(f"/proc/{server.proc.pid}/environ").read_bytes().decode()
    env = dict(item.partition("=")[::2] for item in raw.split("\0") if item)
    assert not set(SECRETS) & set(env)
    for value in SECRETS.values():
        assert value not in raw
    assert env["PATH"] == os.environ["PATH"]


def start_gate(root: Path, bundle: Path) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    """The real CLI gating the real engine; returns once its candidate engine is healthy."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llamapin",
            "--root",
            str(root),
            "gate",
            "--engine",
            str(bundle),
            "--perf",
            "aa",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **SECRETS},
    )
    deadline = time.monotonic() + 600  # a loaded machine: it returns as soon as one is healthy
    while time.monotonic() < deadline and proc.poll() is None:
        kids = test_gate.engine_kids(proc.pid)
        if kids and healthy(kids[0]):
            return proc, kids
        time.sleep(0.2)
    proc.kill()
    _, err = proc.communicate(timeout=60)
    raise AssertionError(f"the gate's engine never became healthy: {err[-3000:]}")


def healthy(engine: psutil.Process) -> bool:
    try:
        args = engine.cmdline()
        port = args[args.index("--port") + 1]
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except (psutil.Error, ValueError, IndexError, httpx.HTTPError):
        return False


def gone(kids: list[psutil.Process], deadline_s: float = 60.0) -> bool:
    psutil.wait_procs(kids, timeout=deadline_s)
    return not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_to_the_gate_stops_every_engine(
    tmp_path: Path, bundle: Path, model: Path, sig: int
) -> None:
    root = project(tmp_path / "app", WHEEL_PIN, gate=test_gate.SLOW_MACHINE)
    before = engine_pids()
    proc, kids = start_gate(root, bundle)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and signal.Signals(sig).name in last
    assert "Traceback" not in err
    assert gone(kids)
    # An engine the gate was starting when the signal came (the A/A baseline, or a fresh
    # process pair of a later perf round) is not in ``kids``; the parent-death signal ends
    # it as llamapin exits, a moment after communicate() returns.
    deadline = time.monotonic() + 60
    while not engine_pids() <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine_pids() <= before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_engines_die_when_the_gate_is_killed_outright(
    tmp_path: Path, bundle: Path, model: Path
) -> None:
    """SIGKILL leaves llamapin no chance to clean up: the parent-death signal does it."""
    root = project(tmp_path / "app", WHEEL_PIN, gate=test_gate.SLOW_MACHINE)
    proc, kids = start_gate(root, bundle)
    proc.kill()
    proc.communicate(timeout=60)
    assert gone(kids)
