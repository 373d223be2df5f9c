"""Windows PE support on real DLLs: a Windows wheel's ggml, whisper and Microsoft runtime
DLLs (two of them Authenticode-signed by Microsoft) from the package index, arranged as
upstream's ``llama-<tag>-bin-win-<variant>-x64.zip`` lays them out.

The wheel's files were already renamed by delvewheel (``ggml-base-<hash>.dll``); the
release tree renames them back the same way, by rewriting the DLL names in the import
tables in place, and turns one import into a delay-load import and one export into
``ggml_backend_init`` (as a ``GGML_BACKEND_DL`` build exports it). Everything else is the
compiler's own bytes.
"""

from __future__ import annotations

import re
import shutil
import struct
import zipfile
from pathlib import Path

import pefile  # type: ignore[import-untyped]
import pytest

from llamapin.engine import pe
from llamapin.engine.binfmt import read_image, sniff
from llamapin.engine.bundle import drift, library_kind, split_declared
from llamapin.engine.closure import compute, find_binary, host_system_check
from llamapin.errors import BinaryFormatError, ClosureError, SignatureError
from llamapin.fetch import Cache
from tests.conftest import index_blob
from tests.release_archives import zip_tree

WIN_WHEEL = (
    "pywhispercpp",
    "1.5.1",
    "cp311-cp311-win_amd64",
    "539fbdc7de1348f16c1fb18802a025bf07340b5f7de1699ff8f7cb60be063145",
)
MANGLED = re.compile(r"-[0-9a-f]{32}(?=\.dll\Z)")
IMPORT = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]
DELAY = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT"]
EXPORT = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]


def parsed(data: bytes, directory: int) -> pefile.PE:
    image = pefile.PE(data=data, fast_load=True)
    image.parse_data_directories(directories=[directory])
    return image


