"""The perf test through the real gate, on real engine-shaped processes: fresh
process pairs per round, a candidate that is slower, one whose memory grew,
and what the verdict and the reports then say. No timing is asserted: the fake
engines report fixed throughputs."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

from llamapin.config import GateConfig, PerfConfig
from llamapin.gate.perf import busy_note, stalled
from llamapin.gate.run import GateInputs, cpu_count, machine_load, perf_prompt, run_gate
from llamapin.gate.suite import load_suite
from llamapin.pin import Pin
from llamapin.report import junit, markdown

ENGINE = textwrap.dedent(
    """\
    #!{python}
    # An engine-shaped HTTP server with fixed throughput and an optional memory ballast.
    import http.server, json, os, sys
    GEN_TPS = {gen!r}
    STALL_EVERY = {stall_every!r}  # every nth timed request runs 10 times slower (0: never)
    served = [0]
    BALLAST = bytearray({ballast!r})  # resident: every page is written
    for i in range(0, len(BALLAST), 4096):
        BALLAST[i] = 1
    port = int(sys.argv[sys.argv.index("--port") + 1])
    with open({starts!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")

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
                self.reply({{"build_info": "b10068-571d0d540"}})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            served[0] += 1
            stalled = STALL_EVERY and served[0] % STALL_EVERY == 0
            probs = [{{"id": 7, "token": " Berlin", "logprob": -0.1,
                      "top_logprobs": [{{"id": 7, "token": " Berlin", "logprob": -0.1}}]}}]
            self.reply({{"content": " Berlin", "completion_probabilities": probs,
                        "timings": {{"predicted_per_second": GEN_TPS / (10 if stalled else 1),
                                    "prompt_per_second": 1000.0}}}})

    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)

PIN = Pin(build="b10068", commit="571d0d540" + "0" * 31)


def engine(
    tmp_path: Path, name: str, gen: float = 100.0, ballast: int = 0, stall_every: int = 0
) -> Path:
    path = tmp_path / name
    starts = tmp_path / f"{name}.starts"
    path.write_text(
        ENGINE.format(
            python=sys.executable,
            gen=gen,
            ballast=ballast,
            starts=str(starts),
            stall_every=stall_every,
        )
    )
    path.chmod(0o755)
    return path


def starts(tmp_path: Path, name: str) -> list[str]:
    return (tmp_path / f"{name}.starts").read_text().split()


def inputs(
    tmp_path: Path, cand: Path, base: Path, load: float | None = None, **perf: Any
) -> GateInputs:
    """The gate's inputs; the machine's load average is ``load`` (None: unknown), so the
    busy-machine note depends on what a test says, not on what else runs here."""
    suite = tmp_path / "suite.toml"
    suite.write_text('[[prompt]]\nname = "capital"\ntext = "Germany:"\ncontains = "Berlin"\n')
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    return GateInputs(
        candidate=cand,
        model=model,
        suite=load_suite(suite),
        cfg=GateConfig(health_timeout_s=600.0, perf=PerfConfig(budget_s=600.0, **perf)),
        pin=PIN,
        logs=tmp_path / "logs",
        baseline=base,
        load=lambda: load,
    )


def test_each_round_is_a_fresh_process_pair_and_same_speed_passes(tmp_path: Path) -> None:
    cand, base = engine(tmp_path, "cand"), engine(tmp_path, "base")
    v = run_gate(inputs(tmp_path, cand, base), say=lambda _: None)
    assert v.perf.status == "pass", v.perf.reason
    assert (v.perf.rounds, v.perf.pairs) == (2, 8)  # min_pairs 8 in rounds of 4
    # the suite's engines for round 1, a fresh pair for round 2: two processes a side
    assert len(set(starts(tmp_path, "cand"))) == len(set(starts(tmp_path, "base"))) == 2
    assert v.perf.samples["round"] == [0.0] * 4 + [1.0] * 4
    assert len(v.perf.samples["cand_load_s"]) == 2 and len(v.perf.samples["base_rss"]) == 2
    assert (tmp_path / "logs" / "candidate-round1.log").is_file()
    assert v.perf.reason.startswith(
        "same: no slowdown of 10% or more in any metric (indifference zone 3%-10%)"
    )
    assert v.perf.memory_status == "pass" and "fails above +15%" in v.perf.memory_reason
    assert v.perf.load_time.startswith("model load time candidate/baseline ")
    assert "2 process pairs; reported, not gated" in v.perf.load_time
    assert v.outcome == "pass" and not v.warnings
    text = markdown(v)
    assert "**Memory**: ✅ peak resident memory" in text and "**Load time**: model load" in text
    assert 'name="peak memory"' in junit(v)
    # a perf test that did not run says nothing about memory or load time
    quiet = replace(v, perf=replace(v.perf, memory_reason="", load_time=""))
    assert "**Memory**" not in markdown(quiet) and "**Load time**" not in markdown(quiet)
    assert 'name="peak memory"' not in junit(quiet)


def test_a_slower_candidate_fails_in_the_rules_words(tmp_path: Path) -> None:
    cand, base = engine(tmp_path, "cand", gen=80.0), engine(tmp_path, "base")
    v = run_gate(inputs(tmp_path, cand, base), say=lambda _: None)
    assert v.perf.status == "fail" and v.outcome == "fail"
    assert v.reasons == [f"performance: {v.perf.reason}"]
    assert v.perf.reason.startswith(
        "slower: generation is slower: the data exclude a slowdown smaller than 3% (upper bound "
    )
    assert "(indifference zone 3%-10%)" in v.perf.reason
    assert "generation: candidate/baseline 0.800" in v.perf.reason


def test_grown_memory_fails_on_its_own_tolerance(tmp_path: Path) -> None:
    # 160 MiB of ballast on a ~20 MiB process: far above +15%, at the same speed
    cand = engine(tmp_path, "cand", ballast=160 * 2**20)
    base = engine(tmp_path, "base")
    v = run_gate(inputs(tmp_path, cand, base, min_pairs=4), say=lambda _: None)
    assert v.perf.status == "pass" and v.perf.memory_status == "fail"
    assert v.outcome == "fail"
    assert v.reasons == [f"memory: {v.perf.memory_reason}"]
    assert "fails above +15%)" in v.perf.memory_reason
    assert "**Memory**: ❌" in markdown(v) and "<failure" in junit(v)


def test_grown_memory_in_the_warn_band_warns(tmp_path: Path) -> None:
    cand = engine(tmp_path, "cand", ballast=160 * 2**20)
    base = engine(tmp_path, "base")
    v = run_gate(
        inputs(tmp_path, cand, base, min_pairs=4, max_rss_growth=50.0, warn_rss_growth=0.05),
        say=lambda _: None,
    )
    assert v.perf.memory_status == "warn" and v.outcome == "pass"
    assert v.warnings == [f"memory: {v.perf.memory_reason}"]
    assert v.perf.memory_reason.endswith("warns above +5%)")
    assert "**Memory**: ⚠️" in markdown(v)


def test_undecided_is_unknown_and_names_what_is_missing(tmp_path: Path) -> None:
    # 6% slower: inside the indifference zone; with the floors it cannot be decided in
    # one round of 2 pairs, and the rounds run out
    cand, base = engine(tmp_path, "cand", gen=94.0), engine(tmp_path, "base")
    v = run_gate(
        inputs(tmp_path, cand, base, min_pairs=2, max_pairs=2, pairs_per_round=2),
        say=lambda _: None,
    )
    assert v.perf.status == "inconclusive" and v.outcome == "inconclusive"
    assert v.perf.reason.startswith("unknown after 2 pairs in 1 process pairs / ")
    assert "(more pairs needed; not a pass): generation is unknown: the bounds " in v.perf.reason
    assert "1 process pairs; reported, not gated" in v.perf.load_time


def test_a_busy_machine_is_named_in_the_warnings(tmp_path: Path) -> None:
    """Stalled requests (here every fifth request of the candidate runs 10 times slower) and
    a high load average each make the report say the machine was busy; stalls in one engine
    alone may be that engine's own doing, and the report says so."""
    cand, base = engine(tmp_path, "cand", stall_every=5), engine(tmp_path, "base")
    busy = float(cpu_count() + 1)  # the engine's threads (unset: every CPU) plus one
    v = run_gate(inputs(tmp_path, cand, base, load=busy), say=lambda _: None)
    assert [w.split(" (")[0] for w in v.warnings] == [
        "performance: the machine was busy during the measurement"
    ]
    assert "timed requests of the candidate ran at under 1/3 of its median rate" in v.warnings[0]
    assert "of the baseline" not in v.warnings[0]
    assert f"reached {busy:.1f} on {cpu_count()} CPUs" in v.warnings[0]
    assert v.perf.status == "inconclusive"  # 10 of 80 requests stalled: the rounds ran out
    text = markdown(v)
    assert text.index("**Warnings:**") < text.index("the machine was busy during the measurement")
    # the same stalls on a machine whose load stayed low: the candidate may be the cause
    alone = run_gate(inputs(tmp_path, cand, base, load=0.5), say=lambda _: None)
    assert alone.warnings[0].startswith(
        "performance: the machine may have been busy, or the candidate stalls now and then ("
    )
    # a quiet machine: no stalls, load under the CPU count plus one
    quiet = run_gate(inputs(tmp_path, base, base, load=0.5), say=lambda _: None)
    assert not quiet.warnings and quiet.perf.busy == ""


def test_busy_note_signs_one_at_a_time() -> None:
    assert stalled([100.0, 98.0, 101.0, 30.0, 0.0]) == 1  # 30 < 99/3; a zero is no rate
    assert stalled([100.0, 34.0, 100.0]) == 0 and stalled([]) == 0 and stalled([0.0]) == 0
    none = {"candidate": 0, "baseline": 0}
    assert busy_note(none, 16, None, 2) == "" and busy_note(none, 16, 2.9, 2) == ""
    only_load = busy_note(none, 16, 3.0, 2)
    assert only_load.startswith("the machine was busy during the measurement (the load average")
    assert "reached 3.0 on 2 CPUs" in only_load and "timed requests" not in only_load
    # the engine uses 2 of 16 CPUs: a load of 3 means one more runnable task beside it
    assert "reached 3.0 on 16 CPUs" in busy_note(none, 16, 3.0, 16, threads=2)
    assert busy_note(none, 16, 16.9, 16) == ""  # every CPU is the engine's: 17 is the bar
    both = busy_note({"candidate": 2, "baseline": 1}, 16, None, 2)
    assert both.startswith("the machine was busy during the measurement (2 of 16 timed")
    assert "; 1 of 16 timed requests of the baseline" in both and "load average" not in both
    assert both.endswith("or set gate.threads below the CPU count")
    load = machine_load()  # the edge the gate reads by default: Linux has a load average
    assert load is not None and load >= 0 and cpu_count() >= 1


def test_the_perf_prompt_has_the_configured_length_and_its_sentences_are_unchanged() -> None:
    """6 sentences by default, each the sentence every recorded figure was measured with
    (the first 6 of the 24 the prompt had before it had a length setting)."""
    default = perf_prompt(PerfConfig().prompt_sentences)
    words = ["length", "width", "depth", "colour", "temperature"] * 5
    before = " ".join(  # the constant the prompt was before it had a length setting
        f"Item {i}: the {w} of the river valley was recorded in the village ledger."
        for i, w in zip(range(24), words, strict=False)
    )
    assert perf_prompt(24) == before
    assert before.startswith(default + " Item 6: ") and default.count("Item ") == 6
    assert perf_prompt(4).count("Item ") == 4 and perf_prompt(100).count("Item ") == 100
