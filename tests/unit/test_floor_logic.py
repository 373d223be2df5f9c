"""Platform floors without an engine: the CPU allow-list (hostile names refused), where
emulation cannot run, the change from the pin, minimum macOS read from real manifests,
and the report's floors section."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from llamapin import report
from llamapin.config import GateConfig, load_config
from llamapin.engine.bundle import MANIFEST, Manifest
from llamapin.errors import ConfigError
from llamapin.gate import floors as fl
from llamapin.gate.run import GateInputs, check_floors, floor_warnings
from llamapin.gate.suite import load_suite
from llamapin.gate.verdict import PerfReport, Verdict
from llamapin.inert import sanitize
from llamapin.pin import Pin
from llamapin.server import Server, ServerSpec


@pytest.mark.parametrize(
    ("given", "declared", "model"),
    [
        ("x86-64", "x86-64", "qemu64"),
        ("x86-64-v2", "x86-64-v2", "Nehalem"),
        ("X86-64-V3", "x86-64-v3", "Haswell"),
        ("x86-64-v4", "x86-64-v4", "Skylake-Server"),
        ("haswell", "Haswell", "Haswell"),
        ("NEHALEM", "Nehalem", "Nehalem"),
        ("skylake-client", "Skylake-Client", "Skylake-Client"),
        ("cascadelake-server", "Cascadelake-Server", "Cascadelake-Server"),
        ("opteron_g4", "Opteron_G4", "Opteron_G4"),
    ],
)
def test_levels_and_models_case_insensitive(given: str, declared: str, model: str) -> None:
    floor = fl.cpu_floor(given)
    assert (floor.declared, floor.model) == (declared, model)


def test_describe_names_the_model_only_when_it_differs() -> None:
    assert fl.cpu_floor("x86-64-v3").describe() == "x86-64-v3 (qemu model Haswell)"
    assert fl.cpu_floor("haswell").describe() == "Haswell"


HOSTILE = [
    "haswell; rm -rf /",
    "Haswell\n",
    " Haswell",
    "-cpu",
    "max",  # the runner's own CPU: no floor at all
    "host",
    "base",
    "",
    "x86-64-v5",
    "Haswell,+avx512f",  # qemu's feature syntax would add AVX-512 to the floor
    "Haswell,-avx2",
    "\u041d\u0430swell",  # Cyrillic lookalike
    "haswell\x00",
    "$(id)",
    "a" * 10_000,
    "Haswell-v4",  # versioned spellings are not on the list
]


@pytest.mark.parametrize("value", HOSTILE)
def test_anything_off_the_list_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="unknown CPU") as info:
        fl.cpu_floor(value)
    message = str(info.value)
    assert len(message) < 260 and message.isascii() and "\n" not in message


def test_config_accepts_a_floor_and_refuses_a_bad_one_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "llamapin.toml").write_text('[gate]\nmin_cpu = "x86-64-v2"\n')
    cfg = load_config(tmp_path)
    assert cfg.gate.min_cpu == "x86-64-v2" and cfg.gate.min_cpu_timeout_s == 300.0
    assert GateConfig().min_cpu is None
    assert GateConfig(min_cpu="HASWELL").min_cpu == "Haswell"  # llamapin's own spelling
    (tmp_path / "llamapin.toml").write_text('[gate]\nmin_cpu = "haswell,+avx512f"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert "gate.min_cpu" in info.value.why and "unknown CPU" in info.value.why
    (tmp_path / "llamapin.toml").write_text("[gate]\nmin_cpu_timeout_s = 0\n")
    with pytest.raises(ConfigError, match="invalid config"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("target", "system", "machine", "says"),
    [
        ("macos-arm64", "Linux", "x86_64", "the engine is built for macos-arm64"),
        ("win-x64", "Linux", "x86_64", "the engine is built for win-x64"),
        ("linux-x64", "Darwin", "arm64", "this runner is Darwin arm64"),
        ("linux-x64", "Windows", "AMD64", "this runner is Windows amd64"),
        ("linux-x64", "Linux", "aarch64", "this runner is Linux aarch64"),
    ],
)
def test_where_emulation_cannot_run_it_says_why(
    target: str, system: str, machine: str, says: str
) -> None:
    found, why = fl.find_emulator(target, system=system, machine=machine, path="")
    assert found is None and why.startswith(says)


def test_a_missing_qemu_is_named_with_its_package(tmp_path: Path) -> None:
    found, why = fl.find_emulator("linux-x64", system="Linux", machine="x86_64", path=str(tmp_path))
    assert found is None and "apt-get install qemu-user" in why


def test_cpu_variants_from_file_names() -> None:
    files = [
        "libggml-cpu-haswell.so",
        "lib/libggml-cpu-skylakex.so",
        "Contents/Frameworks/libggml-cpu-apple_m2_m3.dylib",
        "ggml-cpu-x64.dll",  # not lib-prefixed: not ours to guess
        "libggml-cpu.so",
        "libggml-cpu-evil name.so",
        "libggml-cpu-haswell.so.bak",
    ]
    assert fl.cpu_variants(files) == ["apple_m2_m3", "haswell", "skylakex"]


def run(status: fl.Status, sigill: bool = False) -> fl.CpuRun:
    return fl.CpuRun("x", status, f"{status} detail", illegal_instruction=sigill)


@pytest.mark.parametrize(
    ("cand", "base", "change"),
    [
        (run("pass"), None, "no pinned engine to compare with"),
        (run("pass"), run("pass"), "unchanged: both run on Nehalem"),
        (run("fail", True), run("fail", True), "unchanged: the pinned engine also dies"),
        (run("fail", True), run("inconclusive", True), "unchanged: the pinned engine also"),
        (run("fail", True), run("pass"), "raised: the pinned engine runs on Nehalem"),
        (run("pass"), run("fail", True), "lowered: the candidate runs on Nehalem"),
        (run("inconclusive"), run("pass"), "unknown: candidate inconclusive"),
        (run("pass"), run("inconclusive"), "unknown: candidate pass, pinned engine inconc"),
    ],
)
def test_change_from_the_pin(cand: fl.CpuRun, base: fl.CpuRun | None, change: str) -> None:
    assert fl.change_from_pin(cand, base, fl.cpu_floor("nehalem")).startswith(change)


def test_the_candidate_decides_the_check() -> None:
    tested = fl.CpuFloorReport("Haswell", "Haswell", True, "", [run("pass"), run("fail", True)])
    assert fl.cpu_check(tested) == ("pass", "candidate: pass detail; ")
    failed = fl.CpuFloorReport("Haswell", "Haswell", True, "", [run("fail", True)], "c")
    status, message = fl.cpu_check(failed)
    assert status == "fail" and message.endswith(fl.FIX + "") and "; c. Use a build" in message
    odd = fl.CpuFloorReport("Haswell", "Haswell", True, "", [run("inconclusive")], "c")
    assert fl.cpu_check(odd)[0] == "inconclusive"


# --- minimum macOS, from real manifests on disk ---------------------------------------------


def bundle(root: Path, macos: dict[str, dict[str, str | None]], layout: str = "flat") -> Path:
    """A bundle directory with a manifest as ensure writes it; returns the binary's path."""
    binary = "Contents/MacOS/llama-server" if layout == "macos-app" else "llama-server"
    files = {binary: {"sha256": "0" * 64, "size": 1}}
    files.update({name: {"sha256": "0" * 64, "size": 1} for name in macos})
    files["libggml-cpu-apple_m1.dylib"] = {"sha256": "0" * 64, "size": 1}
    manifest = Manifest("k", {}, {}, binary, files, {"libs": []}, macos=macos)
    root.mkdir(parents=True)
    (root / MANIFEST).write_text(manifest.to_json())
    return root / binary