@pytest.fixture(scope="session")
def win_files(cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The wheel's PE files by their unmangled names (``ggml-base.dll``, ``module.pyd``)."""
    package, version, tag, sha = WIN_WHEEL
    blob, _name, _ = index_blob(cache, package, version, tag, sha)
    out = {}
    with zipfile.ZipFile(blob) as wheel:
        for info in wheel.infolist():
            base = info.filename.rsplit("/", 1)[-1]
            if base.endswith(".dll"):
                out[MANGLED.sub("", base)] = wheel.read(info)
            elif base.endswith(".pyd"):
                out["module.pyd"] = wheel.read(info)
    assert set(out) == {
        "ggml.dll",
        "ggml-base.dll",
        "ggml-cpu.dll",
        "msvcp140.dll",
        "vcomp140.dll",
        "whisper.dll",
        "module.pyd",
    }
    return out


def rename_imports(data: bytes, names: dict[str, str]) -> bytes:
    """Rewrite imported DLL names in place (what delvewheel does); keys are unmangled names.
    Unlisted mangled names lose their hash."""
    image = parsed(data, IMPORT)
    for entry in image.DIRECTORY_ENTRY_IMPORT:
        old = entry.dll.decode()
        new = names.get(MANGLED.sub("", old), MANGLED.sub("", old))
        if new != old:
            assert len(new) <= len(old)
            image.set_bytes_at_rva(entry.struct.Name, new.encode() + b"\0")
    return bytes(image.write())


def delay_first_import(data: bytes) -> bytes:
    """Turn the first import descriptor into a delay-load descriptor (RVA-based), in the
    space of the import table's last descriptors."""
    image = parsed(data, IMPORT)
    start = image.OPTIONAL_HEADER.DATA_DIRECTORY[IMPORT].VirtualAddress
    count = len(image.DIRECTORY_ENTRY_IMPORT)
    raw = image.get_data(start, 20 * (count + 1))
    first = struct.unpack_from("<5I", raw, 0)  # INT, time, forwarder, name, IAT
    keep = (count * 20 + 20 - 64) // 20 - 1  # leave 64 bytes for a delay entry and its end
    table = raw[20 : 20 + 20 * keep] + b"\0" * 20
    delay = struct.pack("<8I", 1, first[3], 0, first[4], first[0], 0, 0, 0) + b"\0" * 32
    offset = image.get_offset_from_rva(start)
    image.OPTIONAL_HEADER.DATA_DIRECTORY[IMPORT].Size = len(table)
    image.OPTIONAL_HEADER.DATA_DIRECTORY[DELAY].VirtualAddress = start + len(table)
    image.OPTIONAL_HEADER.DATA_DIRECTORY[DELAY].Size = 64
    out = bytearray(image.write())  # pefile writes back the parsed descriptors: patch after
    out[offset : offset + len(table) + len(delay)] = table + delay
    return bytes(out)


def export_backend_init(data: bytes) -> bytes:
    """Rename the export ``ggml_backend_is_cpu`` to ``ggml_backend_init`` (the table stays
    sorted), as a ``GGML_BACKEND_DL`` build of the CPU backend exports it."""
    image = parsed(data, EXPORT)
    sym = next(s for s in image.DIRECTORY_ENTRY_EXPORT.symbols if s.name == b"ggml_backend_is_cpu")
    image.set_bytes_at_offset(sym.name_offset, b"ggml_backend_init\0\0\0")
    return bytes(image.write())


def release_tree(files: dict[str, bytes], dest: Path) -> Path:
    """Upstream's Windows zip layout: everything at the top, one tool per .exe."""
    dest.mkdir(parents=True, exist_ok=True)
    server = rename_imports(
        files["module.pyd"], {"python311.dll": "USER32.dll", "whisper.dll": "llama.dll"}
    )
    layout = {
        "llama-server.exe": server,
        "llama-cli.exe": server,
        "llama.dll": delay_first_import(
            rename_imports(files["whisper.dll"], {"msvcp140.dll": "msvcp140.dll"})
        ),
        "llama-server-impl.dll": rename_imports(files["whisper.dll"], {}),
        "ggml.dll": rename_imports(files["ggml.dll"], {"ggml-cpu.dll": "ADVAPI32.dll"}),
        "ggml-base.dll": rename_imports(files["ggml-base.dll"], {"vcomp140.dll": "VCOMP140.DLL"}),
        "ggml-cpu-haswell.dll": export_backend_init(rename_imports(files["ggml-cpu.dll"], {})),
        "ggml-rpc.dll": files["ggml-cpu.dll"],  # a ggml DLL that is no backend: not needed
        "MSVCP140.dll": files["msvcp140.dll"],  # Microsoft's bytes, signed
        "vcomp140.dll": files["vcomp140.dll"],  # Microsoft's bytes, signed
        "LICENSE-curl": b"not a binary\n",
    }
    for name, data in layout.items():
        (dest / name).write_bytes(data)
    return dest


def release_zip(files: dict[str, bytes], work: Path, name: str) -> Path:
    return zip_tree(release_tree(files, work / "tree"), work / name)


EXPECTED_LIBS = [
    "ggml-base.dll",
    "ggml-cpu-haswell.dll",
    "ggml.dll",
    "llama-server-impl.dll",
    "llama.dll",
    "MSVCP140.dll",
    "vcomp140.dll",
]


def test_the_dll_rule_sorts_windows_runtime_and_ours() -> None:
    for name in (
        "KERNEL32.dll",
        "kernel32.DLL",
        "ADVAPI32.dll",
        "api-ms-win-crt-runtime-l1-1-0.dll",
        "API-MS-WIN-CORE-SYNCH-L1-2-0.DLL",
        "ext-ms-win-ntuser-window-l1-1-0.dll",
        "nvcuda.dll",
        "vulkan-1.dll",
        "C:\\Windows\\System32\\ws2_32.dll",
    ):
        assert pe.dll_kind(name) == "windows", name
    for name in (
        "VCRUNTIME140.dll",
        "vcruntime140_1.dll",
        "MSVCP140.dll",
        "msvcp140_2.dll",
        "MSVCP140_ATOMIC_WAIT.dll",
        "vcomp140.dll",
        "libomp140.x86_64.dll",
        "CONCRT140.dll",
    ):
        assert pe.dll_kind(name) == "redist", name
    for name in (
        "ggml.dll",
        "llama-server-impl.dll",
        "cudart64_12.dll",
        "cublas64_12.dll",
        "vcruntime140.dll.evil",
        "msvcp140x.dll",
        "libomp140.dll",
        "kernel32.dll.dll",
    ):
        assert pe.dll_kind(name) == "other", name
    assert host_system_check("KERNEL32.dll", "pe") and host_system_check("VCOMP140.DLL", "pe")
    assert not host_system_check("ggml.dll", "pe")
    assert pe.split_provided(["VCRUNTIME140.dll", "KERNEL32.dll", "api-ms-win-x.dll"]) == {
        "windows": ["api-ms-win-x.dll", "KERNEL32.dll"],
        "redist": ["VCRUNTIME140.dll"],
    }


def test_real_dlls_are_read(win_files: dict[str, bytes], tmp_path: Path) -> None:
    tree = release_tree(win_files, tmp_path)
    assert sniff(tree / "ggml.dll") == "pe" and sniff(tree / "LICENSE-curl") is None
    exe = pe.read_pe(tree / "llama-server.exe")
    assert exe.machine == "x64" and exe.is_dll  # the module's own header: a DLL
    assert "llama.dll" in exe.imports and "USER32.dll" in exe.imports and not exe.delay_imports
    llama = read_image(tree / "llama.dll")
    weak = [n.name for n in llama.needed if n.weak]
    assert weak == ["ggml.dll"]  # the delay-load import
    assert "ggml-base.dll" in [n.name for n in llama.needed if not n.weak]
    assert read_image(tree / "ggml-cpu-haswell.dll").backend_module
    assert not read_image(tree / "ggml-rpc.dll").backend_module
    assert not read_image(tree / "ggml.dll").backend_module
    assert pe.impl_name(tree / "llama-server.exe") == "llama-server-impl.dll"
    assert pe.impl_name(Path("llama-server")) == "llama-server-impl.dll"
    assert pe.find_dll(tree, "VCOMP140.DLL") == tree / "vcomp140.dll"
    assert pe.find_dll(tree, "C:\\x\\msvcp140.dll") == tree / "MSVCP140.dll"
    assert pe.find_dll(tree / "none", "ggml.dll") is None
    assert pe.find_dll(tree, "nothing.dll") is None
    (tree / "sub.dll").mkdir()
    assert pe.find_dll(tree, "sub.dll") is None  # a directory is no DLL


def test_closure_of_a_windows_release(win_files: dict[str, bytes], tmp_path: Path) -> None:
    tree = release_tree(win_files, tmp_path)
    (tree / "ggml-readme.dll").write_text("a ggml-*.dll that is no PE file\n")
    (tree / "ggml-dir.dll").mkdir()
    binary = find_binary(tree, "llama-server")
    assert binary.name == "llama-server.exe"
    closure = compute(tree, binary)
    assert closure.format == "pe"
    assert list(closure.libs) == EXPECTED_LIBS
    # loaded at run time: the tool's -impl.dll and the backend that exports ggml_backend_init
    assert closure.runtime == ("ggml-cpu-haswell.dll", "llama-server-impl.dll")
    # Windows' own DLLs, and the VC++ runtime the build does not carry; never bundled
    provided = pe.split_provided(closure.system)
    assert provided["redist"] == ["VCRUNTIME140.dll", "VCRUNTIME140_1.dll"]
    assert {"KERNEL32.dll", "USER32.dll", "ADVAPI32.dll"} <= set(provided["windows"])
    assert all(
        n.lower().startswith("api-ms-win-") or n.isupper() or n.split(".")[0].isupper()
        for n in provided["windows"]
    )
    # MSVCP140 imported as MSVCP140.dll and msvcp140.dll: one file, its own name
    assert "msvcp140.dll" not in closure.libs and closure.libs["MSVCP140.dll"] == "MSVCP140.dll"


def test_impl_imported_is_link_time_and_delay_load_may_be_absent(
    win_files: dict[str, bytes], tmp_path: Path
) -> None:
    tree = release_tree(win_files, tmp_path)
    server = rename_imports(
        win_files["module.pyd"],
        {"python311.dll": "USER32.dll", "whisper.dll": "llama-server-impl.dll"},
    )
    (tree / "llama-server.exe").write_bytes(server)
    (tree / "llama.dll").unlink()
    closure = compute(tree, tree / "llama-server.exe")
    assert "llama-server-impl.dll" in closure.libs and "llama.dll" not in closure.libs
    assert closure.runtime == ("ggml-cpu-haswell.dll",)  # the impl is imported: link time

    # llama.dll delay-loads ggml.dll: when that is absent, loading still works
    tree2 = release_tree(win_files, tmp_path / "b")
    (tree2 / "ggml.dll").unlink()
    (tree2 / "llama-server-impl.dll").unlink()
    closure = compute(tree2, tree2 / "llama-server.exe")
    assert "ggml.dll" not in closure.libs and "llama.dll" in closure.libs


def test_missing_dll_and_a_link_out_of_the_tree_are_refused(
    win_files: dict[str, bytes], tmp_path: Path
) -> None:
    tree = release_tree(win_files, tmp_path / "t")
    (tree / "ggml-base.dll").unlink()
    with pytest.raises(ClosureError, match=r"ggml-base\.dll \(needed by"):
        compute(tree, tree / "llama-server.exe")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ggml-base.dll").write_bytes(win_files["ggml-base.dll"])
    (tree / "ggml-base.dll").symlink_to(outside / "ggml-base.dll")
    with pytest.raises(ClosureError, match="ggml-base"):
        compute(tree, tree / "llama-server.exe")
    # a backend that is a link is not followed; an -impl.dll that leaves the tree is left out
    tree3 = release_tree(win_files, tmp_path / "t3")
    (tree3 / "ggml-cpu-haswell.dll").rename(outside / "ggml-cpu-haswell.dll")
    (tree3 / "ggml-cpu-haswell.dll").symlink_to(outside / "ggml-cpu-haswell.dll")
    (tree3 / "llama-server-impl.dll").rename(outside / "impl.dll")
    (tree3 / "llama-server-impl.dll").symlink_to(outside / "impl.dll")
    closure = compute(tree3, tree3 / "llama-server.exe")
    assert closure.runtime == ()


def test_truncated_and_fake_pe_files(win_files: dict[str, bytes], tmp_path: Path) -> None:
    cut = tmp_path / "cut.dll"
    cut.write_bytes(win_files["ggml.dll"][:600])
    assert sniff(cut) == "pe"
    with pytest.raises(BinaryFormatError, match="not a valid PE file"):
        read_image(cut)
    mz = tmp_path / "mz.exe"
    mz.write_bytes(b"MZ" + b"\0" * 62)  # an MZ stub with no PE header
    assert sniff(mz) is None
    short = tmp_path / "short.exe"
    short.write_bytes(b"MZ\0\0")
    assert sniff(short) is None
    assert not pe.is_pe(b"MZ", b"PE\0\0")


def test_authenticode_state_and_digest(win_files: dict[str, bytes], tmp_path: Path) -> None:
    tree = release_tree(win_files, tmp_path)
    report = pe.signature_report(tree)
    assert report["MSVCP140.dll"] == "signed" and report["vcomp140.dll"] == "signed"
    assert report["ggml.dll"] == "unsigned" and "LICENSE-curl" not in report
    assert read_image(tree / "vcomp140.dll").signed and not read_image(tree / "ggml.dll").signed

    # The digest is the one Microsoft signed: strip the signature and it stays the same.
    signed = tree / "vcomp140.dll"
    _state, digest = pe.authenticode(signed)
    image = pefile.PE(str(signed))
    offset = image.OPTIONAL_HEADER.DATA_DIRECTORY[4].VirtualAddress
    image.OPTIONAL_HEADER.DATA_DIRECTORY[4].VirtualAddress = 0
    image.OPTIONAL_HEADER.DATA_DIRECTORY[4].Size = 0
    image.OPTIONAL_HEADER.CheckSum = 0
    stripped = bytes(image.write())[:offset]
    image.close()
    plain = tmp_path / "plain.dll"
    plain.write_bytes(stripped)
    assert pe.authenticode(plain) == ("unsigned", digest)
    # signing pads the file with zeros to 8 bytes: the unpadded original hashes the same,
    # and any other byte does not
    assert stripped.endswith(b"\0" * 3)
    plain.write_bytes(stripped[:-3])
    assert pe.authenticode(plain) == ("unsigned", digest)
    plain.write_bytes(stripped[:-3] + b"\1")
    assert pe.authenticode(plain)[1] != digest

    # one changed byte after signing: still carries a signature, no longer over these bytes
    data = bytearray(signed.read_bytes())
    data[0x400] ^= 0xFF
    (tmp_path / "changed.dll").write_bytes(bytes(data))
    assert pe.authenticode(tmp_path / "changed.dll")[0] == "mismatch"
    # a security directory that points past the end or at no WIN_CERTIFICATE: unsigned
    for address, size in ((len(data) - 4, 64), (0x400, 64)):
        image = pefile.PE(data=bytes(signed.read_bytes()))
        image.OPTIONAL_HEADER.DATA_DIRECTORY[4].VirtualAddress = address
        image.OPTIONAL_HEADER.DATA_DIRECTORY[4].Size = size
        (tmp_path / "odd.dll").write_bytes(bytes(image.write()))
        assert pe.authenticode(tmp_path / "odd.dll")[0] == "unsigned"


def test_signed_since_and_require_signed(win_files: dict[str, bytes], tmp_path: Path) -> None:
    tree = tmp_path / "b"
    tree.mkdir()
    signed = win_files["vcomp140.dll"]
    image = pefile.PE(data=signed)
    offset = image.OPTIONAL_HEADER.DATA_DIRECTORY[4].VirtualAddress
    image.OPTIONAL_HEADER.DATA_DIRECTORY[4].VirtualAddress = 0
    image.OPTIONAL_HEADER.DATA_DIRECTORY[4].Size = 0
    unsigned = bytes(image.write())[:offset]
    (tree / "vcomp140.dll").write_bytes(unsigned)
    before = pe.file_entry(tree / "vcomp140.dll")
    assert before["authenticode"] == "unsigned"
    with pytest.raises(SignatureError, match=r"1 PE file\(s\) in b are not signed") as err:
        pe.require_signed(tree)
    assert "vcomp140.dll is unsigned" in err.value.why
    assert pe.signature_note(pe.signature_report(tree)) == [
        "Authenticode: 0 of 1 PE files signed (not signed: vcomp140.dll)"
    ]
    (tree / "vcomp140.dll").write_bytes(signed)  # the app's signing step
    after = pe.file_entry(tree / "vcomp140.dll")
    assert pe.signed_since(before, after) and pe.require_signed(tree) == 1
    assert pe.signature_note(pe.signature_report(tree)) == ["Authenticode: 1 of 1 PE files signed"]
    assert not pe.signed_since({"sha256": "x"}, after)  # no digest recorded: no pass
    assert not pe.signed_since(before, {**after, "authenticode": "mismatch"})
    other = pe.file_entry(tree / "vcomp140.dll") | {"unsigned_sha256": "0" * 64}
    assert not pe.signed_since(before, other)
    data = bytearray(signed)
    data[0x400] ^= 0xFF
    (tree / "vcomp140.dll").write_bytes(bytes(data))
    with pytest.raises(SignatureError) as err:
        pe.require_signed(tree)
    assert "signed over other bytes" in err.value.why
    assert pe.signature_note({}) == []


def test_drift_compares_like_with_like() -> None:
    assert library_kind("libggml.so.0") == "elf" and library_kind("libllama.so") == "elf"
    assert library_kind("./Frameworks/libllama.dylib") == "macho"
    assert library_kind("GGML.DLL") == "pe" and library_kind("bin\\ggml.dll") == "pe"
    assert library_kind("llama-server") is None and library_kind("a.so.x") is None
    declared = ["libllama.dylib", "libggml.dylib", "ggml.dll", "llama.dll", "libllama.so.0"]
    assert split_declared(declared, "pe") == (
        ["ggml.dll", "llama.dll"],
        ["libllama.dylib", "libggml.dylib", "libllama.so.0"],
    )
    # Linux: only .so entries count (the .dylib ones belong to the macOS build)
    assert drift(["libllama.so.0", "libggml.so.0"], declared) == (["libggml.so.0"], [])
    assert drift(["libllama.so.0"], declared, "elf") == ([], [])
    # Windows: .dll names in any case, against the .dll entries only
    assert drift(["GGML.dll", "MSVCP140.dll"], [*declared, "bin\\msvcp140.DLL"], "pe") == (
        [],
        ["llama.dll"],
    )
    assert drift(["libllama.dylib"], declared, "macho") == ([], ["libggml.dylib"])
    # no library names at all: plain comparison by file name
    assert drift(["a"], ["b"]) == (["a"], ["b"])


def test_fixture_files_stay_pe(win_files: dict[str, bytes], tmp_path: Path) -> None:
    """The edits keep every file a valid PE that pefile and llamapin read the same way."""
    tree = release_tree(win_files, tmp_path)
    for path in sorted(tree.iterdir()):
        if sniff(path) == "pe":
            image = pefile.PE(str(path))
            names = [e.dll.decode() for e in getattr(image, "DIRECTORY_ENTRY_IMPORT", [])]
            assert list(pe.read_pe(path).imports) == list(dict.fromkeys(names))
            image.close()
    shutil.rmtree(tree)
