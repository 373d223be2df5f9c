"""``init`` for a config with targets: one gate job per target (a matrix), each on its
runner with ``--target`` and a cache of its own, one combined required check, and a bump
workflow that gates on one target's runner. Read back as YAML, run (the shell steps that
need no engine), and linted with actionlint and zizmor."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with gguf; no stubs

from llamapin.config import Config, TargetConfig, load_config
from llamapin.errors import ConfigError
from llamapin.workflows import (
    BUMP_PATH,
    GATE_PATH,
    SETUP_BUN,
    SETUP_NODE,
    bump_target,
    matrix_entries,
    render,
    render_all,
    runtime_steps,
)
from tests.integration.test_init import actionlint, lint, zizmor

__all__ = ["actionlint"]  # the session fixture, imported to be shared

THREE = """\
[targets.macos-arm64]
platform = "macos-arm64"

[targets.macos-arm64.bundle]
frameworks_file = "tauri.conf.json"

[targets.linux-x64]
platform = "linux-x64"

[targets.windows-x64]
platform = "windows-x64"
gated = false
"""
RUNNERS = {"macos-arm64": "macos-15", "linux-x64": "ubuntu-24.04", "windows-x64": "ubuntu-24.04"}
BIN = Path(sys.executable).parent
EXPR = re.compile(r"\$\{\{ *matrix\.([a-z]+) *\}\}")


def project(root: Path, toml: str) -> Path:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "llamapin.toml").write_text(toml)
    return root


def init(run_cli: Any, root: Path, *args: str) -> Any:
    return run_cli("--root", str(root), *args, "init", "--install", "llamapin==1.2.3")


def read(root: Path, rel: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((root / rel).read_text())
    return data


def jobs_per_target(flow: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """The matrix job as GitHub runs it for each entry: every ``${{ matrix.X }}`` replaced
    by the entry's value (and a condition that is only ``matrix.X``, by its value)."""
    job = flow["jobs"]["target"]
    text = yaml.safe_dump({k: v for k, v in job.items() if k != "strategy"})
    out = {}
    for entry in job["strategy"]["matrix"]["include"]:

        def value(m: re.Match[str], entry: dict[str, Any] = entry) -> str:
            return str(entry[m.group(1)])

        concrete = yaml.safe_load(EXPR.sub(value, text))
        for s in concrete["steps"]:
            only = re.fullmatch(r"matrix\.([a-z]+)", s.get("if", ""))
            if only:
                s["if"] = entry[only.group(1)]
        out[entry["target"]] = concrete
    return out


def step(job: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in job["steps"] if s.get("name", "").startswith(name))
    return found


def commands(job: dict[str, Any]) -> list[str]:
    """Every line of the job's scripts that runs llamapin."""
    return [
        line.strip()
        for s in job["steps"]
        for line in s.get("run", "").splitlines()
        if line.strip().startswith("llamapin ")
    ]


