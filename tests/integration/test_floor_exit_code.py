"""The CPU floor smoke reads a dying engine's status only once the process is reaped: a
request can fail an instant before that (under load the window is wide), and reading
``returncode`` at once missed the SIGILL. Real processes: the stand-in server compiled from
test_floor_emulation's source, natively."""

from __future__ import annotations

import signal
from pathlib import Path

from llamapin.gate.floors import exit_code
from llamapin.server import Server, ServerSpec
from tests.integration.test_floor_emulation import build


def spec(tmp: Path, binary: Path) -> ServerSpec:
    model = tmp / "model.gguf"
    model.write_bytes(b"GGUF")
    return ServerSpec(binary=binary, model=model, log=tmp / "engine.log", health_timeout_s=60)


def test_exit_code_waits_for_a_dying_engine_and_not_for_a_live_one(tmp_path: Path) -> None:
    server = Server(spec(tmp_path, build(tmp_path, "plain")))
    assert exit_code(server) is None  # never started: nothing to wait for
    server.start()
    try:
        assert exit_code(server, grace_s=0.5) is None  # alive: not waited for past the grace
        assert server.proc is not None
        server.proc.send_signal(signal.SIGILL)
        assert exit_code(server) == -signal.SIGILL  # reaped, whatever the timing
    finally:
        server.stop()
