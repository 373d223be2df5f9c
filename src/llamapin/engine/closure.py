"""The set of shared libraries ``llama-server`` needs, and where each one is.

ELF: DT_NEEDED resolved through DT_RUNPATH/DT_RPATH with ``$ORIGIN``.
Mach-O: LC_LOAD_DYLIB / weak / re-export / upward with ``@rpath``,
``@loader_path``, ``@executable_path`` and LC_RPATH.
Plus ggml backends loaded at run time (``GGML_BACKEND_DL`` builds): any ELF in
the tree that exports ``ggml_backend_init``.
PE (Windows): imports and delay-load imports, looked up beside the executable in any
case, Windows' own DLLs never bundled; plus ``ggml-*.dll`` backends and the tool's
``-impl.dll`` (see :mod:`llamapin.engine.pe`).
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llamapin.engine import pe
from llamapin.engine.binfmt import Format, Image, read_image, sniff
from llamapin.errors import ClosureError
from llamapin.procenv import env_for

SystemCheck = Callable[[str, Format], bool]
MACOS_SYSTEM_PREFIXES = ("/usr/lib/", "/System/Library/")
LINUX_LIB_DIRS = (
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
)


@dataclass(frozen=True)
class Closure:
    binary: str
    """Path of llama-server, relative to the tree."""
    libs: dict[str, str] = field(default_factory=dict)
    """Install name (the file name the loader asks for) -> real file, relative to the tree."""
    system: tuple[str, ...] = ()
    runtime: tuple[str, ...] = ()
    """Install names that are loaded at run time, not at link time."""
    format: Format = "elf"


@functools.cache
def _ldconfig_names() -> frozenset[str]:
    try:
        out = subprocess.run(
            ["ldconfig", "-p"],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
            env=env_for("tool"),
        ).stdout
    except (
        OSError,
        subprocess.TimeoutExpired,
    ):  # pragma: no cover - ldconfig is on every glibc host
        return frozenset()
    return frozenset(line.split()[0] for line in out.splitlines()[1:] if line.strip())


def host_system_check(name: str, fmt: Format) -> bool:
    """True when the host provides ``name`` (it is not ours to bundle)."""
    if fmt == "pe":  # Windows' own DLLs, and the Visual C++ runtime when it is not bundled
        return pe.dll_kind(name) != "other"
    if fmt == "macho":
        return name.startswith(MACOS_SYSTEM_PREFIXES)
    if name in _ldconfig_names():
        return True
    return any(os.path.exists(os.path.join(d, name)) for d in LINUX_LIB_DIRS)


def _inside(tree: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(tree.resolve())
    except ValueError:
        return False
    return True


def _expand(token: str, image_dir: Path, exe_dir: Path) -> Path:
    for key in ("$ORIGIN", "${ORIGIN}", "@loader_path"):
        token = token.replace(key, str(image_dir))
    return Path(token.replace("@executable_path", str(exe_dir)))


def _candidates(image: Image, need: str, exe: Image) -> list[Path]:
    image_dir = image.path.parent
    exe_dir = exe.path.parent
    found: list[Path] = []
    if image.format == "elf":
        found = [_expand(rp, image_dir, exe_dir) / need for rp in image.rpaths]
    elif need.startswith("@rpath/"):
        rest = need[len("@rpath/") :]
        found = [_expand(rp, image_dir, exe_dir) / rest for rp in (*image.rpaths, *exe.rpaths)]
    elif need.startswith(("@loader_path/", "@executable_path/")):
        found = [_expand(need, image_dir, exe_dir)]
    # Fallback: beside the executable. The bundle is relinked so this is where it will look.
    return [*found, exe_dir / Path(need).name]


def compute(tree: Path, binary: Path, is_system: SystemCheck = host_system_check) -> Closure:
    """Walk the needed-library graph from ``binary`` inside ``tree``."""
    exe = read_image(binary)
    if exe.format == "pe":
        return _compute_pe(tree, binary, exe, is_system)
    libs: dict[str, str] = {}
    system: set[str] = set()
    missing: list[str] = []
    runtime: list[str] = []
    seen: set[Path] = {binary.resolve()}
    queue = [exe]

    def visit(image: Image) -> None:
        for need in image.needed:
            base = Path(need.name).name
            if base in libs or need.name in system:
                continue
            found = next(
                (c for c in _candidates(image, need.name, exe) if c.is_file() and _inside(tree, c)),
                None,
            )
            if found is not None:
                real = found.resolve()
                libs[base] = str(real.relative_to(tree.resolve()))
                if real not in seen:
                    seen.add(real)
                    queue.append(read_image(real))
            elif is_system(need.name, image.format):
                system.add(need.name)
            elif not need.weak:
                missing.append(f"{need.name} (needed by {image.path.name})")

    while queue:
        visit(queue.pop(0))
    if exe.format == "elf":
        for path in sorted(tree.rglob("*")):
            real = path.resolve()
            if real in seen or path.is_symlink() or not path.is_file() or sniff(path) != "elf":
                continue
            image = read_image(path)
            if image.backend_module:
                seen.add(real)
                libs[path.name] = str(real.relative_to(tree.resolve()))
                runtime.append(path.name)
                queue.append(image)
        while queue:
            visit(queue.pop(0))
    _refuse_missing(binary, missing)
    return Closure(
        binary=str(binary.resolve().relative_to(tree.resolve())),
        libs=dict(sorted(libs.items())),
        system=tuple(sorted(system)),
        runtime=tuple(sorted(runtime)),
        format=exe.format,
    )


def _refuse_missing(binary: Path, missing: list[str]) -> None:
    if missing:
        raise ClosureError(
            f"{binary.name} needs {len(missing)} shared librar{'y' if len(missing) == 1 else 'ies'}"
            " that the build does not have",
            ", ".join(missing),
            "The build is incomplete or was pruned too far; fetch or build it again",
        )


def _compute_pe(tree: Path, binary: Path, exe: Image, is_system: SystemCheck) -> Closure:
    """The Windows loader's view: a DLL is looked for beside the executable (names in any
    case), Windows' own DLLs (``KERNEL32``, ``api-ms-win-*``) always come from the system,
    the Visual C++ runtime from the build when it carries it, else from the system.
    Then what is loaded at run time: the tool's ``-impl.dll`` and every ``ggml-*.dll``
    that exports ``ggml_backend_init``, with their own imports."""
    root = tree.resolve()
    exe_dir = binary.parent
    libs: dict[str, str] = {}
    system: dict[str, str] = {}  # lower-case name -> name as first imported
    missing: list[str] = []
    runtime: list[str] = []
    seen: set[Path] = {binary.resolve()}
    queue = [exe]

    def add(path: Path, image: Image | None = None) -> bool:
        real = path.resolve()
        if real in seen or not _inside(tree, real):
            return False
        seen.add(real)
        libs[path.name] = str(real.relative_to(root))
        queue.append(image or read_image(real))
        return True

    def walk() -> None:
        while queue:
            image = queue.pop(0)
            for need in image.needed:
                low = need.name.lower()
                if low in system or pe.dll_kind(need.name) == "windows":
                    system.setdefault(low, need.name)
                    continue
                found = pe.find_dll(exe_dir, need.name)
                if found is not None and _inside(tree, found):
                    add(found)
                elif is_system(need.name, "pe"):
                    system.setdefault(low, need.name)
                elif not need.weak:
                    missing.append(f"{need.name} (needed by {image.path.name})")

    walk()
    impl = pe.find_dll(exe_dir, pe.impl_name(binary))
    if impl is not None and add(impl):
        runtime.append(impl.name)
    for path in sorted(tree.rglob("*")):
        name = path.name.lower()
        if not (name.startswith("ggml-") and name.endswith(".dll")) or path.is_symlink():
            continue
        if path.is_file() and sniff(path) == "pe":
            image = read_image(path)
            if image.backend_module and add(path, image):
                runtime.append(path.name)
    walk()
    _refuse_missing(binary, missing)
    return Closure(
        binary=str(binary.resolve().relative_to(root)),
        libs=dict(sorted(libs.items(), key=lambda kv: kv[0].lower())),
        system=tuple(sorted(system.values(), key=str.lower)),
        runtime=tuple(sorted(runtime, key=str.lower)),
        format="pe",
    )


def find_binary(tree: Path, name: str = "llama-server") -> Path:
    """The engine executable inside an unpacked tree (shallowest match; ``NAME.exe`` in a
    Windows build)."""
    if "/" in name and (tree / name).is_file():
        return tree / name
    matches = sorted(
        (p for p in tree.rglob(Path(name).name) if p.is_file()),
        key=lambda p: (len(p.parts), str(p)),
    ) or sorted(
        (p for p in tree.rglob(Path(name).name + ".exe") if p.is_file()),
        key=lambda p: (len(p.parts), str(p)),
    )
    if not matches:
        raise ClosureError(
            f"no {name} in the build",
            f"nothing named {Path(name).name} under {tree}",
            "Check engine.binary, or that the source really is a llama-server build",
        )
    return matches[0]
