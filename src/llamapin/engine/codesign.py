"""Mach-O code signature integrity, checked on any OS.

Reads LC_CODE_SIGNATURE, the embedded SuperBlob and each CodeDirectory, and
re-hashes every code page (and the requirements blob, where a special slot
names it). A file edited after signing fails here, on Linux as on macOS.
On macOS ``codesign`` re-signs ad hoc and verifies too (see bundle.py).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from macholib import mach_o

from llamapin.engine.binfmt import load_macho
from llamapin.errors import SignatureError

CSMAGIC_EMBEDDED_SIGNATURE = 0xFADE0CC0
CSMAGIC_CODEDIRECTORY = 0xFADE0C02
CSSLOT_CODEDIRECTORY = 0
CSSLOT_REQUIREMENTS = 2
CSSLOT_ALTERNATE_CODEDIRECTORIES = 0x1000
HASHES = {1: "sha1", 2: "sha256", 3: "sha256", 4: "sha384"}


@dataclass(frozen=True)
class SliceSignature:
    arch_offset: int
    pages: int
    hash_type: str
    ident: str


def _fail(path: Path, why: str) -> SignatureError:
    return SignatureError(
        f"bad code signature on {path.name}",
        why,
        "The file was changed after it was signed; re-sign it (codesign --force -s -) "
        "or fetch the build again",
    )


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


def verify(path: Path) -> list[SliceSignature]:
    """Verify every slice's embedded signature; raise SignatureError if any is off."""
    data = path.read_bytes()
    macho = load_macho(path)
    result = []
    for header in macho.headers:
        base = header.offset
        sig_cmd = next(
            (cmd for load, cmd, _ in header.commands if load.cmd == mach_o.LC_CODE_SIGNATURE),
            None,
        )
        if sig_cmd is None:
            raise _fail(path, "it is not signed (no LC_CODE_SIGNATURE); macOS will not load it")
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
            for cd in directories:
                result.append(_check_directory(code, cd, blobs, path, base))
        except struct.error as exc:
            raise _fail(path, f"the signature is truncated ({exc})") from None
    return result
