"""The verified-bundle memo: ensure's no-op skips re-hashing a bundle none of whose entries
changed since it last passed `verify_bundle`; any change through the filesystem (a write with
the mtime put back, a new file or link, a removed file, a chmod, a whole new install) forces the
full check; `llamapin verify` always hashes. What the memo trusts is pinned down here."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from llamapin.engine import bundle as bnd
from llamapin.errors import BundleError
from llamapin.memo import Memo
from tests.conftest import compile_so


def install(tmp_path: Path, name: str = "bundle") -> Path:
    """A real ELF bundle (an executable and the library it needs) with its manifest."""
    build = Path(tempfile.mkdtemp(prefix=f"build-{name}-", dir=tmp_path))
    compile_so(build, "libtiny.so", "int tiny(void) { return 7; }\n")
    compile_so(
        build,
        "tiny-server",
        "int tiny(void);\nint main(void) { return tiny() - 7; }\n",
        needs=["libtiny.so"],
        exe=True,
    )
    stage = Path(tempfile.mkdtemp(prefix=f"stage-{name}-", dir=tmp_path))
    (stage / "bin").mkdir()
    (stage / "lib").mkdir()
    shutil.copy(build / "tiny-server", stage / "bin" / "tiny-server")
    shutil.copy(build / "libtiny.so", stage / "lib" / "libtiny.so")
    manifest = bnd.Manifest("k", {}, {}, "bin/tiny-server", bnd.file_table(stage), {})
    target = tmp_path / name
    bnd.swap_in(stage, target, manifest)
    return target


def memo_of(tmp_path: Path) -> Memo:
    return Memo(tmp_path / "cache" / bnd.VERIFIED_BUNDLES)


def remembered(memo: Memo) -> dict[str, object]:
    data: dict[str, object] = json.loads(memo.path.read_text())
    return data


def test_an_unchanged_bundle_is_remembered_and_the_memo_is_what_is_trusted(
    tmp_path: Path,
) -> None:
    bundle = install(tmp_path)
    memo = memo_of(tmp_path)
    manifest = bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)
    assert manifest.binary == "bin/tiny-server"
    assert remembered(memo) == {str(bundle.resolve()): bnd.tree_stamp(bundle)}
    assert bnd.verify_bundle_remembered(bundle, memo, racy_ns=0) == manifest
    # The memo is what a remembered check trusts: someone who can write the cache can swap a
    # library and record its new stat (documented in docs/reliability.md). The full check,
    # which `llamapin verify` runs, still sees the change.
    lib = bundle / "lib" / "libtiny.so"
    lib.write_bytes(lib.read_bytes() + b"\0")
    memo.put(str(bundle.resolve()), bnd.tree_stamp(bundle))
    assert bnd.verify_bundle_remembered(bundle, memo, racy_ns=0) == manifest
    with pytest.raises(BundleError, match="differs from its manifest"):
        bnd.verify_bundle(bundle)


def test_a_write_with_the_mtime_put_back_forces_the_full_check(tmp_path: Path) -> None:
    bundle = install(tmp_path)
    memo = memo_of(tmp_path)
    bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)
    time.sleep(0.1)  # a later timestamp tick (the 2 s default margin guarantees it in use)
    exe = bundle / "bin" / "tiny-server"
    before = exe.stat()
    with exe.open("r+b") as handle:
        handle.seek(before.st_size - 16)
        handle.write(b"\xff" * 16)
    os.utime(exe, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (exe.stat().st_size, exe.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(BundleError, match="differs from its manifest") as info:
        bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)
    assert "changed: bin/tiny-server" in info.value.detail


@pytest.mark.parametrize("change", ["extra file", "removed file", "chmod", "link"])
def test_any_change_of_the_tree_forces_the_full_check(tmp_path: Path, change: str) -> None:
    bundle = install(tmp_path)
    memo = memo_of(tmp_path)
    bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)
    time.sleep(0.1)
    lib = bundle / "lib" / "libtiny.so"
    if change == "extra file":
        (bundle / "lib" / "libextra.so").write_bytes(b"\x7fELF")
    elif change == "removed file":
        lib.unlink()
    elif change == "chmod":
        lib.chmod(stat.S_IMODE(lib.stat().st_mode) ^ stat.S_IXOTH)
    else:  # links are not bundle files (verify ignores them), but the tree has changed
        (bundle / "lib" / "libother.so").symlink_to("/etc/hostname")
    assert memo.get(str(bundle.resolve())) != bnd.tree_stamp(bundle)
    if change == "extra file":
        with pytest.raises(BundleError, match="differs") as info:
            bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)
        assert "not in manifest: lib/libextra.so" in info.value.detail
    elif change == "removed file":
        with pytest.raises(BundleError, match="differs") as info:
            bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)
        assert "missing: lib/libtiny.so" in info.value.detail
    else:  # the full check ran, passed as verify does, and the new state is remembered
        bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)
        assert memo.get(str(bundle.resolve())) == bnd.tree_stamp(bundle)


def test_a_reinstalled_bundle_is_checked_again(tmp_path: Path) -> None:
    bundle = install(tmp_path)
    memo = memo_of(tmp_path)
    bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)
    first = memo.get(str(bundle.resolve()))
    shutil.rmtree(bundle)
    again = install(tmp_path)  # same path, same bytes, new files
    assert again == bundle
    assert bnd.tree_stamp(bundle) != first
    bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)
    assert memo.get(str(bundle.resolve())) == bnd.tree_stamp(bundle)


def test_a_freshly_written_bundle_is_not_remembered(tmp_path: Path) -> None:
    """Within the racy margin (2 s by default) of its last change a bundle is checked in
    full every time: a write in the same timestamp tick could leave its stat unchanged. (A
    margin of days here, so that a stalled machine cannot make the bundle old enough.)"""
    bundle = install(tmp_path)
    memo = memo_of(tmp_path)
    bnd.verify_bundle_remembered(bundle, memo, racy_ns=10**15)  # however slow this machine is
    assert memo.get(str(bundle.resolve())) is None


def test_a_damaged_memo_or_a_bad_manifest_behind_it_costs_only_the_full_check(
    tmp_path: Path,
) -> None:
    bundle = install(tmp_path)
    memo = memo_of(tmp_path)
    memo.path.parent.mkdir(parents=True)
    memo.path.write_text("[not a memo")
    assert bnd.verify_bundle_remembered(bundle, memo, racy_ns=0).binary == "bin/tiny-server"
    assert memo.get(str(bundle.resolve())) == bnd.tree_stamp(bundle)
    # A memo entry that matches a tree whose manifest no longer reads: the full check
    # says what is wrong.
    (bundle / bnd.MANIFEST).write_text("{}")
    memo.put(str(bundle.resolve()), bnd.tree_stamp(bundle))
    with pytest.raises(BundleError, match="no valid manifest"):
        bnd.verify_bundle_remembered(bundle, memo, racy_ns=0)


def test_bundles_that_are_gone_are_forgotten(tmp_path: Path) -> None:
    one = install(tmp_path, "one")
    two = install(tmp_path, "two")
    memo = memo_of(tmp_path)
    bnd.verify_bundle_remembered(one, memo, racy_ns=0)
    bnd.verify_bundle_remembered(two, memo, racy_ns=0)
    assert set(remembered(memo)) == {str(one.resolve()), str(two.resolve())}
    shutil.rmtree(one)
    # entries no one can even ask about (a name too long for the OS) are dropped as well
    memo.put("/" + "x" * 5000, [])
    (two / "lib" / "libtiny.so").chmod(0o700)  # forces a new record for two
    bnd.verify_bundle_remembered(two, memo, racy_ns=0)
    assert set(remembered(memo)) == {str(two.resolve())}
