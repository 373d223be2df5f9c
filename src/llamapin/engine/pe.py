"""Windows PE files (pefile): what the loader needs, which DLLs Windows provides, signatures.

* Imports and delay-load imports (a delay-loaded DLL is needed only when first called,
  so a missing one is reported, not fatal, like a weak Mach-O import).
* Run-time backends: a ``ggml-*.dll`` that exports ``ggml_backend_init`` is loaded by
  ggml itself (``GGML_BACKEND_DL`` builds), never imported, so it is found by export.
* ``<tool>-impl.dll``: recent builds split each tool into a thin ``.exe`` and this
  library; it always belongs to the closure of ``<tool>.exe``.
* Which DLLs the machine provides: Windows' own (``KERNEL32``, ``api-ms-win-*``, ...)
  are never bundled; the MSVC and OpenMP runtimes (``VCRUNTIME140``, ``MSVCP140``,
  ``vcomp140``, ``libomp140``) are bundled when the build carries them, else they are
  expected from the Visual C++ Redistributable on the user's machine. Names are
  compared case-insensitively, as Windows does.
* Authenticode: whether each file carries a signature (a certificate table in the
  security directory), and a digest of the file that leaves the signature out, so a
  bundle signed after ensure can still be matched against its manifest.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pefile  # type: ignore[import-untyped]

from llamapin.errors import BinaryFormatError, SignatureError

BACKEND_SYMBOL = b"ggml_backend_init"
IMPL_SUFFIX = "-impl.dll"
PE_SIGNATURE = b"PE\0\0"
SECURITY = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]
WIN_CERT_REVISION_2 = 0x0200
WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
MACHINES = {0x8664: "x64", 0xAA64: "arm64", 0x14C: "x86"}

# Windows components: present on every supported Windows, never app-local.
WINDOWS_DLLS = frozenset(
    {
        "advapi32.dll",
        "bcrypt.dll",
        "cfgmgr32.dll",
        "comctl32.dll",
        "comdlg32.dll",
        "crypt32.dll",
        "d3d11.dll",
        "d3d12.dll",
        "dbghelp.dll",
        "dwmapi.dll",
        "dxcore.dll",
        "dxgi.dll",
        "gdi32.dll",
        "imm32.dll",
        "iphlpapi.dll",
        "kernel32.dll",
        "kernelbase.dll",
        "msvcrt.dll",
        "ncrypt.dll",
        "ntdll.dll",
        "ole32.dll",
        "oleaut32.dll",
        "opencl.dll",  # installed with every GPU driver
        "powrprof.dll",
        "psapi.dll",
        "rpcrt4.dll",
        "secur32.dll",
        "setupapi.dll",
        "shell32.dll",
        "shlwapi.dll",
        "ucrtbase.dll",  # the Universal CRT is part of Windows 10 and later
        "user32.dll",
        "userenv.dll",
        "uxtheme.dll",
        "version.dll",
        "winhttp.dll",
        "wininet.dll",
        "winmm.dll",
        "ws2_32.dll",
        "wsock32.dll",
        "nvcuda.dll",  # the CUDA driver, installed with NVIDIA's display driver
        "vulkan-1.dll",  # the Vulkan loader, installed with every GPU driver
    }
)
WINDOWS_PREFIXES = ("api-ms-win-", "ext-ms-")  # API sets: resolved by the loader, not files

# The Visual C++ runtime and its OpenMP runtimes: redistributable, so either bundled
# (app-local) or installed by the Visual C++ Redistributable.
REDIST_RE = re.compile(
    r"^(vcruntime140(_1)?|msvcp140(_1|_2|_atomic_wait|_codecvt_ids)?|concrt140|vccorlib140"
    r"|vcomp140|libomp140\.[a-z0-9_]+)\.dll\Z"
)

DllKind = Literal["windows", "redist", "other"]


def dll_kind(name: str) -> DllKind:
    """``windows`` (part of Windows), ``redist`` (Visual C++ / OpenMP runtime), or ``other``."""
    low = Path(name.replace("\\", "/")).name.lower()
    if low in WINDOWS_DLLS or low.startswith(WINDOWS_PREFIXES):
        return "windows"
    if REDIST_RE.match(low):
        return "redist"
    return "other"


def is_pe(head: bytes, peek: bytes) -> bool:
    """``head``: the file's first 64 bytes; ``peek``: the 4 bytes at ``e_lfanew``."""
    return len(head) >= 64 and head[:2] == b"MZ" and peek == PE_SIGNATURE


