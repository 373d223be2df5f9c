"""Read what the loader needs from ELF, Mach-O and PE files (pyelftools, macholib, pefile).

Each file becomes a plain ``Image`` value, so closure resolution is a pure
function over values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from macholib import mach_o
from macholib.MachO import MachO

from llamapin.engine import pe
from llamapin.errors import BinaryFormatError

if TYPE_CHECKING:  # pyelftools is imported where an ELF file is read (it costs ~50 ms)
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

ELF_MAGIC = b"\x7fELF"
MACHO_MAGICS = {
    b"\xfe\xed\xfa\xce",
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"\xbe\xba\xfe\xca",
}
BACKEND_SYMBOL = "ggml_backend_init"

Format = Literal["elf", "macho", "pe"]


@dataclass(frozen=True)
class Need:
    name: str
    weak: bool = False


@dataclass(frozen=True)
class Image:
    path: Path
    format: Format
    needed: tuple[Need, ...]
    rpaths: tuple[str, ...]
    ident: str | None
    backend_module: bool
    signed: bool


def sniff(path: Path) -> Format | None:
    """The binary format of ``path`` from its magic bytes, or None."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except (IsADirectoryError, PermissionError):
        return None
    if magic == ELF_MAGIC:
        return "elf"
    if magic in MACHO_MAGICS:
        return "macho"
    if magic[:2] == b"MZ" and pe.sniff_pe(path):
        return "pe"
    return None


def _bad(path: Path, exc: BaseException) -> BinaryFormatError:
    return BinaryFormatError(
        f"cannot read {path.name}",
        f"the file is not a valid binary ({type(exc).__name__}: {exc})",
        "The file is truncated or corrupt; fetch the build again",
    )


def _defines(elf: ELFFile, dynsym: SymbolTableSection, name: str) -> bool:
    """Whether ``dynsym`` defines ``name``: looked up in the file's own symbol hash table
    (.gnu.hash or .hash, what the dynamic loader uses), not by parsing every symbol (a
    llama.cpp library has thousands, and pyelftools parses each one in Python)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.hash import ELFHashSection, GNUHashSection

    for table in (".gnu.hash", ".hash"):
        section = elf.get_section_by_name(table)
        if isinstance(section, (GNUHashSection, ELFHashSection)):
            try:
                sym = section.get_symbol(name)
            except (ELFError, struct.error, ValueError, KeyError, IndexError, ZeroDivisionError):
                break  # a damaged table: the full scan below decides (and reports damage)
            return sym is not None and sym["st_shndx"] != "SHN_UNDEF"
    return any(
        sym.name == name and sym["st_shndx"] != "SHN_UNDEF"
        for sym in dynsym.get_symbol_by_name(name) or []
    )


def read_elf(path: Path) -> Image:
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    try:
        with path.open("rb") as handle:
            elf = ELFFile(handle)
            needed: list[Need] = []
            rpaths: list[str] = []
            soname = None
            backend = False
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    for tag in section.iter_tags():
                        if tag.entry.d_tag == "DT_NEEDED":
                            needed.append(Need(tag.needed))  # type: ignore[attr-defined]
                        elif tag.entry.d_tag == "DT_RUNPATH":
                            rpaths.extend(tag.runpath.split(":"))  # type: ignore[attr-defined]
                        elif tag.entry.d_tag == "DT_RPATH":
                            rpaths.extend(tag.rpath.split(":"))  # type: ignore[attr-defined]
                        elif tag.entry.d_tag == "DT_SONAME":
                            soname = tag.soname  # type: ignore[attr-defined]
                elif isinstance(section, SymbolTableSection) and section.name == ".dynsym":
                    backend = backend or _defines(elf, section, BACKEND_SYMBOL)
    except (ELFError, struct.error, ValueError, KeyError, AssertionError) as exc:
        raise _bad(path, exc) from None
    return Image(path, "elf", tuple(needed), tuple(rpaths), soname, backend, signed=False)


_LOADS = {
    mach_o.LC_LOAD_DYLIB: False,
    mach_o.LC_REEXPORT_DYLIB: False,
    mach_o.LC_LOAD_UPWARD_DYLIB: False,
    mach_o.LC_LOAD_WEAK_DYLIB: True,
}


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def load_macho(path: Path) -> MachO:
    """macholib's parse of ``path``; any failure to parse is a BinaryFormatError."""
    try:
        return MachO(str(path))
    except (ValueError, struct.error, KeyError, IndexError, OSError) as exc:
        raise _bad(path, exc) from None


