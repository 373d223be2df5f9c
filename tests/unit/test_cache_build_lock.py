"""Two runs sharing a cache (two CI jobs, or a person and CI on one machine) never run
cmake in one build folder at once: the second waits for the first's lock, says so, and
then goes on (to reuse the finished build). Real processes and a real flock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from llamapin.engine.sources import one_build_at_a_time

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from llamapin.engine.sources import one_build_at_a_time
    build, held, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    with one_build_at_a_time(build, print):
        held.touch()
        while not go.exists():
            time.sleep(0.01)
    """
)


def wait_for(done: threading.Event | Path, what: str, deadline_s: float = 300.0) -> None:
    """Until ``done`` is set (or exists); a generous limit, only for a hang."""
    end = time.monotonic() + deadline_s
    while not (done.is_set() if isinstance(done, threading.Event) else done.exists()):
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.01)


def test_an_uncontended_lock_says_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    build = tmp_path / "builds" / "k"
    with one_build_at_a_time(build, said.append):
        pass
    with one_build_at_a_time(build, said.append):  # released: taken again at once
        pass
    assert said == []
    assert (tmp_path / "builds" / ".k.lock").is_file() and not build.exists()


def test_a_second_run_waits_for_the_first_and_says_so(tmp_path: Path) -> None:
    build, held, go = tmp_path / "builds" / "k", tmp_path / "held", tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(build), str(held), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    asked, entered = threading.Event(), threading.Event()

    def say(text: str) -> None:
        said.append(text)
        asked.set()

    def second() -> None:
        with one_build_at_a_time(build, say):
            entered.set()

    try:
        wait_for(held, "the first run took the lock")
        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        wait_for(asked, "the second run said it waits")
        assert not entered.is_set()  # the first still holds the lock (it waits for "go")
    finally:
        go.touch()
    thread.join(timeout=300)
    assert entered.is_set()
    assert said == [f"another run is building in {build}; waiting for it to finish"]
    out, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err
    assert out == ""  # the first run never waited


def test_a_build_folder_is_built_under_its_lock_and_then_reused(tmp_path: Path) -> None:
    """The real cmake on a source without a CMakeLists.txt fails; the folder a finished
    build leaves (its marker and binary) is then reused, both under the folder's lock."""
    import httpx
    import pytest

    from llamapin.archive import Limits
    from llamapin.config import EngineConfig
    from llamapin.engine.sources import Context, SourceBuild
    from llamapin.errors import BuildError
    from llamapin.fetch import Cache
    from llamapin.pin import Pin
    from tests.conftest import COMMIT_10068

    said: list[str] = []
    src = tmp_path / "src"
    src.mkdir()
    with httpx.Client() as http:
        ctx = Context(
            Pin("b10068", COMMIT_10068, {}),
            EngineConfig(),
            "linux-x64",
            Cache(tmp_path / "cache"),
            http,
            Limits(),
            log=said.append,
        )
        with pytest.raises(BuildError, match="cmake configure"):
            SourceBuild().build(ctx, src, "a" * 64, None)
        (build,) = (p for p in (tmp_path / "cache" / "builds").iterdir() if p.is_dir())
        (build / "bin").mkdir()
        (build / "bin" / "llama-server").write_bytes(b"ELF")
        (build / ".complete").write_text("x")
        tree = SourceBuild().build(ctx, src, "a" * 64, None)
    assert tree.path == build / "bin" and tree.detail == f"build {build.name}"
    assert said[-1] == f"reuse the cached build {build.name}"
    assert not [line for line in said if "waiting" in line]
    assert (build.parent / f".{build.name}.lock").is_file()


def test_a_lock_path_that_is_a_link_is_a_clear_error(tmp_path: Path) -> None:
    """A planted link where the lock goes is never followed: one clear error."""
    import pytest

    from llamapin.errors import BuildError

    builds = tmp_path / "builds"
    builds.mkdir()
    (builds / ".k.lock").symlink_to(tmp_path / "elsewhere")
    with (
        pytest.raises(BuildError, match="cannot lock the build folder") as caught,
        one_build_at_a_time(builds / "k", print),
    ):
        pass
    assert "Remove " in caught.value.line() and not (tmp_path / "elsewhere").exists()
    (builds / ".k.lock").unlink()
    os.mkfifo(builds / ".k.lock")  # no reader: refused at once instead of waiting for one
    with (
        pytest.raises(BuildError, match="cannot lock the build folder"),
        one_build_at_a_time(builds / "k", print),
    ):
        pass
