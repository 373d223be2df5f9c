"""No process outlives llamapin.

* SIGTERM (what CI cancellation sends), SIGHUP and SIGINT raise :class:`Terminated` in the
  main thread, so every ``with Server(...)`` and ``finally`` on the way out runs and stops
  its engines; the CLI then exits with one line and code 128 + the signal.
* Every child llamapin tracks carries ``LLAMAPIN_OWNER`` in its environment (a tag for this
  run and this child). Stopping a server, and leaving the CLI, kill every process that still
  carries the tag, wherever it went: children that left the process group or double-forked
  and called setsid inherit the tag.
* On Linux, the engine gets a parent-death signal (if llamapin is killed outright, the
  engine is killed too), and the CLI becomes a child subreaper: orphaned descendants are
  reparented to llamapin instead of init, so leaving the CLI kills (and reaps) them even if
  they scrubbed their environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

OWNER_VAR = "LLAMAPIN_OWNER"
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

_scope = [f"{os.getpid()}-{uuid.uuid4().hex[:12]}"]
"""This run's tag prefix (a one-item list: :func:`guarded` swaps it)."""
_counter = itertools.count(1)


class Terminated(BaseException):
    """A signal asked llamapin to stop (a BaseException: no ``except Exception`` eats it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        name = signal.Signals(self.signum).name
        who = "interrupted by the user" if self.signum == signal.SIGINT else "stopped"
        return f"error: {who} ({name}); engines and other child processes were stopped"


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):  # pragma: no cover - Linux-only syscalls
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    fn: Callable[..., int] = libc.prctl
    return fn


PRCTL = _prctl()


def make_undumpable() -> bool:
    """Linux: other processes of this user can no longer read our memory or environ."""
    return PRCTL is not None and PRCTL(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


def scrub_initial_environ(name: str) -> int:
    """Linux: overwrite every ``NAME=value`` in the environment block this process started
    with (what ``/proc/<pid>/environ`` shows to any reader, root included). Call it after
    the variable was removed from ``os.environ`` (so nothing points at the block's copy).
    Returns how many copies it wiped."""
    if PRCTL is None:  # pragma: no cover - Linux-only
        return 0
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
    except (OSError, IndexError, ValueError):  # pragma: no cover - /proc not mounted
        return 0
    spans = entry_spans(ctypes.string_at(start, end - start), name)
    for at, stop in spans:
        ctypes.memset(start + at, 0, stop - at)
    return len(spans)


def entry_spans(block: bytes, name: str) -> list[tuple[int, int]]:
    """Where ``NAME=value`` entries sit in a NUL-separated environment block."""
    key = name.encode() + b"="
    spans = []
    at = block.find(key)
    while at >= 0:
        stop = block.find(b"\0", at)
        stop = len(block) if stop < 0 else stop
        if at == 0 or block[at - 1] == 0:
            spans.append((at, stop))
        at = block.find(key, stop)
    return spans


def set_subreaper() -> bool:
    """Linux: orphaned descendants are reparented to this process."""
    return PRCTL is not None and PRCTL(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that kills the child when llamapin dies (Linux), else None."""
    prctl = PRCTL
    if prctl is None:  # pragma: no cover - Linux-only syscalls
        return None
    parent = os.getpid()

    def preexec() -> None:  # pragma: no cover - runs in the forked child, unmeasured there
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # llamapin died before the prctl took effect
            os._exit(1)

    return preexec


def new_tag() -> str:
    """A tag for one child: this run's scope, then a number."""
    return f"{_scope[0]}.{next(_counter)}"


def tagged(prefix: str) -> list[psutil.Process]:
    """Every process whose ``LLAMAPIN_OWNER`` is ``prefix`` or under it."""
    found = []
    for proc in psutil.process_iter():
        try:
            owner = proc.environ().get(OWNER_VAR, "")
        except (psutil.Error, OSError):
            continue
        if owner == prefix or owner.startswith(prefix + "."):
            found.append(proc)
    return found


def kill_all(procs: Iterable[psutil.Process], grace_s: float = 5.0) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL whatever is left after ``grace_s``; reap our own children.
    Returns those that needed SIGKILL."""
    procs = [p for p in procs if p.pid != os.getpid()]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return alive


def kill_group(proc: subprocess.Popen[Any], tag: str) -> None:
    """Kill a child's whole process group, then whatever still carries its tag."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_all(tagged(tag))


def run(
    cmd: list[str],
    *,
    env: Mapping[str, str],
    timeout: float | None = None,
    tick: Callable[[], None] | None = None,
    **kw: Any,
) -> subprocess.CompletedProcess[Any]:
    """Like ``subprocess.run`` (never ``check``), but the child gets its own process group,
    a tag and the parent-death signal; a timeout, a signal or any error kills the whole
    group (not just the child, as ``subprocess.run`` does), and nothing it left behind
    survives its end. ``tick`` is called about every 0.2 s while the child runs (in this
    thread: no llamapin thread runs while it forks, so the fork above stays safe; a
    heartbeat goes through ``tick``, see progress.step(thread=False))."""
    tag = new_tag()
    before = _descendants()
    deadline = None if timeout is None else time.monotonic() + timeout
    with subprocess.Popen(
        cmd,
        env={**env, OWNER_VAR: tag},
        start_new_session=True,
        preexec_fn=die_with_parent(),  # noqa: PLW1509 (no thread runs at fork; it only calls prctl)
        **kw,
    ) as proc:
        try:
            while True:
                most = 1.0 if tick is None else 0.2
                step = most if deadline is None else min(most, max(deadline - time.monotonic(), 0))
                try:
                    out, err = proc.communicate(timeout=step)
                    break
                except subprocess.TimeoutExpired:
                    if tick is not None:
                        tick()
                    if proc.poll() is not None:
                        # The command is done, but something it left behind holds its
                        # output open: that is a process outliving its command.
                        _stop_leftovers(proc, tag, before)
                    elif deadline is not None and time.monotonic() >= deadline:
                        raise subprocess.TimeoutExpired(cmd, timeout or 0.0) from None
        except BaseException:
            kill_group(proc, tag)
            raise
    _stop_leftovers(proc, tag, before)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _stop_leftovers(proc: subprocess.Popen[Any], tag: str, before: set[psutil.Process]) -> None:
    """After a command ended: its group, anything with its tag, and (where llamapin is a
    subreaper) orphans reparented to llamapin since it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    kill_all(set(tagged(tag)) | (_descendants() - before))


def _descendants() -> set[psutil.Process]:
    return set(psutil.Process().children(recursive=True))


def make_handler() -> Callable[[int, FrameType | None], None]:
    """A signal handler that raises :class:`Terminated` once, then ignores repeats (they
    must not interrupt the clean-up the first one started)."""
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        fired.append(signum)
        if len(fired) == 1:
            raise Terminated(signum)

    return handler


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """The CLI's run: signals become :class:`Terminated`; on the way out every process this
    run started (tagged, or a new descendant) is stopped."""
    scope = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    _scope.insert(0, scope)
    before = _descendants()
    set_subreaper()
    installed: dict[signal.Signals, Any] = {}
    handler = make_handler()
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            installed[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        try:
            kill_all(set(tagged(scope)) | (_descendants() - before))
        finally:
            for sig, old in installed.items():
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
            _scope.remove(scope)
