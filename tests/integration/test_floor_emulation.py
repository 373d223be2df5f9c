"""The CPU floor's emulation, run for real: qemu-x86_64 (Debian's qemu-user) runs small
x86-64 programs built here with gcc that speak llama-server's HTTP shape, some of which
execute instructions the floor CPU lacks. No llama.cpp engine is needed; the real engine
under emulation is tested in test_floor_gate.py."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamapin.gate import floors as fl

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="user-mode emulation of an x86-64 CPU needs an x86_64 Linux host",
)

# A stand-in llama-server: answers /health and /completion on --port. Built with -DBEFORE
# it first runs an instruction the floor may lack; with -DDURING it does so on /completion
# (after it became healthy); with -DEXIT it exits 3 at once.
SERVER_C = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void newer(void) {
#if defined(AVX512)
    __asm__ volatile("vpaddd %%zmm0, %%zmm0, %%zmm0" ::: "xmm0");
#else
    __asm__ volatile("vpaddd %%ymm0, %%ymm0, %%ymm0" ::: "xmm0");
#endif
}

int main(int argc, char **argv) {
    int port = 0;
    for (int i = 1; i + 1 < argc; i++) if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
#ifdef EXIT
    fprintf(stderr, "cannot start\n");
    return 3;
#endif
#ifdef BEFORE
    newer();
#endif
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 8)) return 2;
    printf("listening on %d\n", port);
    fflush(stdout);
    for (;;) {
        int c = accept(s, 0, 0);
        char buf[65536];
        ssize_t n = read(c, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        const char *body = "{\"status\":\"ok\"}";
        if (strstr(buf, "POST /completion")) {
#ifdef DURING
            newer();
#endif
            body = "{\"content\":\" Paris.\"}";
        }
        char out[512];
        int len = snprintf(out, sizeof out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
            "Connection: close\r\n\r\n%s", strlen(body), body);
        write(c, out, len);
        close(c);
    }
}
"""


def qemu() -> str:
    found, why = fl.find_emulator("linux-x64")
    if found is None:
        pytest.fail(f"{why} (the CPU floor tests need it on x86_64 Linux)")
    return found


