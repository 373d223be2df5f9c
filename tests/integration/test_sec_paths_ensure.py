"""Adversarial config paths against the real CLI: a hostile llamapin.toml must not make
ensure, locators, gate or drift write, delete or read anything outside llamapin's own files.

The engine is a tiny real ELF (gcc) that answers ``--version`` like the pinned build,
installed with the ``local`` source, so no download is needed; every test hashes the whole
tree around the project before and after and asserts it is unchanged byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from llamapin.engine.bundle import MANIFEST
from llamapin.pin import Pin, write_lock
from tests.conftest import COMMIT_10068, CliResult, compile_so

PIN = Pin("b10068", COMMIT_10068, {})
VERSION_MAIN = '#include <stdio.h>\nint main(void){puts("version: 10068 (571d0d5)");return 0;}\n'


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build directory holding a real llama-server ELF (and an unrelated file)."""
    build = tmp_path_factory.mktemp("build")
    compile_so(build, "llama-server", VERSION_MAIN, exe=True, rpath=None)
    (build / "llama-server.c").unlink()
    (build / "README").write_text("not part of the closure\n")
    return build


def snapshot(top: Path) -> dict[str, str]:
    """Every entry under ``top``: a file's sha256, a link's target, or 'dir'."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(top))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_line_error(res: CliResult, *needles: str) -> str:
    """The run failed with exit 2 and exactly one 'error:' line, the last one, no traceback."""
    assert res.code == 2, (res.code, res.err)
    assert "Traceback" not in res.err
    lines = res.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def make_project(root: Path, build: Path, tmp: Path, **sections: Any) -> Path:
    """A project with a git directory, source files, a lock and a config."""
    (root / ".git" / "objects").mkdir(parents=True, exist_ok=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".git" / "objects" / "blob").write_bytes(os.urandom(64))
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "main.ts").write_text('export const BUILD = "b10068";\n')
    write_lock(root / "llamapin.lock", PIN)
    engine_section = {"source": "local", "path": str(build), **sections.pop("engine", {})}
    config = {"cache_dir": str(tmp / "cache"), "engine": engine_section, **sections}
    (root / "llamapin.toml").write_text(tomli_w.dumps(config))
    return root


@pytest.mark.parametrize(
    ("bundle_dir", "why"),
    [
        (".", "the project root itself"),
        ("..", "outside the project root"),
        ("../app", "the project root itself"),
        ("src/..", "the project root itself"),
        ("../neighbour", "outside the project root"),
        ("/", "outside the project root"),
    ],
)
def test_bundle_dir_that_is_not_a_dedicated_subdirectory_is_refused(
    tmp_path: Path, engine_dir: Path, run_cli: Any, bundle_dir: str, why: str
) -> None:
    """Before: bundle.dir = "." replaced the whole project, .git included."""
    root = make_project(tmp_path / "app", engine_dir, tmp_path, bundle={"dir": bundle_dir})
    (tmp_path / "neighbour").mkdir()
    (tmp_path / "neighbour" / "keep.txt").write_text("someone else's\n")
    before = snapshot(tmp_path)
    res = run_cli("--root", str(root), "ensure")
    one_line_error(res, "bundle.dir", "is not a dedicated directory", why)
    assert snapshot(tmp_path) == before


def test_bundle_dir_home_is_refused(tmp_path: Path, engine_dir: Path, run_cli: Any) -> None:
    """A project whose root holds the home directory (a runner checked out at /):
    bundle.dir pointing at home is refused, and home is not touched."""
    home = Path.home().resolve()
    rel = os.path.relpath(home, "/")
    root = make_project(tmp_path / "app", engine_dir, tmp_path, bundle={"dir": str(home)})
    res = run_cli("--root", str(root), "ensure")
    one_line_error(res, "bundle.dir", "outside the project root")
    # With the project root at '/', home is inside it: still refused, as the home directory.
    cfg = tmp_path / "root.toml"
    cfg.write_text(
        tomli_w.dumps(
            {
                "cache_dir": str(tmp_path / "c"),
                "lock": str(root / "llamapin.lock"),
                "engine": {"source": "local", "path": str(engine_dir)},
                "bundle": {"dir": rel},
            }
        )
    )
    res = run_cli("--root", "/", "--config", str(cfg), "ensure")
    one_line_error(res, "bundle.dir", "home directory")


def test_bundle_dir_holding_the_lock_is_refused(
    tmp_path: Path, engine_dir: Path, run_cli: Any
) -> None:
    root = make_project(
        tmp_path / "app", engine_dir, tmp_path, bundle={"dir": "pins"}, lock="pins/llamapin.lock"
    )
    (root / "pins").mkdir()
    write_lock(root / "pins" / "llamapin.lock", PIN)
    before = snapshot(tmp_path)
    one_line_error(run_cli("--root", str(root), "ensure"), "bundle.dir", "contains llamapin.lock")
    assert snapshot(tmp_path) == before


def test_bundle_dir_is_a_file(tmp_path: Path, engine_dir: Path, run_cli: Any) -> None:
    root = make_project(tmp_path / "app", engine_dir, tmp_path, bundle={"dir": "src/main.ts"})
    before = snapshot(tmp_path)
    one_line_error(run_cli("--root", str(root), "ensure"), "bundle.dir", "is a file")
    assert snapshot(tmp_path) == before


def test_tauri_sidecar_dir_with_a_neighbour_binary(
    tmp_path: Path, engine_dir: Path, run_cli: Any
) -> None:
    """Before: bundle.dir = "src-tauri/binaries" silently deleted the app's other sidecar.
    Now: refused before anything moves; a dedicated subdirectory works beside it."""
    root = make_project(
        tmp_path / "app", engine_dir, tmp_path, bundle={"dir": "src-tauri/binaries"}
    )
    sidecars = root / "src-tauri" / "binaries"
    sidecars.mkdir(parents=True)
    compile_so(
        sidecars,
        "whisper-x86_64-unknown-linux-gnu",
        "int main(void){return 0;}\n",
        exe=True,
        rpath=None,
    )
    before = snapshot(tmp_path)
    line = one_line_error(
        run_cli("--root", str(root), "ensure"),
        "bundle.dir",
        "llamapin did not install",
        "dedicated subdirectory",
    )
    assert "whisper-x86_64-unknown-linux-gnu" in line
    assert snapshot(tmp_path) == before  # no lock file, no staging dir, nothing

    # The fix the error names: a subdirectory of its own.
    make_project(root, engine_dir, tmp_path, bundle={"dir": "src-tauri/binaries/llama"})
    before = snapshot(tmp_path)
    res = run_cli("--root", str(root), "ensure", "--json")
    assert res.code == 0, res.err
    after = snapshot(tmp_path)
    ours = "app/src-tauri/binaries/llama"
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all(
        k.startswith(ours) or k == "app/src-tauri/binaries/.llama.lock" for k in changed
    ), changed
    assert json.loads((sidecars / "llama" / MANIFEST).read_text())["files"].keys() == {
        "llama-server"
    }


def test_existing_bundle_with_foreign_files(tmp_path: Path, engine_dir: Path, run_cli: Any) -> None:
    """A bundle llamapin installed may be replaced; one a person added files to may not."""
    root = make_project(tmp_path / "app", engine_dir, tmp_path)
    bundle = root / ".llamapin" / "engine"
    bundle.mkdir(parents=True)  # an empty directory is fine
    assert run_cli("--root", str(root), "ensure").code == 0
    assert run_cli("--root", str(root), "ensure", "--force").code == 0  # only our files: fine

    (bundle / "notes.txt").write_text("mine\n")
    (bundle / "sub").mkdir()
    (bundle / "sub" / "link").symlink_to(root / "src" / "main.ts")
    before = snapshot(tmp_path)
    for args in (("ensure", "--force"), ("ensure",)):
        one_line_error(run_cli("--root", str(root), *args), "2 file(s) llamapin did not install")
        assert snapshot(tmp_path) == before

    # No manifest at all: every file in it is someone else's.
    (bundle / MANIFEST).unlink()
    before = snapshot(tmp_path)
    one_line_error(run_cli("--root", str(root), "ensure"), f"it has no {MANIFEST}")
    assert snapshot(tmp_path) == before


def test_delegated_output_must_be_a_subdirectory(
    tmp_path: Path, engine_dir: Path, run_cli: Any
) -> None:
    """ensure.output = "." would have hashed and stamped the whole project; the script
    does not even start."""
    root = make_project(tmp_path / "app", engine_dir, tmp_path)
    script = root / "build-engine.sh"
    script.write_text('#!/bin/sh\ntouch ran\nmkdir -p out\ncp "$1" out/\n')
    script.chmod(0o755)
    for output in (".", "..", "/tmp"):
        make_project(
            root,
            engine_dir,
            tmp_path,
            ensure={"command": f"./build-engine.sh {engine_dir}/llama-server", "output": output},
        )
        before = snapshot(tmp_path)
        one_line_error(run_cli("--root", str(root), "ensure"), "ensure.output")
        assert snapshot(tmp_path) == before and not (root / "ran").exists()
    make_project(
        root,
        engine_dir,
        tmp_path,
        ensure={"command": f"./build-engine.sh {engine_dir}/llama-server", "output": "out"},
    )
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 0, res.err
    assert (root / "out" / MANIFEST).is_file()


@pytest.mark.parametrize("binary", ["/bin/true", "../llama-server", "bin/../../x", ".", ""])
def test_engine_binary_must_stay_in_the_bundle(
    tmp_path: Path, engine_dir: Path, run_cli: Any, binary: str
) -> None:
    root = make_project(tmp_path / "app", engine_dir, tmp_path, engine={"binary": binary})
    before = snapshot(tmp_path)
    one_line_error(run_cli("--root", str(root), "ensure"), "engine.binary", "not a path inside")
    assert snapshot(tmp_path) == before


def test_engine_binary_symlink_out_of_the_build(
    tmp_path: Path, engine_dir: Path, run_cli: Any
) -> None:
    """A build whose llama-server is a link to a binary elsewhere is not installed."""
    build = tmp_path / "build"
    build.mkdir()
    (build / "llama-server").symlink_to(engine_dir / "llama-server")
    root = make_project(tmp_path / "app", build, tmp_path)
    one_line_error(run_cli("--root", str(root), "ensure"), "engine.binary", "leaves the bundle")
    assert not (root / ".llamapin" / "engine").exists()
    # Delegated: the script leaves a link to a binary outside its output.
    script = root / "build-engine.sh"
    script.write_text(f"#!/bin/sh\nmkdir -p out\nln -sf {engine_dir}/llama-server out/\n")
    script.chmod(0o755)
    make_project(root, build, tmp_path, ensure={"command": "./build-engine.sh", "output": "out"})
    one_line_error(run_cli("--root", str(root), "ensure"), "engine.binary", "leaves the bundle")
    assert not (root / "out" / MANIFEST).exists()


def test_locator_files_outside_the_root(tmp_path: Path, engine_dir: Path, run_cli: Any) -> None:
    """locators --write with a locator file outside the project leaves it byte for byte."""
    root = make_project(tmp_path / "app", engine_dir, tmp_path)
    sentinel = tmp_path / "outside.ts"
    sentinel.write_text('export const BUILD = "b1";\n')
    (root / "src" / "escape.ts").symlink_to(sentinel)
    for file in ("../outside.ts", str(sentinel), "src/escape.ts", "src/../../outside.ts"):
        locator = {"file": file, "field": "build", "regex": 'BUILD = "(b[0-9]+)"'}
        make_project(root, engine_dir, tmp_path, locators=[locator])
        before = snapshot(tmp_path)
        for args in (("locators", "--write"), ("locators",)):
            one_line_error(
                run_cli("--root", str(root), *args), "locator file", "outside the project root"
            )
            assert snapshot(tmp_path) == before
    # Inside the root (absolute or relative), it works and only that file changes.
    (root / "src" / "main.ts").write_text('export const BUILD = "b1";\n')
    for file in (str(root / "src" / "main.ts"), "src/main.ts"):
        locator = {"file": file, "field": "build", "regex": 'BUILD = "(b[0-9]+)"'}
        make_project(root, engine_dir, tmp_path, locators=[locator])
        assert run_cli("--root", str(root), "locators", "--write").code == 0
        assert run_cli("--root", str(root), "locators").code == 0
    assert sentinel.read_text() == 'export const BUILD = "b1";\n'


def test_lock_suite_and_frameworks_outside_the_root(
    tmp_path: Path, engine_dir: Path, run_cli: Any
) -> None:
    root = make_project(tmp_path / "app", engine_dir, tmp_path)
    write_lock(tmp_path / "other.lock", PIN)
    (tmp_path / "suite.toml").write_text('[[prompt]]\ntext = "x"\ncontains = "x"\n')
    (tmp_path / "tauri.conf.json").write_text('{"bundle": {"macOS": {"frameworks": []}}}')
    (root / "linked.lock").symlink_to(tmp_path / "other.lock")
    for lock in ("../other.lock", str(tmp_path / "other.lock"), "linked.lock"):
        make_project(root, engine_dir, tmp_path, lock=lock)
        before = snapshot(tmp_path)
        for args in (("ensure",), ("locators",)):
            one_line_error(run_cli("--root", str(root), *args), "lock", "outside the project root")
        assert snapshot(tmp_path) == before

    make_project(root, engine_dir, tmp_path, gate={"suite": "../suite.toml"})
    one_line_error(
        run_cli("--root", str(root), "gate", "--engine", str(engine_dir / "llama-server")),
        "gate.suite",
        "outside the project root",
    )
    make_project(root, engine_dir, tmp_path, bundle={"frameworks_file": "../tauri.conf.json"})
    assert run_cli("--root", str(root), "ensure").code == 0
    one_line_error(
        run_cli("--root", str(root), "drift"), "bundle.frameworks_file", "outside the project root"
    )
    assert snapshot(tmp_path)["tauri.conf.json"] == before["tauri.conf.json"]


def test_a_directory_where_a_file_belongs(tmp_path: Path, engine_dir: Path, run_cli: Any) -> None:
    """Before: a traceback (IsADirectoryError) or a silent fallback. Now: one line each."""
    root = make_project(tmp_path / "app", engine_dir, tmp_path)
    (root / "adir").mkdir()
    cases: list[tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]] = [
        ({"lock": "adir"}, ("locators",), ("lock file", "is a directory")),
        (
            {"locators": [{"file": "adir", "field": "build", "regex": "(b1)"}]},
            ("locators",),
            ("locator file", "is a directory"),
        ),
        (
            {"gate": {"suite": "adir"}},
            ("gate", "--engine", str(engine_dir / "llama-server")),
            ("invalid suite", "is a directory"),
        ),
        ({"bundle": {"frameworks_file": "adir"}}, ("drift",), ("frameworks_file", "directory")),
    ]
    assert run_cli("--root", str(root), "ensure").code == 0
    for section, args, needles in cases:
        make_project(root, engine_dir, tmp_path, **section)
        one_line_error(run_cli("--root", str(root), *args), *needles)
    # The config file itself.
    (root / "llamapin.toml").unlink()
    (root / "llamapin.toml").mkdir()
    one_line_error(run_cli("--root", str(root), "locators"), "config file", "is a directory")
    # --config naming a directory: click's own usage error, exit 2, no traceback.
    res = run_cli("--root", str(root), "--config", str(root / "adir"), "locators")
    assert res.code == 2 and "is a directory" in res.err and "Traceback" not in res.err
