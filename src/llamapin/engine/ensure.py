"""ensure = fetch + verify + unpack + closure + prune + relink + sign + manifest.

Or, with ``ensure.command``, run the project's own script and verify what it
produced the same way (closure, signatures, version, manifest).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llamapin import __version__, lifetime
from llamapin.archive import Limits
from llamapin.config import Config
from llamapin.engine import bundle as bnd
from llamapin.engine import macos, pe
from llamapin.engine.binfmt import Format, sniff
from llamapin.engine.closure import Closure, compute, find_binary, host_system_check
from llamapin.engine.sources import Context, EngineSource, source_of
from llamapin.errors import BundleError, ClosureError, EngineError, IntegrityError
from llamapin.fetch import Cache, client
from llamapin.memo import Memo
from llamapin.paths import bundle_relative, contained
from llamapin.pin import Pin, pin_to_dict
from llamapin.procenv import env_for

# The two --version formats llama.cpp has printed, each followed by "built with ..." lines:
#   up to about b10400:  version: 10068 (571d0d540)
#   from about b10400:   version: 0.1.0-dev (build 1, commit 7e4c0a9)
VERSION_RE = re.compile(r"version:\s*(\d+)\s*\(([0-9a-f]+|unknown)\)")
VERSION_RE_NEW = re.compile(
    r"version:\s*\S+\s*\(\s*build\s+(\d+)\s*,\s*commit\s+([0-9a-f]+|unknown)\s*\)"
)
MIN_COMMIT = 7  # git's shortest abbreviation; fewer hex digits name no one commit
NOT_CHECKED = "provenance not checked"


@dataclass(frozen=True)
class BuildInfo:
    number: int | None
    commit: str | None

    @property
    def verifiable(self) -> bool:
        """A usable build number (above 1: a shallow clone reports 1, no git 0) or a commit."""
        return (self.number is not None and self.number > 1) or self.commit is not None

    def describe(self) -> str:
        number = "no build number" if self.number is None else f"build {self.number}"
        return f"{number}, {'no commit' if self.commit is None else f'commit {self.commit}'}"


@dataclass
class EnsureResult:
    bundle: Path
    binary: Path
    noop: bool
    manifest: bnd.Manifest
    source: str
    kept: int = 0
    kept_bytes: int = 0
    dropped: list[str] = field(default_factory=list)
    dropped_bytes: int = 0
    relinked: list[str] = field(default_factory=list)
    signatures: int = 0
    build_info: BuildInfo | None = None
    notes: list[str] = field(default_factory=list)


def parse_version(text: str) -> BuildInfo:
    """``version: 10068 (571d0d540)`` -> BuildInfo(10068, '571d0d540');
    ``version: 0.1.0-dev (build 1, commit 7e4c0a9)`` -> BuildInfo(1, '7e4c0a9')."""
    match = VERSION_RE.search(text) or VERSION_RE_NEW.search(text)
    if not match:
        return BuildInfo(None, None)
    number = int(match.group(1))
    commit = match.group(2)
    return BuildInfo(number, None if commit == "unknown" else commit)


def provenance_problems(info: BuildInfo, pin: Pin) -> list[str]:
    """Where the engine's own build info contradicts the pin.

    Builds made from a shallow clone report build number 1 (or 0 without git):
    those carry no build number, only the commit.
    """
    problems = []
    if info.commit is not None and len(info.commit) < MIN_COMMIT:
        problems.append(f"commit {info.commit!r} is too short to name one commit")
    if info.number is not None and info.number > 1 and info.number != pin.number:
        problems.append(f"build number {info.number}, pin says {pin.number}")
    if info.commit is not None and not pin.commit.startswith(info.commit):
        problems.append(f"commit {info.commit}, pin says {pin.commit}")
    return problems


def can_execute(fmt: Format, host: str | None = None) -> bool:
    host = host or platform.system()
    if fmt == "pe":  # a Windows build runs only on Windows: never tried elsewhere
        return host == "Windows"
    return (fmt == "elf") == (host == "Linux") and host in ("Linux", "Darwin")


def probe_version(binary: Path, timeout: float = 30.0) -> str:
    try:
        proc = lifetime.run(
            [str(binary), "--version"],
            env=env_for("engine"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(
            f"{binary.name} --version did not run",
            f"{type(exc).__name__}: {exc}",
            "The binary does not run on this machine; check its platform",
        ) from None
    out: str = proc.stdout + proc.stderr
    if proc.returncode != 0:
        from llamapin.server import diagnose_exit

        raise EngineError(
            f"{binary.name} --version failed",
            diagnose_exit(proc.returncode, out, None),
            "The build does not run here; see the output below",
            detail=out[-3000:],
        )
    return out


@dataclass(frozen=True)
class Provenance:
    """What ensure learnt about where the installed engine came from."""

    info: BuildInfo | None
    checked: bool
    note: str

    def record(self) -> dict[str, object]:
        """The manifest's ``provenance`` entry."""
        info = self.info or BuildInfo(None, None)
        return {
            "checked": self.checked,
            "number": info.number,
            "commit": info.commit,
            "note": self.note,
        }


