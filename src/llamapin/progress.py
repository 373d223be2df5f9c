"""Progress lines for logs that are not a terminal (CI).

A terminal gets tqdm's bar (or nothing); a log file gets plain lines instead: one when a
step starts, one at a steady interval while it runs, and one at the end with the size,
the rate and the time taken. :class:`Meter` counts bytes (downloads); :func:`step` wraps
a step that counts nothing (a source build, an unpack, a gate prompt) and keeps a
heartbeat line going from a background thread while it runs.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

INTERVAL_S = 15.0


def is_log(stream: TextIO) -> bool:
    """True when ``stream`` is not a terminal (a CI log, a pipe, a file)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return not (isatty and isatty())
    except ValueError:  # a closed stream
        return False


def human_bytes(n: float) -> str:
    if abs(n) < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if abs(n) < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def _write(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


class Meter:
    """Byte progress of one transfer, as log lines (silent on a terminal)."""

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        stream: TextIO | None = None,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = is_log(self.stream)
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.start = clock()
        self.last = self.start
        if self.enabled:
            size = f" ({human_bytes(total)})" if total is not None else ""
            _write(self.stream, f"{label}: start{size}")

    def _rate(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        return f"{human_bytes(self.done / elapsed)}/s"

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            of = f" of {human_bytes(self.total)}" if self.total else ""
            _write(
                self.stream,
                f"{self.label}: {human_bytes(self.done)}{of} at {self._rate(now)}, "
                f"{now - self.start:.0f} s",
            )

    def finish(self) -> None:
        if self.enabled:
            now = self.clock()
            _write(
                self.stream,
                f"{self.label}: done, {human_bytes(self.done)} in {now - self.start:.1f} s "
                f"({self._rate(now)})",
            )


class Beat:
    """A heartbeat a caller drives (``lifetime.run(tick=beat)``): each call writes the
    "still running" line once ``interval`` seconds have passed since the last one."""

    def __init__(
        self,
        out: TextIO | None,
        label: str,
        interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out, self.label, self.interval, self.clock = out, label, interval, clock
        self.start = self.last = clock()

    def line(self) -> None:
        if self.out is not None:
            _write(self.out, f"{self.label}: still running, {self.clock() - self.start:.0f} s")

    def __call__(self) -> None:
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.line()


@contextlib.contextmanager
def step(
    label: str,
    *,
    stream: TextIO | None = None,
    interval: float = INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
    thread: bool = True,
) -> Iterator[Beat]:
    """Log lines for a step that counts nothing: start, a heartbeat every ``interval``
    seconds while it runs, and the time taken (or that it failed) at the end.

    The heartbeat comes from a background thread, or with ``thread=False`` from the
    :class:`Beat` this yields, called by the caller's own loop: a step that starts a
    process must not have a thread running while it forks (the child's ``preexec_fn``
    would run with locks another thread held)."""
    out = stream if stream is not None else sys.stderr
    if not is_log(out):
        yield Beat(None, label, interval, clock)
        return
    beat = Beat(out, label, interval, clock)
    stop = threading.Event()
    _write(out, f"{label}: start")

    def beats() -> None:
        while not stop.wait(interval):
            beat.line()

    worker = threading.Thread(target=beats, name=f"progress {label}", daemon=True)
    if thread:
        worker.start()
    outcome = "failed"
    try:
        yield beat
        outcome = "done"
    finally:
        stop.set()
        if thread:
            worker.join()
        _write(out, f"{label}: {outcome} in {clock() - beat.start:.1f} s")
