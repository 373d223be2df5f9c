"""Mach-O code signature integrity, checked on any OS.

Reads LC_CODE_SIGNATURE, the embedded SuperBlob and each CodeDirectory, and
re-hashes every code page (and the requirements blob, where a special slot
names it). A file edited after signing fails here, on Linux as on macOS.
A universal file is checked slice by slice and reported per slice: an arm64
slice must be signed, an x86_64 slice may be unsigned, and a signed slice
must be valid whatever its neighbour is.
Re-signing is done by the tools (see bundle.py and macos.py): ``codesign --force -s -`` on
macOS, LLVM's install-name-tool elsewhere; whichever ran, this check decides.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from macholib import mach_o

from llamapin.engine.binfmt import arch_name, load_macho
from llamapin.errors import SignatureError

CSMAGIC_EMBEDDED_SIGNATURE = 0xFADE0CC0
CSMAGIC_CODEDIRECTORY = 0xFADE0C02
CSSLOT_CODEDIRECTORY = 0
CSSLOT_REQUIREMENTS = 2
CSSLOT_ALTERNATE_CODEDIRECTORIES = 0x1000
HASHES = {1: "sha1", 2: "sha256", 3: "sha256", 4: "sha384"}


# macOS on Apple silicon runs no arm64 code without a valid signature (ad hoc will do);
# Intel code may be unsigned, so an unsigned x86_64 slice is legitimate.
MUST_SIGN = frozenset({"arm64", "arm64e", "arm64_32"})
CHANGED_FIX = (
    "The file was changed after it was signed; re-sign it (codesign --force -s -) "
    "or fetch the build again"
)
UNSIGNED_FIX = (
    "macOS refuses to run unsigned arm64 code; sign it (codesign --force -s -) on macOS, "
    "or fetch a build that signs its arm64 code"
)


@dataclass(frozen=True)
class SliceSignature:
    arch_offset: int
    pages: int
    hash_type: str
    ident: str


@dataclass(frozen=True)
class SliceCheck:
    """One slice's signature: present or not, valid or not, and why not."""

    arch: str
    signed: bool
    valid: bool
    reason: str = ""
    directories: tuple[SliceSignature, ...] = ()

    @property
    def acceptable(self) -> bool:
        """Valid, or an unsigned slice of an architecture that may run unsigned."""
        return self.valid or (not self.signed and self.arch not in MUST_SIGN)

    def describe(self) -> str:
        if self.valid:
            return f"{self.arch} slice: signed, valid"
        if not self.signed:
            allowed = "allowed" if self.acceptable else "macOS will not load it"
            return f"{self.arch} slice: not signed ({allowed})"
        return f"{self.arch} slice: bad signature ({self.reason})"


def _fail(path: Path, why: str) -> SignatureError:
    return SignatureError(f"bad code signature on {path.name}", why, CHANGED_FIX)


def _blobs(sig: bytes, path: Path) -> dict[int, bytes]:
    magic, _length, count = struct.unpack_from(">III", sig, 0)
    if magic != CSMAGIC_EMBEDDED_SIGNATURE:
        raise _fail(path, f"the signature blob has magic {magic:#x}, not an embedded signature")
    blobs = {}
    for i in range(count):
        slot, offset = struct.unpack_from(">II", sig, 12 + 8 * i)
        _magic, blen = struct.unpack_from(">II", sig, offset)
        blobs[slot] = sig[offset : offset + blen]
    return blobs