def sniff_pe(path: Path) -> bool:
    """True when ``path`` starts like a PE file (``MZ`` and a ``PE`` header)."""
    with path.open("rb") as handle:
        head = handle.read(64)
        if len(head) < 64 or head[:2] != b"MZ":
            return False
        handle.seek(struct.unpack_from("<I", head, 0x3C)[0])
        return is_pe(head, handle.read(4))


@dataclass(frozen=True)
class PeFile:
    path: Path
    machine: str
    is_dll: bool
    imports: tuple[str, ...]
    delay_imports: tuple[str, ...]
    backend_module: bool
    signed: bool


def _bad(path: Path, exc: BaseException) -> BinaryFormatError:
    return BinaryFormatError(
        f"cannot read {path.name}",
        f"the file is not a valid PE file ({type(exc).__name__}: {exc})",
        "The file is truncated or corrupt; fetch the build again",
    )


def _names(entries: Iterable[object]) -> tuple[str, ...]:
    return tuple(
        dict.fromkeys(
            bytes(getattr(e, "dll", b"") or b"").decode("ascii", "replace") for e in entries
        )
    )


def certificate_table(pe: pefile.PE, size: int) -> tuple[int, int] | None:
    """The (offset, length) of the Authenticode certificate table, if the file has one.

    The security directory holds a file offset (not an RVA); it must lie inside the
    file and begin with a WIN_CERTIFICATE of revision 2 holding PKCS#7 signed data.
    """
    entry = pe.OPTIONAL_HEADER.DATA_DIRECTORY[SECURITY]
    offset, length = int(entry.VirtualAddress), int(entry.Size)
    if offset == 0 or length < 8 or offset + length > size:
        return None
    _len, revision, kind = struct.unpack_from("<IHH", pe.__data__, offset)
    if revision != WIN_CERT_REVISION_2 or kind != WIN_CERT_TYPE_PKCS_SIGNED_DATA:
        return None
    return offset, length


LINKS = [
    pefile.DIRECTORY_ENTRY[d]
    for d in (
        "IMAGE_DIRECTORY_ENTRY_IMPORT",
        "IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT",
        "IMAGE_DIRECTORY_ENTRY_EXPORT",
    )
]


def load(path: Path, *, links: bool = True) -> pefile.PE:
    """pefile's parse of the headers (and, with ``links``, imports and exports)."""
    try:
        pe = pefile.PE(str(path), fast_load=True)
        if links:
            pe.parse_data_directories(directories=LINKS)
    except (pefile.PEFormatError, struct.error, ValueError, IndexError, OSError) as exc:
        raise _bad(path, exc) from None
    return pe


def read_pe(path: Path) -> PeFile:
    pe = load(path)
    try:
        exports = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
        backend = exports is not None and any(s.name == BACKEND_SYMBOL for s in exports.symbols)
        signed = certificate_table(pe, len(pe.__data__)) is not None
        return PeFile(
            path=path,
            machine=MACHINES.get(pe.FILE_HEADER.Machine, f"machine {pe.FILE_HEADER.Machine:#x}"),
            is_dll=bool(pe.is_dll()),
            imports=_names(getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])),
            delay_imports=_names(getattr(pe, "DIRECTORY_ENTRY_DELAY_IMPORT", [])),
            backend_module=backend,
            signed=signed,
        )
    finally:
        pe.close()


def unsigned_digest(path: Path) -> str:
    """sha256 of the file as it was before an Authenticode signature was added.

    Signing (signtool, osslsigncode) changes three things: the optional header's
    checksum, the security directory entry, and the certificate table appended at
    the end (after zero padding to 8 bytes). Those are left out, and the rest is
    hashed padded to 8 bytes, so a file and its signed copy give the same digest.
    """
    pe = load(path, links=False)
    try:
        data = pe.__data__
        size = len(data)
        checksum = pe.OPTIONAL_HEADER.get_field_absolute_offset("CheckSum")
        security = pe.OPTIONAL_HEADER.DATA_DIRECTORY[SECURITY].get_file_offset()
        table = certificate_table(pe, size)
        end = table[0] if table is not None else size
        digest = hashlib.sha256()
        digest.update(data[:checksum])
        digest.update(data[checksum + 4 : security])
        digest.update(data[security + 8 : end])
        digest.update(b"\0" * (-end % 8))
        return digest.hexdigest()
    finally:
        pe.close()


