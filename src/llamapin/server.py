"""One llama-server process: start on a free loopback port, wait for /health,
capture its log, always stop it (and its children), and say why when it dies.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import psutil

from llamapin import lifetime
from llamapin.errors import EngineError
from llamapin.fetch import no_tls, stat_stamp
from llamapin.procenv import env_for

SIGNALS = {
    signal.SIGILL: "illegal instruction: the build uses CPU features this machine lacks "
    "(use a build for an older CPU, or build from source here)",
    signal.SIGSEGV: "segmentation fault: the engine crashed",
    signal.SIGBUS: "bus error: the engine crashed (often a truncated model file)",
    signal.SIGABRT: "aborted: the engine hit an internal assertion",
    signal.SIGKILL: "killed (SIGKILL): most often the out-of-memory killer",
    signal.SIGTERM: "terminated (SIGTERM) by something other than llamapin",
}
MISSING_LIB = re.compile(
    r"error while loading shared libraries: ([^:\s]+)|Library not loaded: (\S+)"
)
UNKNOWN_ARCH = re.compile(r"unknown model architecture: '([^']*)'")
LOAD_FAIL = re.compile(r"(error loading model[^\n]*|failed to load model[^\n]*)", re.IGNORECASE)
BIND_FAIL = re.compile(r"couldn't bind|address already in use", re.IGNORECASE)
PORT_TAKEN = "the port was taken before the engine could bind it"


def diagnose_exit(returncode: int, log: str, model_arch: str | None) -> str:
    """One line: why the engine stopped, from its exit status and its log."""
    lib = MISSING_LIB.search(log)
    if lib:
        name = lib.group(1) or lib.group(2)
        return f"the loader cannot find the shared library {name} (the bundle is incomplete)"
    arch = UNKNOWN_ARCH.search(log)
    if arch:
        header = f" (the GGUF header says '{model_arch}')" if model_arch else ""
        return (
            f"unknown model architecture '{arch.group(1)}'{header}: this engine build "
            "predates it; a newer pin is needed"
        )
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"killed by signal {-returncode}"
        return f"killed by {sig.name}: " + SIGNALS.get(sig, "the engine was killed")
    load = LOAD_FAIL.search(log)
    if load:
        return f"the model failed to load ({load.group(1).strip()})"
    if BIND_FAIL.search(log):
        return PORT_TAKEN
    return f"the engine exited with code {returncode}"


def port_held(port: int) -> bool:
    """Whether some process listens on the loopback ``port`` (a bind fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ServerSpec:
    binary: Path
    model: Path
    log: Path
    ctx_size: int = 2048
    threads: int | None = None
    extra_args: list[str] = field(default_factory=list)
    health_timeout_s: float = 300.0
    model_arch: str | None = None
    label: str = "engine"
    port: int | None = None  # None: a free loopback port
    bind_attempts: int = 3
    # Run the engine under another program, e.g. ["qemu-x86_64", "-cpu", "Nehalem"]
    prefix: list[str] = field(default_factory=list)
    # Settings the engine reads from its environment (LLAMA_ARG_*); its command line wins.
    env: dict[str, str] = field(default_factory=dict)


DEVICES_HEADER = "Available devices:"


@functools.cache
def _devices(binary: str, stamp: tuple[int, ...], timeout: float) -> tuple[str, ...] | None:
    try:
        proc = lifetime.run(
            [binary, "--list-devices"],
            env=env_for("engine"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout[-65536:].decode("utf-8", "replace")
    if proc.returncode != 0 or DEVICES_HEADER not in text:
        return None  # a build from before --list-devices (and before --fit)
    listed = text.split(DEVICES_HEADER, 1)[1].splitlines()
    return tuple(line.strip()[:200] for line in listed if line.strip())


def accelerators(binary: Path, timeout: float = 60.0) -> tuple[str, ...] | None:
    """The devices this engine would offload to (``--list-devices``; the CPU is not listed),
    or None when the build cannot say. Asked once per binary (any change of the file asks
    again) in each llamapin process."""
    try:
        info = binary.stat()
    except OSError:  # no binary: starting it says so
        return None
    return _devices(str(binary), tuple(stat_stamp(info)), timeout)


def fit_env(mode: Literal["auto", "on", "off"], binary: Path) -> dict[str, str]:
    """The environment that sets llama.cpp's --fit for ``gate.fit`` (a command-line -fit in
    gate.server_args still wins). auto: off when the engine lists no accelerator."""
    if mode == "auto":
        return {"LLAMA_ARG_FIT": "off"} if accelerators(binary) == () else {}
    return {"LLAMA_ARG_FIT": mode}


class Server:
    """A running llama-server. Use as a context manager: it is always stopped."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.load_time_s = 0.0
        self._log_handle: Any = None
        self.tag = lifetime.new_tag()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        spec = self.spec
        cmd = [
            *spec.prefix,
            str(spec.binary),
            "-m",
            str(spec.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "-c",
            str(spec.ctx_size),
            "-np",
            "1",
        ]
        if spec.threads:
            cmd += ["-t", str(spec.threads)]
        return cmd + list(spec.extra_args)

    def log_text(self) -> str:
        try:
            return self.spec.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> Server:
        """Start and wait for /health. A port taken between choosing it and the engine
        binding it (another process won the race) is retried on a fresh port."""
        port = self.spec.port
        for _ in range(self.spec.bind_attempts - 1):
            try:
                return self._start_once(port)
            except EngineError as exc:
                if exc.why != PORT_TAKEN:
                    raise
                port = None
        return self._start_once(port)

    def _start_once(self, port: int | None) -> Server:
        self.port = port or free_port()
        self.spec.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.spec.log.open("wb")
        started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env_for("engine", values={**self.spec.env, lifetime.OWNER_VAR: self.tag}),
                preexec_fn=lifetime.die_with_parent(),  # noqa: PLW1509 (see lifetime.run)
            )
        except OSError as exc:
            self.stop()
            raise EngineError(
                f"{self.spec.label} did not start",
                f"{type(exc).__name__}: {exc}",
                "Check that the bundle was installed for this platform (llamapin ensure)",
            ) from None
        self._wait_healthy(started)
        return self

    def _died(self, starting: bool = False) -> EngineError:
        assert self.proc is not None
        code = self.proc.returncode
        log = self.log_text()
        # An engine that dies while starting, with another process listening on its port, lost
        # the race for the port. Asked of the port itself: the engine's log is written by a
        # thread of its own and may be empty when it exits at once.
        held = starting and port_held(self.port)
        return EngineError(
            f"{self.spec.label} stopped",
            PORT_TAKEN if held else diagnose_exit(code, log, self.spec.model_arch),
            "See the engine log below",
            detail=f"--- last lines of {self.spec.log} ---\n{tail(log)}",
        )

    def _wait_healthy(self, started: float) -> None:
        assert self.proc is not None
        deadline = started + self.spec.health_timeout_s
        with httpx.Client(timeout=2.0, verify=no_tls()) as http:
            while True:
                if self.proc.poll() is not None:
                    error = self._died(starting=True)
                    self.stop()
                    raise error
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{self.url}/health").status_code == 200:
                        self.load_time_s = time.monotonic() - started
                        return
                if time.monotonic() > deadline:
                    log = self.log_text()
                    self.stop()
                    raise EngineError(
                        f"{self.spec.label} did not become healthy",
                        f"/health did not answer 200 within {self.spec.health_timeout_s:.0f} s",
                        "Raise gate.health_timeout_s on a slow machine, or read the log below",
                        detail=f"--- last lines of {self.spec.log} ---\n{tail(log)}",
                    )
                # Often at first (a small model is up in about a second), then less often.
                time.sleep(0.025 if time.monotonic() - started < 5 else 0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self._died()

    def peak_rss_bytes(self) -> int | None:
        """Peak resident memory of the engine so far (VmHWM on Linux)."""
        if not self.alive():
            return None
        assert self.proc is not None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:  # pragma: no cover - non-Linux hosts
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) * 1024 if match else None

    def stop(self) -> None:
        """Stop the process group: SIGTERM, then SIGKILL; then every process that still
        carries this engine's tag (children that left the group or double-forked); reap."""
        proc = self.proc
        if proc is not None:
            children: list[psutil.Process] = []
            if proc.poll() is None:
                try:
                    children = psutil.Process(proc.pid).children(recursive=True)
                except psutil.NoSuchProcess:  # pragma: no cover - raced with exit
                    children = []
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:  # pragma: no cover - engine ignores SIGTERM
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            lifetime.kill_all([*children, *lifetime.tagged(self.tag)])
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- requests ---------------------------------------------------------------------------

    def post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            with httpx.Client(timeout=timeout, verify=no_tls()) as http:
                response = http.post(f"{self.url}{path}", json=body)
        except httpx.TransportError as exc:
            self.check_alive()
            raise EngineError(
                f"{self.spec.label} did not answer {path}",
                f"{type(exc).__name__}: {exc}",
                "Raise gate.request_timeout_s on a slow machine, or read the engine log",
                detail=tail(self.log_text()),
            ) from None
        if response.status_code != 200:
            raise EngineError(
                f"{self.spec.label} refused {path}",
                f"HTTP {response.status_code}",
                "The engine's API may have changed in this build; see its answer below",
                detail=response.text[:2000],
            )
        data: dict[str, Any] = response.json()
        return data

    def get(self, path: str) -> dict[str, Any]:
        with httpx.Client(timeout=10.0, verify=no_tls()) as http:
            response = http.get(f"{self.url}{path}")
        data: dict[str, Any] = response.json() if response.status_code == 200 else {}
        return data