def _check_directory(
    code: bytes, cd: bytes, blobs: dict[int, bytes], path: Path, arch_offset: int
) -> SliceSignature:
    (
        magic,
        _length,
        _version,
        _flags,
        hash_offset,
        ident_offset,
        n_special,
        n_code,
        code_limit,
        hash_size,
        hash_type,
        _platform,
        page_log2,
    ) = struct.unpack_from(">IIIIIIIIIBBBB", cd, 0)
    if magic != CSMAGIC_CODEDIRECTORY:
        raise _fail(path, f"code directory has magic {magic:#x}")
    algo = HASHES.get(hash_type)
    if algo is None:
        raise _fail(path, f"unknown hash type {hash_type}")
    page = 1 << page_log2 if page_log2 else code_limit
    ident = cd[ident_offset:].split(b"\0", 1)[0].decode("utf-8", "replace")
    for i in range(n_code):
        chunk = code[i * page : min((i + 1) * page, code_limit)]
        want = cd[hash_offset + i * hash_size : hash_offset + (i + 1) * hash_size]
        got = hashlib.new(algo, chunk).digest()[:hash_size]
        if got != want:
            raise _fail(path, f"page {i} (offset {arch_offset + i * page}) does not match its hash")
    if n_special >= CSSLOT_REQUIREMENTS and CSSLOT_REQUIREMENTS in blobs:
        want = cd[
            hash_offset - CSSLOT_REQUIREMENTS * hash_size : hash_offset
            - (CSSLOT_REQUIREMENTS - 1) * hash_size
        ]
        got = hashlib.new(algo, blobs[CSSLOT_REQUIREMENTS]).digest()[:hash_size]
        if want.strip(b"\0") and got != want:
            raise _fail(path, "the requirements blob does not match its hash")
    return SliceSignature(arch_offset, n_code, algo, ident)


def _check_slice(data: bytes, header: Any, path: Path) -> tuple[SliceSignature, ...]:
    base = header.offset
    sig_cmd = next(
        (cmd for load, cmd, _ in header.commands if load.cmd == mach_o.LC_CODE_SIGNATURE)
    )
    sig = data[base + sig_cmd.dataoff : base + sig_cmd.dataoff + sig_cmd.datasize]
    try:
        blobs = _blobs(sig, path)
        directories = [
            blob
            for slot, blob in blobs.items()
            if slot == CSSLOT_CODEDIRECTORY
            or CSSLOT_ALTERNATE_CODEDIRECTORIES <= slot < CSSLOT_ALTERNATE_CODEDIRECTORIES + 5
        ]
        if not directories:
            raise _fail(path, "the signature has no code directory")
        code = data[base : base + sig_cmd.dataoff]
        return tuple(_check_directory(code, cd, blobs, path, base) for cd in directories)
    except struct.error as exc:
        raise _fail(path, f"the signature is truncated ({exc})") from None


def check(path: Path) -> tuple[SliceCheck, ...]:
    """Each slice's signature, checked on its own: one slice's state never hides another's."""
    data = path.read_bytes()
    result = []
    for header in load_macho(path).headers:
        arch = arch_name(header.header.cputype, header.header.cpusubtype)
        if not any(load.cmd == mach_o.LC_CODE_SIGNATURE for load, _c, _d in header.commands):
            result.append(SliceCheck(arch, signed=False, valid=False, reason="not signed"))
            continue
        try:
            directories = _check_slice(data, header, path)
        except SignatureError as exc:
            result.append(SliceCheck(arch, signed=True, valid=False, reason=exc.why))
        else:
            result.append(SliceCheck(arch, signed=True, valid=True, directories=directories))
    return tuple(result)


def failure(name: str, slices: tuple[SliceCheck, ...]) -> SignatureError | None:
    """The error for a file whose slices break the rules, or None when they all pass."""
    bad = [s for s in slices if not s.acceptable]
    if not bad:
        return None
    parts = []
    for s in bad:
        text = (
            f"not signed (no LC_CODE_SIGNATURE), and macOS will not load unsigned {s.arch} code"
            if not s.signed
            else s.reason
        )
        parts.append(f"{s.arch} slice: {text}" if len(slices) > 1 else text)
    return SignatureError(
        f"bad code signature on {name}",
        "; ".join(parts),
        CHANGED_FIX if any(s.signed for s in bad) else UNSIGNED_FIX,
        detail="\n".join(s.describe() for s in slices),
    )


def verify(path: Path) -> list[SliceSignature]:
    """Verify every slice: arm64 must be signed and valid, any signed slice must be valid.

    Raises SignatureError naming each slice's state; returns the valid code directories.
    """
    slices = check(path)
    error = failure(path.name, slices)
    if error is not None:
        raise error
    return [d for s in slices for d in s.directories]
