"""Platform floors: the oldest CPU and the oldest macOS an app supports, checked on the
candidate engine and the pinned one, so a reviewer sees a floor that a bump raises.

CPU floor (``gate.min_cpu``): the engine runs a short smoke prompt under user-mode
emulation of that CPU (``qemu-x86_64 -cpu MODEL llama-server ...``). A build that uses
instructions the floor CPU lacks dies there with SIGILL, whatever the runner's own CPU
has. The value goes onto a command line, so only names from a fixed list are accepted,
and the name passed to qemu is llamapin's own spelling of it, never the config's text.

Where the runner cannot emulate (not x86_64 Linux, no qemu-x86_64, an engine built for
another platform) the report says "CPU floor not tested" and why; it never passes.
"""

from __future__ import annotations

import contextlib
import platform
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llamapin.engine.bundle import MANIFEST, Manifest, read_manifest
from llamapin.engine.macos import bundle_floor, too_new, version_key
from llamapin.errors import EngineError
from llamapin.server import Server, ServerSpec

# x86-64 microarchitecture levels, and the oldest qemu CPU model that has each one.
LEVELS = {
    "x86-64": "qemu64",
    "x86-64-v2": "Nehalem",
    "x86-64-v3": "Haswell",
    "x86-64-v4": "Skylake-Server",
}
# qemu's x86 CPU models (qemu-x86_64 -cpu help), without their -vN / -IBRS spellings.
MODELS = (
    "qemu64",
    "kvm64",
    "core2duo",
    "Conroe",
    "Penryn",
    "Nehalem",
    "Westmere",
    "SandyBridge",
    "IvyBridge",
    "Haswell",
    "Haswell-noTSX",
    "Broadwell",
    "Broadwell-noTSX",
    "Skylake-Client",
    "Skylake-Server",
    "Cascadelake-Server",
    "Cooperlake",
    "Icelake-Server",
    "Denverton",
    "Snowridge",
    "KnightsMill",
    "Opteron_G1",
    "Opteron_G2",
    "Opteron_G3",
    "Opteron_G4",
    "Opteron_G5",
    "EPYC",
    "EPYC-Rome",
    "EPYC-Milan",
    "Dhyana",
)
_NAMES = {name.lower(): name for name in (*LEVELS, *MODELS)}
EMULATORS = ("qemu-x86_64", "qemu-x86_64-static")
# qemu's TCG does not emulate every feature of every model; it says which at start:
# "qemu-x86_64: warning: TCG doesn't support requested feature: CPUID.07H:EBX.avx512f [bit 16]"
TCG_MISSING = re.compile(r"TCG doesn't support requested feature: \S+?\.([A-Za-z0-9_-]+) \[bit")
# Features that no user-mode program's instructions depend on (paging, APIC, transactional
# memory hints, mitigations): their absence does not make the emulation partial.
SYSTEM_FEATURES = frozenset(
    {
        "pcid",
        "x2apic",
        "tsc-deadline",
        "invpcid",
        "hle",
        "rtm",
        "spec-ctrl",
        "ssbd",
        "3dnowprefetch",
        "xsavec",
        "xsaves",
        "wbnoinvd",
        "arch-capabilities",
        "stibp",
        "md-clear",
        "pku",
        "la57",
        "umip",
    }
)
CPU_VARIANT = re.compile(r"(?:^|/)libggml-cpu-([A-Za-z0-9_]+)\.(?:so|dylib|dll)\Z")

SMOKE_PROMPT = "The capital of France is"
SMOKE_TOKENS = 4
SMOKE_CTX = 256
SMOKE_THREADS = 2
NOT_TESTED = "CPU floor not tested"

Status = Literal["pass", "fail", "inconclusive", "skip"]


@dataclass(frozen=True)
class CpuFloor:
    """A declared CPU floor: the name as llamapin spells it, and the qemu model run."""

    declared: str
    model: str

    def describe(self) -> str:
        if self.declared == self.model:
            return self.declared
        return f"{self.declared} (qemu model {self.model})"