def test_macos_floor_per_engine_and_its_change(tmp_path: Path) -> None:
    cand = bundle(
        tmp_path / "cand",
        {"llama-server": {"arm64": "14.0"}, "libllama.dylib": {"arm64": "13.3", "x86_64": None}},
        layout="macos-app",
    )
    base = bundle(tmp_path / "base", {"llama-server": {"arm64": "13.3"}})
    floors, change, too_new = fl.macos_floors(
        [("candidate", cand), ("baseline", base)], ("13.3", "bundle.min_macos")
    )
    assert [(f.role, f.minimum) for f in floors] == [("candidate", "14.0"), ("baseline", "13.3")]
    assert change == "raised: macOS 13.3 -> 14.0"
    assert too_new == ["llama-server: needs macOS 14.0"]
    _, change, _ = fl.macos_floors([("candidate", base), ("baseline", cand)], None)
    assert change == "lowered: macOS 14.0 -> 13.3"
    _, change, _ = fl.macos_floors([("candidate", base), ("baseline", base)], None)
    assert change == "unchanged: macOS 13.3"


def test_engines_without_a_macos_floor_say_why(tmp_path: Path) -> None:
    linux = bundle(tmp_path / "linux", {})
    loose = tmp_path / "loose" / "llama-server"
    silent = bundle(tmp_path / "silent", {"llama-server": {"arm64": None}})
    floors, change, too_new = fl.macos_floors([("candidate", linux), ("baseline", loose)], None)
    assert floors[0].detail == "no Mach-O files (not a macOS build)"
    assert floors[1].detail == "not read: the engine is not an installed bundle"
    assert change == "not compared: an engine states no minimum macOS" and too_new == []
    floors, change, _ = fl.macos_floors([("candidate", silent)], ("11.0", "x"))
    assert floors[0].minimum is None and change == "no pinned engine to compare with"