ARCH_NAMES = {
    0x01000007: "x86_64",
    0x0100000C: "arm64",
    0x0200000C: "arm64_32",
    7: "i386",
    12: "arm",
}


@dataclass(frozen=True)
class MachoSlice:
    """One architecture's part of a Mach-O file (a thin file has one)."""

    arch: str
    offset: int
    rpaths: tuple[str, ...]
    signed: bool


CPU_SUBTYPE_ARM64E = 2


def arch_name(cputype: int, cpusubtype: int = 0) -> str:
    """``x86_64``, ``arm64``, ``arm64e``, ... as lipo names them; hex for others."""
    name = ARCH_NAMES.get(cputype, f"cpu {cputype:#x}")
    if name == "arm64" and cpusubtype & 0xFF == CPU_SUBTYPE_ARM64E:
        return "arm64e"
    return name


def macho_slices(path: Path) -> tuple[MachoSlice, ...]:
    """Each slice's architecture, run paths and whether it carries LC_CODE_SIGNATURE.

    A universal file's slices are edited and signed one by one, so they can differ:
    one may lack an rpath the other has, or be unsigned where the other is signed.
    """
    slices = []
    for header in load_macho(path).headers:
        rpaths = [_cstr(data) for load, _c, data in header.commands if load.cmd == mach_o.LC_RPATH]
        signed = any(load.cmd == mach_o.LC_CODE_SIGNATURE for load, _c, _d in header.commands)
        slices.append(
            MachoSlice(
                arch_name(header.header.cputype, header.header.cpusubtype),
                header.offset,
                tuple(rpaths),
                signed,
            )
        )
    return tuple(slices)


def read_macho(path: Path) -> Image:
    macho = load_macho(path)
    needed: dict[str, Need] = {}
    rpaths: list[str] = []
    ident = None
    signed = False
    for header in macho.headers:
        for load, _cmd, data in header.commands:
            if load.cmd in _LOADS:
                name = _cstr(data)
                needed.setdefault(name, Need(name, _LOADS[load.cmd]))
            elif load.cmd == mach_o.LC_RPATH:
                rpaths.append(_cstr(data))
            elif load.cmd == mach_o.LC_ID_DYLIB:
                ident = _cstr(data)
            elif load.cmd == mach_o.LC_CODE_SIGNATURE:
                signed = True
    # The union over slices, to find libraries; relinking plans per slice (macho_slices).
    unique_rpaths = tuple(dict.fromkeys(rpaths))
    return Image(path, "macho", tuple(needed.values()), unique_rpaths, ident, False, signed)


def read_pe(path: Path) -> Image:
    """A Windows PE file; delay-loaded DLLs are weak (needed only when first called)."""
    info = pe.read_pe(path)
    needed = [Need(n) for n in info.imports]
    needed += [Need(n, weak=True) for n in info.delay_imports if n not in info.imports]
    return Image(path, "pe", tuple(needed), (), None, info.backend_module, info.signed)


def read_image(path: Path) -> Image:
    kind = sniff(path)
    if kind == "elf":
        return read_elf(path)
    if kind == "macho":
        return read_macho(path)
    if kind == "pe":
        return read_pe(path)
    raise BinaryFormatError(
        f"cannot read {path.name}",
        "it is neither an ELF nor a Mach-O file, nor a Windows PE file",
        "Point the engine binary setting at the llama-server executable",
    )
