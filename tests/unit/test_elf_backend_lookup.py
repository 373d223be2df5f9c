"""Finding ``ggml_backend_init`` in an ELF library through its own symbol hash table (.gnu.hash
or .hash, as the dynamic loader does), with the full symbol scan as the fallback for a file
without one or with a damaged one. Real shared objects built with gcc, both hash styles, one
with its hash tables removed by objcopy and one with a corrupted table; and the real wheel's
libraries, where the lookup must agree with the full scan."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from llamapin.engine.binfmt import BACKEND_SYMBOL, read_elf

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

DEFINES = "int ggml_backend_init(void) { return 1; }\nint other(void) { return 2; }\n"
IMPORTS = "extern int ggml_backend_init(void);\nint use(void) { return ggml_backend_init(); }\n"


def shared(tmp: Path, name: str, source: str, *flags: str) -> Path:
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / f"{name}.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(out), str(src), *flags],
        check=True,
        capture_output=True,
    )
    return out


def full_scan(path: Path) -> bool:
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        dynsym = elf.get_section_by_name(".dynsym")
        assert isinstance(dynsym, SymbolTableSection)
        return any(
            s.name == BACKEND_SYMBOL and s["st_shndx"] != "SHN_UNDEF" for s in dynsym.iter_symbols()
        )


def sections(path: Path) -> set[str]:
    with path.open("rb") as handle:
        return {s.name for s in ELFFile(handle).iter_sections()}


@needs_gcc
@pytest.mark.parametrize("style", ["gnu", "sysv"])
def test_the_hash_table_finds_a_defined_backend(tmp_path: Path, style: str) -> None:
    lib = shared(tmp_path, "backend", DEFINES, f"-Wl,--hash-style={style}")
    expected = ".gnu.hash" if style == "gnu" else ".hash"
    assert expected in sections(lib)
    assert read_elf(lib).backend_module is True
    user = shared(tmp_path, "user", IMPORTS, f"-Wl,--hash-style={style}")
    assert read_elf(user).backend_module is False  # imported (undefined), not defined
    plain = shared(tmp_path, "plain", "int f(void) { return 0; }\n", f"-Wl,--hash-style={style}")
    assert read_elf(plain).backend_module is False  # absent


@needs_gcc
def test_without_hash_tables_the_full_scan_decides(tmp_path: Path) -> None:
    if shutil.which("objcopy") is None:
        pytest.skip("needs objcopy")
    lib = shared(tmp_path, "backend", DEFINES, "-Wl,--hash-style=both")
    subprocess.run(
        ["objcopy", "--remove-section=.gnu.hash", "--remove-section=.hash", str(lib)],
        check=True,
        capture_output=True,
    )
    assert not {".gnu.hash", ".hash"} & sections(lib)
    assert read_elf(lib).backend_module is True


@needs_gcc
def test_a_damaged_hash_table_falls_back_to_the_full_scan(tmp_path: Path) -> None:
    lib = shared(tmp_path, "backend", DEFINES, "-Wl,--hash-style=gnu")
    with lib.open("rb") as handle:
        table = ELFFile(handle).get_section_by_name(".gnu.hash")
        assert table is not None
        offset = table["sh_offset"]
    data = bytearray(lib.read_bytes())
    data[offset : offset + 4] = struct.pack("<I", 0)  # nbuckets = 0: the lookup divides by it
    lib.write_bytes(bytes(data))
    assert read_elf(lib).backend_module is True


def test_the_lookup_agrees_with_the_full_scan_on_real_libraries(skulk_tree: Path) -> None:
    libs = sorted(p for p in skulk_tree.rglob("*.so*") if p.is_file() and not p.is_symlink())
    assert len(libs) >= 4
    found = {p.name: read_elf(p).backend_module for p in libs}
    assert found == {p.name: full_scan(p) for p in libs}