def check_provenance(binary: Path, fmt: Format, pin: Pin, *, require: bool = True) -> Provenance:
    """Compare the engine's own ``--version`` with the pin.

    A contradiction is always refused. A build that reports neither a usable build
    number nor a commit is refused too, unless ``require`` is false (the config's
    ``engine.require_provenance``): then it is accepted and recorded as not checked.
    """
    if not can_execute(fmt):
        return Provenance(
            None,
            False,
            f"{NOT_CHECKED} (--version not checked: a {'Windows (PE)' if fmt == 'pe' else fmt} "
            f"binary does not run on {platform.system()}, so it was not started)",
        )
    out = probe_version(binary)
    info = parse_version(out)
    problems = provenance_problems(info, pin)
    if problems:
        raise IntegrityError(
            f"the engine is not build {pin.build}",
            "; ".join(problems),
            "The source does not land on the pinned commit; nothing was installed. "
            "Check the source or re-pin deliberately",
        )
    if not info.verifiable:
        said = first_line(out)
        if require:
            raise IntegrityError(
                f"cannot verify provenance: nothing shows that the engine is build {pin.build}",
                f"{binary.name} --version reports {info.describe()} ({said})",
                "Nothing was installed. Use a build that reports its build number or commit, "
                "or set engine.require_provenance = false to install it unverified",
            )
        return Provenance(
            info,
            False,
            f"{NOT_CHECKED}: --version reports {info.describe()} ({said}); accepted because "
            "engine.require_provenance = false",
        )
    return Provenance(info, True, f"--version reports {info.describe()}: matches {pin.build}")


def unchecked(manifest: bnd.Manifest) -> list[str]:
    """The installed bundle's provenance note, when its provenance was not checked."""
    prov = manifest.provenance
    return [str(prov.get("note", NOT_CHECKED))] if prov.get("checked") is False else []