def cpu_floor(value: str) -> CpuFloor:
    """``x86-64-v2``, ``HASWELL``, ... -> CpuFloor; anything not on the list is refused."""
    name = _NAMES.get(value.lower())
    if name is None:
        shown = value[:40].encode("ascii", "backslashreplace").decode()
        raise ValueError(
            f"unknown CPU {shown!r}: give an x86-64 level ({', '.join(LEVELS)}) "
            "or a qemu CPU model such as Haswell, Skylake-Client or Cascadelake-Server"
        )
    return CpuFloor(name, LEVELS.get(name, name))


def find_emulator(
    target: str,
    *,
    system: str | None = None,
    machine: str | None = None,
    path: str | None = None,
) -> tuple[str | None, str]:
    """qemu-x86_64's path and "", or None and why the floor cannot be tested here."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    if target != "linux-x64":
        return None, f"the engine is built for {target}; emulation runs linux-x64 builds only"
    if system != "Linux" or machine not in ("x86_64", "amd64"):
        return None, (
            f"this runner is {system} {machine}; user-mode emulation of an x86-64 CPU "
            "needs an x86_64 Linux runner"
        )
    for name in EMULATORS:
        found = shutil.which(name, path=path)
        if found:
            return found, ""
    return None, (
        "qemu-x86_64 is not installed (Debian and Ubuntu: apt-get install qemu-user; "
        "scripts/bootstrap installs it as root)"
    )


def tcg_missing(log: str) -> list[str]:
    """The floor CPU's instruction-set features that qemu said it cannot emulate."""
    found = dict.fromkeys(m.group(1).lower() for m in TCG_MISSING.finditer(log))
    return [name for name in found if name not in SYSTEM_FEATURES]


def cpu_variants(files: list[str]) -> list[str]:
    """The CPU backend variants a build carries (libggml-cpu-<variant>.so/.dylib/.dll):
    the build picks one at run time, so each names the CPU features it requires."""
    return sorted({m.group(1) for f in files if (m := CPU_VARIANT.search(f))})


@dataclass(frozen=True)
class CpuRun:
    """One engine's smoke prompt under emulation of the floor CPU."""

    role: str
    status: Status
    detail: str
    illegal_instruction: bool = False
    healthy_s: float | None = None
    answer_s: float | None = None
    answer: str | None = None
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CpuFloorReport:
    declared: str | None
    model: str | None
    tested: bool
    note: str
    runs: list[CpuRun] = field(default_factory=list)
    change: str = ""
    variants: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class MacosFloor:
    """One engine's minimum macOS: the newest that any of its Mach-O files states."""

    role: str
    minimum: str | None
    detail: str


@dataclass(frozen=True)
class FloorsReport:
    cpu: CpuFloorReport
    macos: list[MacosFloor] = field(default_factory=list)
    macos_declared: str | None = None
    macos_change: str = ""