def build(tmp: Path, name: str, *defines: str) -> Path:
    src = tmp / "server.c"
    src.write_text(SERVER_C)
    out = tmp / name
    flags = ["-mavx512f"] if "AVX512" in defines else ["-mavx2"]
    cmd = ["gcc", "-O1", *flags, *(f"-D{d}" for d in defines), "-o", str(out), str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def run(tmp: Path, binary: Path, floor: str, timeout_s: float = 600.0) -> fl.CpuRun:
    """One smoke run; the limit is generous (a loaded shared CI machine) and is only
    reached by a run that hangs: every outcome tested here ends on its own."""
    model = tmp / "model.gguf"
    model.write_bytes(b"GGUF")
    return fl.smoke(
        "candidate",
        binary,
        model,
        fl.cpu_floor(floor),
        qemu(),
        tmp / "logs" / f"{binary.name}.log",
        timeout_s=timeout_s,
    )


def test_a_build_that_fits_the_floor_answers_under_emulation(tmp_path: Path) -> None:
    result = run(tmp_path, build(tmp_path, "plain"), "x86-64-v2")
    assert result.status == "pass", result.detail
    assert result.answer == " Paris." and result.healthy_s is not None
    assert result.detail.startswith("ran on x86-64-v2 (qemu model Nehalem): healthy after")
    assert not result.illegal_instruction and result.missing == []
    # the same program really starts under qemu with Nehalem: the command carries the prefix
    assert "listening on" in (tmp_path / "logs" / "plain.log").read_text()


def test_an_instruction_above_the_floor_at_start_is_an_illegal_instruction(
    tmp_path: Path,
) -> None:
    result = run(tmp_path, build(tmp_path, "avx2", "BEFORE"), "x86-64-v2")
    assert result.status == "fail" and result.illegal_instruction
    assert result.detail.startswith(
        "illegal instruction (SIGILL) on the CPU floor x86-64-v2 (qemu model Nehalem)"
    )
    # The same program runs on a floor that has AVX2: the emulation, not the program, decided.
    assert run(tmp_path, build(tmp_path, "avx2b", "BEFORE"), "haswell").status != "fail"


def test_an_instruction_above_the_floor_during_the_answer(tmp_path: Path) -> None:
    """Healthy first, then SIGILL in the request: the death is still diagnosed."""
    result = run(tmp_path, build(tmp_path, "late", "DURING"), "Nehalem")
    assert result.status == "fail" and result.illegal_instruction, result.detail
    assert "on the CPU floor Nehalem" in result.detail


def test_features_qemu_cannot_emulate_make_a_sigill_inconclusive(tmp_path: Path) -> None:
    """qemu's TCG has no AVX-512: an AVX-512 build dies on an emulated Cascade Lake, which
    has AVX-512, so the death proves nothing about that CPU."""
    result = run(tmp_path, build(tmp_path, "avx512", "BEFORE", "AVX512"), "cascadelake-server")
    assert result.status == "inconclusive" and result.illegal_instruction
    assert "avx512f" in result.missing and "pcid" not in result.missing
    assert "qemu cannot emulate avx512f" in result.detail


def test_a_pass_on_a_partly_emulated_floor_says_what_was_not_tried(tmp_path: Path) -> None:
    result = run(tmp_path, build(tmp_path, "plain"), "x86-64-v4")
    assert result.status == "pass" and "avx512f" in result.missing
    assert "; qemu cannot emulate avx512f" in result.detail
    assert "so code that needs them was not tried" in result.detail


def test_another_death_under_emulation_is_inconclusive(tmp_path: Path) -> None:
    result = run(tmp_path, build(tmp_path, "exits", "EXIT"), "x86-64")
    assert result.status == "inconclusive" and not result.illegal_instruction
    assert "could not run under emulation of x86-64 (qemu model qemu64)" in result.detail
    assert "exited with code 3" in result.detail


def test_real_qemu_warnings_name_the_missing_features() -> None:
    argv = [qemu(), "-cpu", "Skylake-Server", "/bin/true"]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    assert proc.returncode == 0
    missing = fl.tcg_missing(proc.stderr)
    assert {"avx512f", "avx512bw", "avx512vl"} <= set(missing)
    assert not set(missing) & fl.SYSTEM_FEATURES
    argv = [qemu(), "-cpu", "Nehalem", "/bin/true"]
    clean = subprocess.run(argv, check=True, capture_output=True)
    assert fl.tcg_missing(clean.stderr.decode()) == []


@pytest.mark.parametrize("name", sorted({*fl.LEVELS.values(), *fl.MODELS}))
def test_every_allowed_model_is_one_qemu_knows(name: str) -> None:
    argv = [qemu(), "-cpu", name, "/bin/true"]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_report_candidate_and_pin_and_the_change(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    cand = build(tmp_path, "cand", "BEFORE")
    base = build(tmp_path, "base")
    said: list[str] = []
    report = fl.cpu_floor_report(
        "X86-64-V2",
        "linux-x64",
        [("candidate", cand), ("baseline", base)],
        model,
        tmp_path / "logs",
        said.append,
        timeout_s=600,
    )
    assert report.tested and report.declared == "x86-64-v2" and report.model == "Nehalem"
    assert [r.status for r in report.runs] == ["fail", "pass"]
    assert report.change.startswith("raised: the pinned engine runs on x86-64-v2")
    assert (tmp_path / "logs" / "candidate-cpu-floor.log").is_file()
    assert "candidate on the CPU floor: fail" in said
    status, message = fl.cpu_check(report)
    assert status == "fail" and "illegal instruction" in message and "gate.min_cpu" in message


def test_no_qemu_on_path_says_not_tested(tmp_path: Path) -> None:
    said: list[str] = []
    report = fl.cpu_floor_report(
        "haswell",
        "linux-x64",
        [("candidate", Path("/nonexistent/llama-server"))],
        tmp_path / "m.gguf",
        tmp_path,
        said.append,
        timeout_s=1,
        path=str(tmp_path),
    )
    assert not report.tested and report.runs == []
    assert report.note.startswith("CPU floor not tested on Haswell: qemu-x86_64 is not installed")
    assert said == [report.note]
    assert fl.cpu_check(report) == ("skip", report.note)


def test_the_static_emulator_is_found_too(tmp_path: Path) -> None:
    static = tmp_path / "qemu-x86_64-static"
    shutil.copy(qemu(), static)
    found, why = fl.find_emulator("linux-x64", path=str(tmp_path))
    assert found == str(static) and why == ""


def test_a_sigill_under_emulation_leaves_no_core_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qemu writes the guest's core (and the kernel qemu's own) into the current directory
    on SIGILL wherever the core size limit allows: the engine is started with none."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.skip("core dumps are off for this process for good: nothing to prevent")
    binary = build(tmp_path, "dies", "BEFORE")
    control = tmp_path / "control"
    control.mkdir()
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    try:
        # the control: the same program under qemu, as a plain child, does dump a core
        subprocess.run([qemu(), "-cpu", "Nehalem", str(binary)], cwd=control, check=False)
        assert list(control.glob("qemu_*.core")), "qemu wrote no core: the test proves nothing"
        here = tmp_path / "cwd"
        here.mkdir()
        monkeypatch.chdir(here)
        result = run(tmp_path, binary, "x86-64-v2")
        assert result.illegal_instruction
        assert list(here.iterdir()) == []
        assert resource.getrlimit(resource.RLIMIT_CORE) == (hard, hard)  # restored
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