def test_each_target_job_has_its_runner_target_and_cache(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path, THREE)
    res = init(run_cli, root)
    assert res.code == 0, res.err
    flow = read(root, GATE_PATH)
    jobs = jobs_per_target(flow)
    assert sorted(jobs) == sorted(RUNNERS)
    keys = set()
    for name, job in jobs.items():
        assert job["runs-on"] == RUNNERS[name]
        assert job["name"] == f"engine-gate ({name})"
        assert job["env"] == {"LLAMAPIN_TARGET": name}
        assert job["defaults"] == {"run": {"shell": "bash"}}  # Windows too: no pwsh syntax
        runs = commands(job)
        assert runs and all(' --target "${LLAMAPIN_TARGET}"' in line for line in runs), runs
        cache = step(job, "Cache engine builds")["with"]
        assert cache["path"] == "~/.cache/llamapin"
        prefix = f"llamapin-{name}-${{{{ runner.os }}}}-${{{{ runner.arch }}}}-"
        assert cache["key"] == prefix + "${{ hashFiles('llamapin.lock', 'llamapin.toml') }}"
        assert cache["restore-keys"] == prefix
        keys.add(cache["key"])
        assert step(job, "Upload the gate reports")["with"]["name"] == f"llamapin-gate-{name}"
        gated = name != "windows-x64"
        assert step(job, "Gate")["if"] is gated
        baseline = step(job, "Baseline pin")["if"]
        assert baseline == "matrix.gated && github.event_name == 'pull_request'"
        assert step(job, "Check the declared library list")["if"] is (name == "macos-arm64")
        for always in ("Ensure", "Verify", "Check pin copies"):
            assert "if" not in step(job, always)
        assert [c.split()[1] for c in runs] == ["ensure", "verify", "locators", "drift", "gate"]
    assert len(keys) == 3  # no two targets share a cache
    include = flow["jobs"]["target"]["strategy"]
    assert include["fail-fast"] is False  # one target's failure does not hide another's
    assert [e["gated"] for e in include["matrix"]["include"]] == [True, True, False]


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A workflow step's script, run as the runner runs it (bash -e)."""
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_the_target_steps_run_with_the_same_config(tmp_path: Path, run_cli: Any) -> None:
    """Each job's pin-copy step, run by bash as the runner would with the job's env, reaches
    llamapin with that job's target (a wrong name would be a one-line error, exit 2)."""
    root = project(tmp_path, THREE)
    assert init(run_cli, root).code == 0
    for name, job in jobs_per_target(read(root, GATE_PATH)).items():
        script = step(job, "Check pin copies")["run"]
        env = {**os.environ, **job["env"], "PATH": f"{BIN}:{os.environ['PATH']}"}
        done = bash(script, root, env)
        assert done.returncode == 0, done.stderr
        assert "no locators configured" in done.stdout
        env["LLAMAPIN_TARGET"] = "nowhere"
        done = bash(script, root, env)
        assert done.returncode == 2
        assert "no target named 'nowhere'" in done.stderr, name


@pytest.mark.parametrize(
    ("result", "code"), [("success", 0), ("failure", 1), ("cancelled", 1), ("skipped", 1)]
)
def test_one_combined_check_fails_unless_every_target_passed(
    tmp_path: Path, run_cli: Any, result: str, code: int
) -> None:
    root = project(tmp_path, THREE)
    assert init(run_cli, root).code == 0
    flow = read(root, GATE_PATH)
    final = flow["jobs"]["engine-gate"]
    assert final["name"] == "engine-gate"  # the required check's name is unchanged
    assert final["needs"] == "target"
    assert final["if"] == "always()"
    assert final["runs-on"] == "ubuntu-24.04"
    names = [job.get("name", key) for key, job in flow["jobs"].items()]
    assert names.count("engine-gate") == 1
    only = final["steps"][0]
    assert only["env"] == {"RESULT": "${{ needs.target.result }}"}
    env = {**os.environ, "RESULT": result}
    done = subprocess.run(
        ["bash", "-e", "-c", only["run"]], env=env, capture_output=True, check=False
    )
    assert done.returncode == code