def smoke(
    role: str,
    binary: Path,
    model: Path,
    floor: CpuFloor,
    qemu: str,
    log: Path,
    *,
    timeout_s: float,
    model_arch: str | None = None,
    extra_args: list[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CpuRun:
    """Start ``binary`` under ``qemu -cpu MODEL``, ask for a few tokens, stop it."""
    spec = ServerSpec(
        binary=binary,
        model=model,
        log=log,
        ctx_size=SMOKE_CTX,
        threads=SMOKE_THREADS,
        extra_args=list(extra_args or []),
        health_timeout_s=timeout_s,
        model_arch=model_arch,
        label=f"the {role} engine ({binary.name}) on the CPU floor {floor.describe()}",
        prefix=[qemu, "-cpu", floor.model],
    )
    server = Server(spec)
    try:
        with no_core_dumps():
            server.start()
        asked = clock()
        data = server.post(
            "/completion",
            {
                "prompt": SMOKE_PROMPT,
                "n_predict": SMOKE_TOKENS,
                "top_k": 1,
                "temperature": 0.0,
                "seed": 0,
                "cache_prompt": False,
            },
            timeout_s,
        )
        answer_s = round(clock() - asked, 2)
    except EngineError as exc:
        return _failed(role, floor, exc, exit_code(server), tcg_missing(server.log_text()))
    finally:
        server.stop()
    missing = tcg_missing(server.log_text())
    healthy_s = round(server.load_time_s, 2)
    answer = str(data.get("content", ""))
    partial = (
        f"; qemu cannot emulate {', '.join(missing)}, which that CPU has, so code that "
        "needs them was not tried"
        if missing
        else ""
    )
    return CpuRun(
        role,
        "pass",
        f"ran on {floor.describe()}: healthy after {healthy_s:.0f} s, "
        f"{SMOKE_TOKENS} tokens in {answer_s:.0f} s{partial}",
        healthy_s=healthy_s,
        answer_s=answer_s,
        answer=answer,
        missing=missing,
    )


def exit_code(server: Server, grace_s: float = 15.0) -> int | None:
    """The engine's exit status once it has died, or None if it is still running. A request
    can fail (connection reset) an instant before the dying process can be reaped, so it is
    waited for briefly: reading ``returncode`` at once would miss a SIGILL."""
    if server.proc is None:
        return None
    try:
        return server.proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        return None


@contextlib.contextmanager
def no_core_dumps() -> Iterator[None]:
    """While an engine starts (forks), this process's core size limit is 0, so the engine
    inherits it: qemu dumps both its own core and the guest's on SIGILL (hundreds of MB,
    into the current directory) wherever the limit allows one."""
    import resource  # Unix only; emulation runs on Linux only

    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def _failed(
    role: str, floor: CpuFloor, exc: EngineError, code: int | None, missing: list[str]
) -> CpuRun:
    if code != -signal.SIGILL:
        return CpuRun(
            role,
            "inconclusive",
            f"could not run under emulation of {floor.describe()}: {exc.what}: {exc.why}",
            missing=missing,
        )
    if missing:
        return CpuRun(
            role,
            "inconclusive",
            f"illegal instruction (SIGILL) under emulation of the CPU floor "
            f"{floor.describe()}, but qemu cannot emulate {', '.join(missing)}, which that "
            "CPU has: the build may use only those, so this proves nothing",
            illegal_instruction=True,
            missing=missing,
        )
    return CpuRun(
        role,
        "fail",
        f"illegal instruction (SIGILL) on the CPU floor {floor.describe()}: the build uses "
        "CPU instructions that the oldest CPU the app supports lacks, so it would crash "
        "on those machines",
        illegal_instruction=True,
    )


def change_from_pin(cand: CpuRun, base: CpuRun | None, floor: CpuFloor) -> str:
    """How the candidate's result on the floor differs from the pinned engine's."""
    if base is None:
        return "no pinned engine to compare with"
    name = floor.describe()
    if cand.status == base.status == "pass":
        return f"unchanged: both run on {name}"
    if cand.illegal_instruction and base.illegal_instruction:
        return f"unchanged: the pinned engine also dies on {name}"
    if cand.illegal_instruction and base.status == "pass":
        return f"raised: the pinned engine runs on {name}, the candidate does not"
    if cand.status == "pass" and base.illegal_instruction:
        return f"lowered: the candidate runs on {name}, the pinned engine did not"
    return f"unknown: candidate {cand.status}, pinned engine {base.status}"


FIX = (
    "Use a build for that CPU (engine.cmake_args: -DGGML_NATIVE=OFF with the GGML_AVX* "
    "options it lacks set OFF, or a build with runtime CPU variants), or raise gate.min_cpu"
)


def cpu_check(report: CpuFloorReport) -> tuple[Status, str]:
    """The gate check for the CPU floor: the candidate's run decides; the pin is context."""
    if not report.tested:
        return "skip", report.note
    cand = report.runs[0]
    message = f"candidate: {cand.detail}; {report.change}"
    if cand.status == "fail":
        message += f". {FIX}"
    return cand.status, message


def engine_manifest(binary: Path) -> Manifest | None:
    """The manifest of the installed bundle that holds ``binary`` (flat or macos-app
    layout), or None for an engine given by path outside a bundle."""
    for folder in list(binary.parents)[:3]:
        if (folder / MANIFEST).is_file():
            return read_manifest(folder)
    return None


def cpu_floor_report(
    min_cpu: str | None,
    target: str,
    engines: list[tuple[str, Path]],
    model: Path,
    logs: Path,
    say: Callable[[str], None],
    *,
    timeout_s: float,
    model_arch: str | None = None,
    extra_args: list[str] | None = None,
    system: str | None = None,
    machine: str | None = None,
    path: str | None = None,
) -> CpuFloorReport:
    """Run the smoke prompt on each engine (candidate first) under the floor CPU."""
    variants = {
        role: found
        for role, binary in engines
        if (manifest := engine_manifest(binary)) is not None
        and (found := cpu_variants(list(manifest.files)))
    }
    if min_cpu is None:
        return CpuFloorReport(
            None, None, False, "no CPU floor declared (gate.min_cpu)", [], "", variants
        )
    floor = cpu_floor(min_cpu)
    qemu, why = find_emulator(target, system=system, machine=machine, path=path)
    if qemu is None:
        note = f"{NOT_TESTED} on {floor.describe()}: {why}"
        say(note)
        return CpuFloorReport(floor.declared, floor.model, False, note, [], "", variants)
    runs = []
    for role, binary in engines:
        say(f"run the {role} engine under emulation of the CPU floor {floor.describe()}")
        runs.append(
            smoke(
                role,
                binary,
                model,
                floor,
                qemu,
                logs / f"{role}-cpu-floor.log",
                timeout_s=timeout_s,
                model_arch=model_arch,
                extra_args=extra_args,
            )
        )
        say(f"{role} on the CPU floor: {runs[-1].status}")
    change = change_from_pin(runs[0], runs[1] if len(runs) > 1 else None, floor)
    return CpuFloorReport(floor.declared, floor.model, True, "", runs, change, variants)


def macos_floors(
    engines: list[tuple[str, Path]], declared: tuple[str, str] | None
) -> tuple[list[MacosFloor], str, list[str]]:
    """Each engine's minimum macOS, its change from the pin, and the candidate's files that
    need a newer macOS than the app declares."""
    floors: list[MacosFloor] = []
    too_new_files: list[str] = []
    for i, (role, binary) in enumerate(engines):
        manifest = engine_manifest(binary)
        if manifest is None:
            floors.append(MacosFloor(role, None, "not read: the engine is not an installed bundle"))
        elif not manifest.macos:
            floors.append(MacosFloor(role, None, "no Mach-O files (not a macOS build)"))
        else:
            minimum = bundle_floor(manifest)
            floors.append(
                MacosFloor(role, minimum, f"the newest of {len(manifest.macos)} Mach-O files")
            )
            if i == 0 and declared is not None:
                too_new_files = too_new(manifest.macos, declared[0])
    return floors, macos_change(floors), too_new_files


def macos_change(floors: list[MacosFloor]) -> str:
    if len(floors) < 2:
        return "no pinned engine to compare with"
    cand, base = floors[0].minimum, floors[1].minimum
    if cand is None or base is None:
        return "not compared: an engine states no minimum macOS"
    if cand == base:
        return f"unchanged: macOS {cand}"
    way = "raised" if version_key(cand) > version_key(base) else "lowered"
    return f"{way}: macOS {base} -> {cand}"