def find_dll(directory: Path, name: str) -> Path | None:
    """The file in ``directory`` the Windows loader would take for ``name`` (any case)."""
    want = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    if not directory.is_dir():
        return None
    for path in sorted(directory.iterdir()):
        if path.name.lower() == want and path.is_file():
            return path
    return None


def impl_name(binary: Path) -> str:
    """``llama-server.exe`` -> ``llama-server-impl.dll``."""
    stem = binary.name[:-4] if binary.name.lower().endswith(".exe") else binary.name
    return stem + IMPL_SUFFIX


def split_provided(names: Iterable[str]) -> dict[str, list[str]]:
    """The DLLs the machine must provide, by who provides them (for the report)."""
    out: dict[str, list[str]] = {"windows": [], "redist": []}
    for name in sorted(names, key=str.lower):
        kind = dll_kind(name)
        out["redist" if kind == "redist" else "windows"].append(name)
    return out


Authenticode = Literal["unsigned", "signed", "mismatch"]
SIGN_FIX = (
    "Sign every PE file of the bundle (signtool sign, or osslsigncode) after ensure, "
    "then run llamapin verify again"
)


def authenticode(path: Path) -> tuple[Authenticode, str]:
    """(state, digest): the file's Authenticode digest (SHA-256, the signature left out)
    and whether it is ``unsigned``, ``signed`` (its signature holds that digest), or a
    ``mismatch`` (a signature over other bytes: changed after signing, or not SHA-256).

    This checks that the signature covers these bytes, not who signed them: trust in
    the certificate is Windows' own check (signtool verify, Get-AuthenticodeSignature).
    """
    digest = unsigned_digest(path)
    pe = load(path, links=False)
    try:
        table = certificate_table(pe, len(pe.__data__))
        if table is None:
            return "unsigned", digest
        blob = pe.__data__[table[0] : table[0] + table[1]]
        # DER: OCTET STRING of 32 bytes, the messageDigest of SpcIndirectDataContent
        return ("signed" if b"\x04\x20" + bytes.fromhex(digest) in blob else "mismatch"), digest
    finally:
        pe.close()


def file_entry(path: Path) -> dict[str, str]:
    """What a bundle manifest records of a PE file besides its sha256."""
    state, digest = authenticode(path)
    return {"authenticode": state, "unsigned_sha256": digest}


def signed_since(recorded: Mapping[str, object], now: Mapping[str, object]) -> bool:
    """True when a file differs from its manifest entry only by a valid signature added
    (or replaced) after ensure: same bytes with the signature left out, now ``signed``."""
    digest = recorded.get("unsigned_sha256")
    return (
        digest is not None
        and now.get("unsigned_sha256") == digest
        and (now.get("authenticode") == "signed")
    )


def signature_report(tree: Path) -> dict[str, Authenticode]:
    """Every PE file under ``tree`` and its Authenticode state."""
    return {
        str(path.relative_to(tree)): authenticode(path)[0]
        for path in sorted(tree.rglob("*"))
        if path.is_file() and not path.is_symlink() and sniff_pe(path)
    }


def signature_note(report: dict[str, Authenticode]) -> list[str]:
    """One line for ensure's output: how many PE files carry a signature."""
    if not report:
        return []
    signed = [rel for rel, state in report.items() if state == "signed"]
    unsigned = [rel for rel, state in report.items() if state != "signed"]
    line = f"Authenticode: {len(signed)} of {len(report)} PE files signed"
    if unsigned:
        line += f" (not signed: {', '.join(unsigned)})"
    return [line]


def require_signed(tree: Path) -> int:
    """Refuse a bundle with a PE file that is not validly signed; return the files checked."""
    report = signature_report(tree)
    bad = {rel: state for rel, state in report.items() if state != "signed"}
    if bad:
        first, state = next(iter(bad.items()))
        raise SignatureError(
            f"{len(bad)} PE file(s) in {tree.name} are not signed (first: {first})",
            f"bundle.require_authenticode is set, and {first} is "
            + (
                "unsigned"
                if state == "unsigned"
                else "signed over other bytes (changed after signing, or not SHA-256)"
            ),
            SIGN_FIX,
            detail="\n".join(f"{rel}: {s}" for rel, s in report.items()),
        )
    return len(report)
