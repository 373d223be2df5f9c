"""Upstream-shaped release archives made of real files, for the tests that install a macOS or
Windows engine on this (Linux) host, and the way they are served.

- macOS: ``llama-<tag>-bin-macos-arm64.zip`` holds the real signed arm64 dylibs of a macOS
  wheel under ``build/bin/``, with the wheel's Python extension (a real arm64 Mach-O image that
  loads them) in the engine's place (see tests/integration/test_macos_bundle.py).
- Windows: ``llama-<tag>-bin-win-<variant>-x64.zip`` holds real Windows DLLs of a Windows
  wheel at the top, as upstream's zips do (see tests/unit/test_pe_closure.py).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pefile  # type: ignore[import-untyped]

from llamapin.engine.sources import windows_asset_name
from llamapin.fetch import sha256_file
from llamapin.pin import Asset
from tests.conftest import FileServer

ARM_EXE = "_pywhispercpp.cpython-311-darwin.so"  # arm64 MH_BUNDLE, signed, needs macOS 11.0
ARM_LIBS = "pywhispercpp/.dylibs"  # the six signed arm64 dylibs it loads by @loader_path
DOWNLOAD = "/ggml-org/llama.cpp/releases/download/{tag}/"


def macos_release_zip(tree: Path, dest: Path, exe: str = ARM_EXE, libs: str = ARM_LIBS) -> Path:
    """An upstream-shaped macOS release archive: ``build/bin/llama-server`` and its dylibs,
    plus files the engine does not need (unlinked duplicates and a text file) to prune."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:

        def add(src: Path, arcname: str) -> None:
            info = zipfile.ZipInfo(arcname)
            info.external_attr = 0o100755 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, src.read_bytes())

        add(tree / exe, "build/bin/llama-server")
        for lib in sorted((tree / libs).iterdir()):
            add(lib, f"build/bin/{libs}/{lib.name}")
        for extra in sorted(tree.glob("lib*.dylib"))[:3]:
            add(extra, f"build/bin/{extra.name}")
        zf.writestr("build/bin/LICENSE", "MIT\n")
    return dest


def zip_tree(tree: Path, archive: Path) -> Path:
    """A zip of ``tree``'s files with no top folder, as upstream's Windows zips are."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for path in sorted(tree.iterdir()):
            out.write(path, path.name)
    return archive


def unsigned(signed: bytes) -> bytes:
    """A PE file as it was before it was signed: no security directory, no certificate."""
    image = pefile.PE(data=signed, fast_load=True)
    offset = image.OPTIONAL_HEADER.DATA_DIRECTORY[4].VirtualAddress
    image.OPTIONAL_HEADER.DATA_DIRECTORY[4].VirtualAddress = 0
    image.OPTIONAL_HEADER.DATA_DIRECTORY[4].Size = 0
    return bytes(image.write())[:offset]


def serve_release(served: FileServer, archive: Path, tag: str = "b10068") -> Asset:
    """Serve ``archive`` where a release download of ``tag`` is fetched from; its lock entry."""
    served.add(DOWNLOAD.format(tag=tag) + archive.name, archive.read_bytes())
    return Asset(archive.name, sha256_file(archive), archive.stat().st_size)


def upstream_archives(
    tmp_path: Path, macho_tree: Path, win: dict[str, bytes], tag: str
) -> list[Path]:
    """``tag``'s macOS (arm64) and Windows (cpu) release archives, named as upstream names
    them, from the macOS wheel's tree and the Windows wheel's DLLs."""
    from tests.unit.test_pe_closure import release_tree  # it imports this module

    out = tmp_path / tag
    out.mkdir()
    mac = macos_release_zip(macho_tree, out / f"llama-{tag}-bin-macos-arm64.zip")
    name = windows_asset_name(tag, "cpu", "windows-x64")
    return [mac, zip_tree(release_tree(win, out / "win"), out / name)]