def test_bump_gates_on_the_linux_target(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path, THREE)
    assert init(run_cli, root).code == 0
    bump = read(root, BUMP_PATH)
    assert bump["defaults"] == {"run": {"shell": "bash"}}
    for job in bump["jobs"].values():
        assert job["runs-on"] == "ubuntu-24.04"
        runs = commands(job)
        assert runs and all(line.startswith("llamapin --target linux-x64 ") for line in runs)
    text = (root / BUMP_PATH).read_text()
    assert "installs and gates\n# the candidate for linux-x64 on that" in text
    # the group option form is what the bump scripts use: it reaches the command
    done = subprocess.run(
        [str(BIN / "llamapin"), "--target", "linux-x64", "locators"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_init_refuses_a_config_where_no_target_is_gated(tmp_path: Path) -> None:
    """bump (and so its workflow) gates every candidate: some target must be gated."""
    (tmp_path / "llamapin.toml").write_text(
        '[targets.w]\nplatform = "windows-x64"\ngated = false\n'
        '[targets.l]\nplatform = "linux-x64"\ngated = false\n'
    )
    with pytest.raises(ConfigError, match="no target is gated: the bump workflow gates") as info:
        render_all(load_config(tmp_path), "llamapin==1.2.3", "main")
    assert "a Windows target never is" in info.value.why
    assert "on a Linux or macOS target" in info.value.fix


@pytest.mark.parametrize(
    ("targets", "chosen", "runner"),
    [
        ({"m": ("macos-arm64", True), "w": ("windows-x64", False)}, "m", "macos-15"),
        ({"l": ("linux-x64", False), "m": ("macos-arm64", True)}, "m", "macos-15"),
        ({"a": ("linux-arm64", True), "b": ("linux-x64", True)}, "b", "ubuntu-24.04"),
        ({"a": ("linux-arm64", True), "w": ("windows-x64", False)}, "a", "ubuntu-24.04-arm"),
        ({"w": ("windows-x64", False), "l": ("linux-x64", True)}, "l", "ubuntu-24.04"),
    ],
)
def test_bump_target_prefers_a_gated_linux_x64(
    tmp_path: Path, targets: dict[str, tuple[str, bool]], chosen: str, runner: str
) -> None:
    toml = "".join(
        f'[targets.{n}]\nplatform = "{p}"\ngated = {str(g).lower()}\n'
        for n, (p, g) in targets.items()
    )
    (tmp_path / "llamapin.toml").write_text(toml)
    cfg = load_config(tmp_path)
    assert bump_target(cfg) == chosen
    out = render_all(cfg, "llamapin==1.2.3", "main")
    bump = yaml.safe_load(out[BUMP_PATH])
    assert bump["jobs"]["prepare"]["runs-on"] == runner
    assert f"llamapin --target {chosen} check" in bump["jobs"]["prepare"]["steps"][-2]["run"]
    platform = targets[chosen][0]
    assert f"# the candidate for {chosen} ({platform}) on that target's runner." in out[BUMP_PATH]


def test_init_writes_every_target_even_when_no_target_is_this_hosts(
    tmp_path: Path, run_cli: Any
) -> None:
    """Two targets for one platform: a command without --target cannot choose, but init
    writes CI for all of them; --target, if given, must name one."""
    root = project(
        tmp_path,
        '[targets.a]\nplatform = "linux-x64"\n[targets.b]\nplatform = "linux-x64"\n'
        '[targets.b.engine]\nsource = "release"\n',
    )
    assert run_cli("--root", str(root), "locators").code == 2  # which target?
    res = init(run_cli, root)
    assert res.code == 0, res.err
    targets = [
        e["target"]
        for e in read(root, GATE_PATH)["jobs"]["target"]["strategy"]["matrix"]["include"]
    ]
    assert targets == ["a", "b"]
    res = init(run_cli, root, "--target", "c")
    assert res.code == 2
    assert "no target named 'c'" in res.err
    assert init(run_cli, root, "--target", "b").out.startswith("unchanged:")


def test_a_config_without_targets_keeps_the_single_job_workflow(tmp_path: Path) -> None:
    (tmp_path / "llamapin.toml").write_text('[engine]\nplatform = "macos-arm64"\n')
    cfg = load_config(tmp_path)
    out = render_all(cfg, "llamapin==1.2.3", "main")
    assert out[GATE_PATH] == render(
        "gate", "macos-arm64", "llamapin==1.2.3", "main", cache_dir=cfg.cache_dir
    )
    assert out[BUMP_PATH] == render(
        "bump", "macos-arm64", "llamapin==1.2.3", "main", cache_dir=cfg.cache_dir
    )
    for text in out.values():
        assert "--target" not in text
        assert "\ndefaults:" not in text
        assert "permissions: {}\n\nconcurrency:" in text or "contents: read\n\nconcurrency:" in text
    assert list(yaml.safe_load(out[GATE_PATH])["jobs"]) == ["engine-gate"]


def test_runtime_steps_are_set_up_once_for_every_target(tmp_path: Path) -> None:
    (tmp_path / "llamapin.toml").write_text(
        THREE
        + '[targets.linux-x64.ensure]\ncommand = "pnpm run engine"\n'
        + '[targets.windows-x64.ensure]\ncommand = "node scripts/engine.js"\n'
        + '[targets.macos-arm64.ensure]\ncommand = "bun run engine"\n'
    )
    cfg = load_config(tmp_path)
    gate = render_all(cfg, "llamapin==1.2.3", "main")[GATE_PATH]
    assert gate.count(SETUP_NODE) == 1
    assert gate.count(SETUP_BUN) == 1
    assert gate.count("corepack enable") == 1
    bump = render_all(cfg, "llamapin==1.2.3", "main")[BUMP_PATH]  # linux-x64's: pnpm
    assert SETUP_NODE in bump and "corepack enable" in bump and SETUP_BUN not in bump
    assert runtime_steps([None, "make engine"]) == ""


def test_the_action_install_step_is_used_for_every_target(tmp_path: Path, run_cli: Any) -> None:
    root = project(tmp_path, THREE)
    action = "acme/llamapin@" + "0123456789abcdef" * 2 + "01234567"
    res = run_cli("--root", str(root), "init", "--action", action)
    assert res.code == 0, res.err
    for job in jobs_per_target(read(root, GATE_PATH)).values():
        assert step(job, "Install llamapin")["uses"] == action
    for job in read(root, BUMP_PATH)["jobs"].values():
        assert step(job, "Install llamapin")["uses"] == action


@pytest.mark.parametrize(
    ("field", "value"),
    [("runner", "ubuntu-24.04\n    evil: 1"), ("runner", "x y"), ("platform", "linux-x64\n#")],
)
def test_values_that_bypassed_the_config_check_never_reach_a_workflow(
    field: str, value: str
) -> None:
    """The config refuses these on load; a model built without that check is refused here."""
    bad = TargetConfig.model_construct(
        platform="linux-x64", gated=True, runner=None, engine={}, bundle={}, ensure={}, gate={}
    )
    object.__setattr__(bad, field, value)
    cfg = Config()
    object.__setattr__(cfg, "targets", {"linux-x64": bad})
    with pytest.raises(ConfigError, match="cannot be written into a workflow"):
        render_all(cfg, "llamapin==1.2.3", "main")


def test_render_refuses_a_hostile_target_or_runner() -> None:
    with pytest.raises(ConfigError, match="target 'a; rm -rf ~'"):
        render("bump", "linux-x64", "llamapin==1.2.3", "main", target="a; rm -rf ~")
    with pytest.raises(ConfigError, match="runner"):
        render("bump", "linux-x64", "llamapin==1.2.3", "main", runner="${{ github.token }}")
    with pytest.raises(ConfigError, match="target"):
        matrix_entries(_with_target_name("Bad Name"))


def _with_target_name(name: str) -> Config:
    cfg = Config()
    object.__setattr__(cfg, "targets", {name: TargetConfig(platform="linux-x64")})
    return cfg


def test_the_matrix_workflows_pass_actionlint_and_zizmor(
    tmp_path: Path, run_cli: Any, actionlint: Path
) -> None:
    root = project(tmp_path, THREE)
    assert init(run_cli, root).code == 0
    for rel in (GATE_PATH, BUMP_PATH):
        checked = lint(root / rel, actionlint)
        assert checked.returncode == 0, checked.stdout
        found = zizmor(root / rel)
        assert found.returncode == 0, found.stdout + found.stderr
        assert "No findings" in found.stdout + found.stderr
        audited = subprocess.run(
            [str(BIN / "zizmor"), "--offline", "--persona", "auditor", str(root / rel)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert audited.returncode == 0, audited.stdout + audited.stderr
        text = (root / rel).read_text()
        for line in text.splitlines():
            if line.strip().removeprefix("- ").startswith("uses:"):
                assert len(line.split("@")[1].split()[0]) == 40  # pinned by sha
        assert "persist-credentials: false" in text
    assert "permissions:\n  contents: read\n" in (root / GATE_PATH).read_text()


def test_actionlint_still_reports_an_unknown_runner_label(tmp_path: Path, actionlint: Path) -> None:
    """The lint wrapper knows GitHub's newer hosted labels, and nothing else."""
    flow = "on: push\njobs:\n  x:\n    runs-on: {}\n    steps:\n      - run: echo hi\n"
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text(flow.format("macos-15"))
    bad.write_text(flow.format("ubuntu-2404"))
    assert lint(good, actionlint).returncode == 0
    checked = lint(bad, actionlint)
    assert checked.returncode == 1
    assert 'label "ubuntu-2404" is unknown' in checked.stdout