def first_line(text: str) -> str:
    """The first non-blank line of a program's output, quoted and cut short, for a message."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return repr(line[:120]) if line else "no output"


def stamp_key(cfg: Config, pin: Pin, plat: str) -> str:
    blob = json.dumps(
        {
            "pin": pin_to_dict(pin),
            "engine": cfg.engine.model_dump(),
            "bundle": cfg.bundle.model_dump(),
            "ensure": cfg.ensure.model_dump(),
            "platform": plat,
            "tool": __version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def closure_dict(closure: Closure) -> dict[str, object]:
    out: dict[str, object] = {
        "libs": sorted(closure.libs),
        "system": list(closure.system),
        "runtime": list(closure.runtime),
        "format": closure.format,
    }
    if closure.format == "pe":  # which DLLs Windows provides, which the VC++ runtime must
        out["provided"] = pe.split_provided(closure.system)
    return out


def _delegated(
    cfg: Config, root: Path, pin: Pin, key: str, source: EngineSource, say: Callable[[str], None]
) -> EnsureResult:
    if not cfg.ensure.output:
        raise BundleError(
            "ensure.command is set but ensure.output is not",
            "llamapin must know which directory the script fills, to verify it",
            "Set ensure.output to the script's output directory",
        )
    out = bnd.check_target(root, cfg.ensure.output, "ensure.output", protected_paths(cfg, root))
    with bnd.locked(out):  # two ensures must not run the script into one directory at once
        return _delegated_locked(cfg, root, pin, key, out, source, say)


def _delegated_locked(
    cfg: Config,
    root: Path,
    pin: Pin,
    key: str,
    out: Path,
    source: EngineSource,
    say: Callable[[str], None],
) -> EnsureResult:
    cache = Cache(Path(cfg.cache_dir).expanduser())
    plat = cfg.engine.resolved_platform()
    with client() as http:
        ctx = Context(pin, cfg.engine, plat, cache, http, Limits(), say, root, cfg.ensure)
        tree = source.materialize(ctx)
    try:
        found = find_binary(out, cfg.engine.binary)
    except ClosureError:
        raise BundleError(
            f"the project's ensure command produced no {cfg.engine.binary} for {plat}",
            f"it succeeded, but {out} holds nothing named {cfg.engine.binary} (or .exe)",
            f"Make the command build for {plat}, or, if the app does not ship {plat}, do not "
            "run ensure for it (set engine.platform to a platform the command builds)",
        ) from None
    binary = contained(found, out, "engine.binary")
    closure = compute(out, binary)
    signatures = bnd.verify_signatures(out)
    minimums = macos.bundle_minimums(out)
    macos.enforce_floor(root, cfg.bundle, minimums)
    fmt = sniff(binary) or "elf"
    prov = check_provenance(binary, fmt, pin, require=cfg.engine.require_provenance)
    (out / bnd.MANIFEST).unlink(missing_ok=True)
    manifest = bnd.Manifest(
        key=key,
        pin=pin_to_dict(pin)["pin"],
        source={"kind": tree.kind, "command": cfg.ensure.command},
        binary=str(binary.relative_to(out)),
        files=bnd.file_table(out),
        closure=closure_dict(closure),
        provenance=prov.record(),
        macos=minimums,
    )
    (out / bnd.MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return EnsureResult(
        out,
        binary,
        False,
        manifest,
        tree.kind,
        signatures=signatures,
        build_info=prov.info,
        notes=[prov.note, *pe.signature_note(pe.signature_report(out))],
    )


def protected_paths(cfg: Config, root: Path) -> list[Path]:
    """Files a bundle directory must never contain: the lock and the config files."""
    return [root / cfg.lock, root / "llamapin.toml", root / "pyproject.toml", root / ".git"]


def ensure(
    cfg: Config,
    root: Path,
    pin: Pin,
    *,
    force: bool = False,
    say: Callable[[str], None] = print,
    plat: str | None = None,
) -> EnsureResult:
    plat = plat or cfg.engine.resolved_platform()
    key = stamp_key(cfg, pin, plat)
    bundle_relative(cfg.engine.binary, "engine.binary")
    source = source_of(cfg.engine, cfg.ensure)
    if source.in_place:  # the project's own command fills ensure.output; verified there
        return _delegated(cfg, root, pin, key, source, say)
    target = bnd.check_target(root, cfg.bundle.dir, "bundle.dir", protected_paths(cfg, root))
    bnd.check_contents(target, "bundle.dir")  # before anything is created, fetched or moved
    with bnd.locked(target):
        bnd.recover(target)
        bnd.check_contents(target, "bundle.dir")  # again, now that no other ensure can add files
        current = bnd.read_manifest(target)
        if current is not None and current.key == key and not force:
            memo = Memo(Path(cfg.cache_dir).expanduser() / bnd.VERIFIED_BUNDLES)
            bnd.verify_bundle_remembered(target, memo)
            macos.enforce_floor(root, cfg.bundle, macos.bundle_minimums(target))
            binary = target / current.binary
            return EnsureResult(
                target,
                binary,
                True,
                current,
                current.source["kind"],
                notes=["already installed; matches its manifest", *unchecked(current)],
            )
        cache = Cache(Path(cfg.cache_dir).expanduser())
        limits = Limits(cfg.bundle.max_files, cfg.bundle.max_bytes)
        with client() as http:
            ctx = Context(pin, cfg.engine, plat, cache, http, limits, say)
            tree = source.materialize(ctx)
        binary = contained(find_binary(tree.path, cfg.engine.binary), tree.path, "engine.binary")
        closure = compute(tree.path, binary, host_system_check)
        layout = bnd.Layout(cfg.bundle.layout, cfg.bundle.rpath)
        stage = bnd.staging_dir(target)
        try:
            report = bnd.install_closure(tree.path, closure, stage, layout)
            relinked = bnd.relink(stage, closure.format, layout, llvm_dir=cfg.bundle.llvm_dir)
            signatures = bnd.verify_signatures(stage)
            minimums = macos.bundle_minimums(stage)
            macos.enforce_floor(root, cfg.bundle, minimums)
            staged_binary = stage / layout.bin_dir / Path(closure.binary).name
            prov = check_provenance(
                staged_binary, closure.format, pin, require=cfg.engine.require_provenance
            )
            manifest = bnd.Manifest(
                key=key,
                pin=pin_to_dict(pin)["pin"],
                source={
                    "kind": tree.kind,
                    "asset": tree.asset,
                    "detail": tree.detail,
                    "platform": plat,
                },
                binary=str(staged_binary.relative_to(stage)),
                files=bnd.file_table(stage),
                closure=closure_dict(closure),
                dropped={"files": len(report.dropped), "bytes": report.dropped_bytes},
                provenance=prov.record(),
                macos=minimums,
            )
            bnd.swap_in(stage, target, manifest)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return EnsureResult(
            target,
            target / manifest.binary,
            False,
            manifest,
            tree.kind,
            report.kept,
            report.kept_bytes,
            report.dropped,
            report.dropped_bytes,
            relinked,
            signatures,
            prov.info,
            [prov.note, *pe.signature_note(pe.signature_report(target))],
        )


def result_dict(res: EnsureResult) -> dict[str, object]:
    out = asdict(res)
    out["bundle"] = str(res.bundle)
    out["binary"] = str(res.binary)
    out["dropped"] = len(res.dropped)
    return out
