"""What is specific to macOS bundles, on any host: which tools edit and re-sign Mach-O
files, and the oldest macOS each file runs on.

Editing: on macOS Apple's ``install_name_tool``, ``lipo`` and ``codesign``; elsewhere LLVM's
``llvm-install-name-tool`` and ``llvm-lipo``, which take the same arguments. LLVM's
install-name-tool writes a fresh ad hoc signature for every signed slice of a file it
rewrites, so run with no edit it re-signs the file, as ``codesign --force -s -`` does.

Minimum macOS: each slice's ``LC_BUILD_VERSION`` (platform macOS) ``minos``, or its
``LC_VERSION_MIN_MACOSX``. An arm64 slice never needs less than macOS 11 (the first
release for Apple silicon), so an app that declares 10.13 is not held back by an arm64
slice that says 11.0: only a slice that needs more than ``max(declared, 11.0)`` fails.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from macholib import mach_o

from llamapin.config import BundleConfig
from llamapin.engine.binfmt import arch_name, load_macho, sniff
from llamapin.errors import BundleError, ConfigError, MacosFloorError
from llamapin.paths import json_at

if TYPE_CHECKING:
    from llamapin.engine.bundle import Manifest

PLATFORM_MACOS = 1  # LC_BUILD_VERSION platform: 1 macOS (2 iOS, 6 Mac Catalyst, ...)
APPLE_SILICON_FIRST = "11.0"
ARM_ARCHS = frozenset({"arm64", "arm64e"})
TAURI_KEY = "bundle.macOS.minimumSystemVersion"
VERSION = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){0,2}\Z")


# --- tools ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachoTools:
    """The programs that edit and re-sign Mach-O files on this host."""

    install_name_tool: str
    lipo: str
    sign: tuple[str, ...]  # the command that re-signs ad hoc, the file's path appended
    flavour: str  # "apple" or "llvm"

    def argv(self, cmd: list[str]) -> list[str]:
        """A plan step (written with Apple's tool names) as this host runs it."""
        tool = {"install_name_tool": self.install_name_tool, "lipo": self.lipo}[cmd[0]]
        return [tool, *cmd[1:]]

    def resign(self, path: Path) -> list[str]:
        return [*self.sign, str(path)]


def find_llvm_tool(name: str, folder: str | None = None) -> str | None:
    """LLVM's ``name`` (e.g. ``llvm-install-name-tool``): in ``folder`` when one is given,
    else on PATH, plain or as Debian's versioned ``name-NN`` (the newest), else in
    ``/usr/lib/llvm-NN/bin``. None when there is none."""
    dirs = [folder] if folder else os.environ.get("PATH", "").split(os.pathsep)
    found: list[tuple[int, str]] = []
    for entry in dirs:
        base = Path(entry or ".")
        if _runnable(base / name):
            return str(base / name)
        for path in base.glob(f"{name}-[0-9]*"):
            suffix = path.name[len(name) + 1 :]
            if suffix.isdigit() and _runnable(path):
                found.append((int(suffix), str(path)))
    if not folder:
        found += [
            (int(path.parents[1].name[len("llvm-") :]), str(path))
            for path in Path("/usr/lib").glob(f"llvm-[0-9]*/bin/{name}")
            if path.parents[1].name[len("llvm-") :].isdigit() and _runnable(path)
        ]
    return max(found)[1] if found else None


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def macho_tools(host: str | None = None, llvm_dir: str | None = None) -> MachoTools:
    """Apple's tools on macOS; LLVM's elsewhere, or wherever ``llvm_dir`` is set."""
    host = host or platform.system()
    if host == "Darwin" and not llvm_dir:
        return MachoTools("install_name_tool", "lipo", ("codesign", "--force", "-s", "-"), "apple")
    name_tool = find_llvm_tool("llvm-install-name-tool", llvm_dir)
    lipo = find_llvm_tool("llvm-lipo", llvm_dir)
    if name_tool is None or lipo is None:
        missing = [
            n for n, p in (("llvm-install-name-tool", name_tool), ("llvm-lipo", lipo)) if p is None
        ]
        where = f"in bundle.llvm_dir {llvm_dir!r}" if llvm_dir else "on PATH (plain or -NN)"
        raise BundleError(
            f"cannot relink a Mach-O bundle on {host}",
            f"{' and '.join(missing)} not found {where}",
            "Install LLVM (Debian and Ubuntu: apt-get install llvm), or set bundle.llvm_dir "
            "to the directory that holds its tools",
        )
    return MachoTools(name_tool, lipo, (name_tool,), "llvm")


# --- minimum macOS --------------------------------------------------------------------------


def _decode(packed: int) -> str:
    """``0x000D0300`` -> ``13.3`` (xxxx.yy.zz in nibbles; the patch shown only when set)."""
    major, minor, patch = packed >> 16, (packed >> 8) & 0xFF, packed & 0xFF
    return f"{major}.{minor}.{patch}" if patch else f"{major}.{minor}"


def version_key(text: str) -> tuple[int, int, int]:
    major, minor, patch, *_ = [*(int(p) for p in text.split(".")), 0, 0]
    return major, minor, patch


def slice_minimums(path: Path) -> dict[str, str | None]:
    """Each slice's minimum macOS by architecture; None for a slice that states none."""
    result: dict[str, str | None] = {}
    for header in load_macho(path).headers:
        arch = arch_name(header.header.cputype, header.header.cpusubtype)
        found = None
        for load, cmd, _data in header.commands:
            if load.cmd == mach_o.LC_BUILD_VERSION and cmd.platform == PLATFORM_MACOS:
                found = _decode(cmd.minos)
            elif load.cmd == mach_o.LC_VERSION_MIN_MACOSX:
                found = _decode(cmd.version)
        result[arch] = found
    return result


def highest(versions: list[str]) -> str | None:
    return max(versions, key=version_key) if versions else None


def min_macos_of(path: Path) -> str | None:
    """The newest minimum macOS any slice of ``path`` states (None: none states one)."""
    return highest([v for v in slice_minimums(path).values() if v is not None])


def bundle_minimums(stage: Path) -> dict[str, dict[str, str | None]]:
    """Every Mach-O file's minimum macOS per slice, by path relative to ``stage``."""
    return {
        str(path.relative_to(stage)): slice_minimums(path)
        for path in sorted(stage.rglob("*"))
        if path.is_file() and not path.is_symlink() and sniff(path) == "macho"
    }


def bundle_floor(manifest: Manifest) -> str | None:
    """The newest minimum macOS that any file of an installed bundle states, from its
    manifest (None: no Mach-O file, or none states one, or a manifest older than this)."""
    return highest([v for arches in manifest.macos.values() for v in arches.values() if v])


def needs(arch: str, version: str) -> str:
    """What a slice really asks of the Mac that loads it (arm64 Macs run macOS 11 or later)."""
    if arch in ARM_ARCHS:
        return highest([version, APPLE_SILICON_FIRST]) or version
    return version


def too_new(minimums: dict[str, dict[str, str | None]], declared: str) -> list[str]:
    """Each slice that needs a newer macOS than ``declared``, as ``file (arch): needs X``."""
    out = []
    for rel, arches in minimums.items():
        for arch, version in arches.items():
            if version is not None and version_key(version) > version_key(needs(arch, declared)):
                label = f" ({arch})" if len(arches) > 1 else ""
                out.append(f"{rel}{label}: needs macOS {version}")
    return out


def declared_minimum(root: Path, cfg: BundleConfig) -> tuple[str, str] | None:
    """The app's minimum macOS and where it was declared: ``bundle.min_macos``, else
    ``bundle.macOS.minimumSystemVersion`` in ``bundle.frameworks_file``; None if neither."""
    if cfg.min_macos:
        return cfg.min_macos, "bundle.min_macos"
    if not cfg.frameworks_file:
        return None
    node, path = json_at(root, cfg.frameworks_file, TAURI_KEY, "bundle.frameworks_file")
    if node is None:
        return None
    if not (isinstance(node, str) and VERSION.match(node)):
        raise ConfigError(
            f"{TAURI_KEY} in {path.name} is not a macOS version",
            f"it is {str(node)[:40]!r}",
            'Write it as "13.3" (major.minor[.patch])',
        )
    return node, f"{TAURI_KEY} in {path.name}"


def enforce_floor(
    root: Path, cfg: BundleConfig, minimums: dict[str, dict[str, str | None]]
) -> None:
    """``check_floor`` against the app's declaration, read only for a bundle with Mach-O
    files (a Linux or Windows bundle never needs the macOS declaration to exist)."""
    if minimums:
        check_floor(minimums, declared_minimum(root, cfg))


def check_floor(
    minimums: dict[str, dict[str, str | None]], declared: tuple[str, str] | None
) -> None:
    """Refuse a bundle with a file that needs a newer macOS than the app declares."""
    if declared is None:
        return
    version, where = declared
    bad = too_new(minimums, version)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise MacosFloorError(
            f"{bad[0]}{more}, but the app supports macOS {version}",
            f"{where} declares {version}, and macOS refuses to load a library built for a "
            "newer release",
            f"Use a build made for macOS {version} (its MACOSX_DEPLOYMENT_TARGET), or raise "
            f"{where} to {highest([v.rsplit(' ', 1)[1] for v in bad])}",
            detail="\n".join(bad),
        )