def inputs(tmp_path: Path, cand: Path, base: Path | None, **cfg: object) -> GateInputs:
    return GateInputs(
        candidate=cand,
        model=tmp_path / "m.gguf",
        suite=load_suite(None),
        cfg=GateConfig.model_validate(cfg),
        pin=Pin("b1", "a" * 40, {}),
        logs=tmp_path / "logs",
        baseline=base,
        platform="macos-arm64",
        macos_declared=("13.3", "bundle.min_macos"),
    )


def test_gate_floors_fail_a_too_new_macos_and_say_the_cpu_floor_was_not_tested(
    tmp_path: Path,
) -> None:
    cand = bundle(tmp_path / "cand", {"libllama.dylib": {"arm64": "15.0"}})
    base = bundle(tmp_path / "base", {"libllama.dylib": {"arm64": "13.0"}})
    said: list[str] = []
    floors, checks = check_floors(inputs(tmp_path, cand, base, min_cpu="x86-64-v3"), said.append)
    assert [(c.name, c.status) for c in checks] == [("macOS floor", "fail"), ("CPU floor", "skip")]
    assert checks[0].message == (
        "libllama.dylib: needs macOS 15.0, but bundle.min_macos declares 13.3"
    )
    assert checks[1].message.startswith(
        "CPU floor not tested on x86-64-v3 (qemu model Haswell): the engine is built for "
        "macos-arm64"
    )
    assert floor_warnings(floors) == [floors.cpu.note] and said == [floors.cpu.note]
    assert floors.cpu.variants == {"candidate": ["apple_m1"], "baseline": ["apple_m1"]}
    assert floors.macos_declared == "13.3"
    text = "\n".join(report.floors_markdown(floors))
    row = ["15.0", "13.0", "raised: macOS 13.0 -> 15.0"]
    assert f"| minimum macOS (app: {sanitize('13.3')}) | " + " | ".join(map(sanitize, row)) in text
    assert f"| CPU {sanitize('x86-64-v3')} | {sanitize('CPU floor not tested on')}" in text
    assert "CPU backend variants of the candidate engine" in text and "apple\\_m1" in text


def test_no_floor_declared_adds_no_check_and_no_warning(tmp_path: Path) -> None:
    cand = bundle(tmp_path / "cand", {})
    gate_in = inputs(tmp_path, cand, None)
    gate_in = GateInputs(**{**gate_in.__dict__, "macos_declared": None})
    floors, checks = check_floors(gate_in, lambda _: None)
    assert checks == [] and floor_warnings(floors) == []
    assert floors.cpu.note == "no CPU floor declared (gate.min_cpu)"
    text = "\n".join(report.floors_markdown(floors))
    assert "| floor | candidate |\n|---|---|" in text
    assert f"| minimum macOS | {sanitize('no Mach-O files (not a macOS build)')} |" in text
    assert f"| CPU | {sanitize('no CPU floor declared (gate.min_cpu)')} |" in text


def test_report_renders_tested_runs_inert_and_json_keeps_them() -> None:
    cpu = fl.CpuFloorReport(
        "x86-64-v2",
        "Nehalem",
        True,
        "",
        [
            fl.CpuRun("candidate", "fail", "illegal | <b>instruction</b>", True),
            fl.CpuRun("baseline", "pass", "ran", healthy_s=20.0, answer_s=9.5, answer="Paris"),
        ],
        "raised: x",
    )
    macos = [fl.MacosFloor("candidate", None, "n/a"), fl.MacosFloor("baseline", None, "n/a")]
    floors = fl.FloorsReport(cpu, macos, None, "not compared")
    verdict = Verdict(
        outcome="fail",
        reasons=["CPU floor: x"],
        checks=[],
        prompts=[],
        engines=[],
        perf=PerfReport("off", "skip", "off"),
        model="m",
        suite="s",
        elapsed_s=1.0,
        pin="b1 (c)",
        floors=floors,
    )
    md = report.markdown(verdict)
    assert "**Floors**" in md and "<b>" not in md and "illegal \\| &lt;b&gt;" in md
    assert f"| CPU {sanitize('x86-64-v2')} | ❌ illegal" in md
    assert f"| ✅ ran | {sanitize('raised: x')} |" in md
    data = json.loads(report.to_json(verdict))
    assert data["floors"]["cpu"]["runs"][1]["healthy_s"] == 20.0
    assert data["floors"] == json.loads(json.dumps(asdict(floors)))


def test_the_server_command_starts_with_its_prefix(tmp_path: Path) -> None:
    spec = ServerSpec(
        binary=tmp_path / "llama-server",
        model=tmp_path / "m.gguf",
        log=tmp_path / "log",
        prefix=["/usr/bin/qemu-x86_64", "-cpu", "Nehalem"],
    )
    assert Server(spec).command()[:4] == [
        "/usr/bin/qemu-x86_64",
        "-cpu",
        "Nehalem",
        str(tmp_path / "llama-server"),
    ]
    plain = ServerSpec(binary=tmp_path / "s", model=tmp_path / "m", log=tmp_path / "l")
    assert Server(plain).command()[0] == str(tmp_path / "s")
