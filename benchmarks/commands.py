"""Time the warm path of every llamapin command, with its top costs from a profile.

Each command runs as its own process (`python -m llamapin ...`, interpreter start
included) in a temporary zero-config project that uses the real cache, so the
engine, the model and the llama.cpp sources are already there ("warm"). Each is
run --runs times for the wall time (median and min), then once more under
cProfile for its three largest cumulative costs (click's and runpy's own frames,
and the command function itself, left out).

`check` talks to GitHub: it runs against the local GitHub the tests use
(tests/fakes/github.py), which needs GitHub's OpenAPI description in the cache
(fetched once with npm). Without it, `check` is skipped and the reason recorded.

The package's bytecode is compiled first, as pip compiles an installed wheel's.

Usage (from the repo root, after scripts/demo has filled the cache):
    .venv/bin/python benchmarks/commands.py --label after --runs 5
    # each run paired with a run of an older tree, alternating (a ratio on a noisy machine):
    git archive <old commit> src | tar -x -C OLD
    .venv/bin/python benchmarks/commands.py --label "A/B" --runs 10 --baseline-src OLD/src
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from llamapin.config import Config

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "commands.json"
NOW = "2026-07-30T00:00:00Z"
LLAMA = "ggml-org/llama.cpp"
BUILTIN_WRAPPERS = tuple(
    f"<built-in method builtins.{name}" for name in ("exec", "__import__", "__build_class__")
)
SKIP_FRAMES = ("/click/", "runpy", "cProfile.py", "profile.py", "__main__.py")


@contextmanager
def local_github() -> Iterator[tuple[str | None, str]]:
    """(api_url, why) of a local GitHub with the pinned build and one newer release."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.fakes.github import FakeGitHub
        from tests.fakes.openapi import Spec, fetch_spec
        from tests.integration.test_upstream import PUBLISHED, SUBJECTS, commit_of, when

        spec = Spec(fetch_spec(Path(Config().cache_dir).expanduser()))
    except (ImportError, OSError, subprocess.CalledProcessError) as exc:
        yield None, f"no local GitHub: {type(exc).__name__}: {exc}"
        return
    fake = FakeGitHub(spec)
    try:
        for n in (10068, 10069):
            fake.add_release(LLAMA, f"b{n}", commit_of(n), when(PUBLISHED[n]))
            fake.add_compare(LLAMA, commit_of(10068), commit_of(n), SUBJECTS, [])
        yield fake.api, "local GitHub (tests/fakes/github.py), pinned build + one newer release"
    finally:
        fake.close()


def llamapin(
    root: Path, args: list[str], profile: Path | None = None, src: Path | None = None
) -> tuple[int, float, str]:
    """Run one command; with ``src``, that copy of the package instead of this tree's."""
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "llamapin", "--root", str(root), *args]
    env = None if src is None else {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False, env=env)
    took = time.perf_counter() - start
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode, took, tail


def short(path: str) -> str:
    """A source path without this machine's prefix: the package, or stdlib/..."""
    if "site-packages/" in path:
        return path.rsplit("site-packages/", maxsplit=1)[-1]
    if "/src/llamapin/" in path:
        return "llamapin/" + path.rsplit("/src/llamapin/", maxsplit=1)[-1]
    stdlib = sysconfig.get_paths()["stdlib"]
    return "stdlib/" + path[len(stdlib) + 1 :] if path.startswith(stdlib) else Path(path).name


def top_costs(profile: Path, command_func: str, n: int = 3) -> list[dict[str, Any]]:
    stats = pstats.Stats(str(profile))
    rows: list[tuple[float, str]] = []
    for (path, line, func), entry in stats.stats.items():  # type: ignore[attr-defined]
        cumulative = entry[3]
        if path == "~" and func.startswith(BUILTIN_WRAPPERS):
            continue
        if any(part in path for part in SKIP_FRAMES) or func == "<module>":
            continue
        if path.startswith("<frozen"):
            if func == "_find_and_load":  # outermost import frames: what imports cost
                rows.append((cumulative, "imports"))
            continue
        if path.endswith("llamapin/cli.py") and func in (command_func, "main", "cli"):
            continue
        rows.append((cumulative, f"{short(path)}:{line}({func})"))
    rows.sort(reverse=True)
    return [{"where": where, "cumulative_s": round(cum, 3)} for cum, where in rows[:n]]


def app_config(root: Path) -> Path:
    """A config for `drift` and `locators`: the bundle's real closure declared in a
    tauri.conf.json, and one pin value kept in a TypeScript file (both current)."""
    from llamapin.engine.bundle import MANIFEST
    from llamapin.pin import read_lock

    manifest = json.loads((root / ".llamapin" / "engine" / MANIFEST).read_text())
    conf = {"bundle": {"macOS": {"frameworks": manifest["closure"]["libs"]}}}
    (root / "tauri.conf.json").write_text(json.dumps(conf))
    with as_file(files("llamapin").joinpath("default.lock")) as default_lock:
        build = read_lock(default_lock).build
    (root / "engine.ts").write_text(f"export const LLAMA_CPP_TAG = '{build}';\n")
    path = root / "app.toml"
    path.write_text(
        '[bundle]\nframeworks_file = "tauri.conf.json"\n'
        '[[locators]]\nfile = "engine.ts"\nfield = "build"\n'
        "regex = \"LLAMA_CPP_TAG = '(b\\\\d+)'\"\n"
    )
    return path


def commands(model: Path, check_config: Path | None, app: Path) -> list[tuple[str, list[str], str]]:
    """(name, argv, the cli.py function behind it)."""
    cmds = [
        ("ensure (no-op)", ["ensure"], "ensure"),
        ("verify", ["verify"], "verify"),
        ("gate --perf off", ["gate", "--perf", "off"], "gate"),
        ("archs", ["archs"], "archs"),
        ("check-model", ["check-model", str(model)], "check_model"),
        ("locators", ["--config", str(app), "locators"], "locators"),
        ("drift", ["--config", str(app), "drift"], "drift"),
        # an action reference: init refuses an install step the package index cannot resolve
        ("init", ["init", "--force", "--action", f"example-org/llamapin@{'a' * 40}"], "init"),
    ]
    if check_config is not None:
        cmds.insert(3, ("check", ["--config", str(check_config), "check", "--now", NOW], "check"))
    return cmds


def shown(arg: str, root: Path, model: Path) -> str:
    """An argument as recorded: no machine paths."""
    if arg == str(model):
        return "<the default model in the cache>"
    return Path(arg).name if arg.startswith(str(root)) else arg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", required=True, help="e.g. before / after")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", nargs="*", help="names of commands to run (default: all)")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="a copy of an older src/ (e.g. from git archive): each run of a command is "
        "paired with a run of that copy (which goes first alternates), and the pairs' ratio "
        "is recorded",
    )
    args = parser.parse_args()

    # Timed as installed: pip compiles a wheel's bytecode when it installs it, and a
    # machine with PYTHONDONTWRITEBYTECODE set would otherwise compile every import.
    from llamapin import __file__ as package_init

    package = Path(package_init).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    if args.baseline_src is not None:
        baseline = args.baseline_src / "llamapin"
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(baseline)], check=True)
    cfg = Config()
    model = Path(cfg.cache_dir).expanduser() / "blobs" / "sha256" / cfg.model.sha256
    if not model.is_file():
        sys.exit(f"the default model is not in the cache ({model.name}): run scripts/demo first")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llamapin-bench-") as tmp, local_github() as gh:
        root = Path(tmp)
        api, why = gh
        check_config = None
        if api is not None:
            check_config = root / "check.toml"
            check_config.write_text(f'[upstream]\napi_url = "{api}"\n')
        code, took, tail = llamapin(root, ["ensure"])  # install the bundle (from the cache)
        if code != 0:
            sys.exit(f"ensure failed: {tail}")
        print(f"set-up ensure: {took:.1f} s", file=sys.stderr)
        for name, argv, func in commands(model, check_config, app_config(root)):
            if args.only and name.split()[0] not in args.only:
                continue
            times: list[float] = []
            base_times: list[float] = []
            codes: set[int] = set()
            for run in range(args.runs):
                # paired runs: the older tree first in even runs, second in odd ones
                for which in ("base", "this") if run % 2 == 0 else ("this", "base"):
                    if which == "base" and args.baseline_src is not None:
                        code, took, _tail = llamapin(root, argv, src=args.baseline_src)
                        base_times.append(took)
                        codes.add(code)
                    elif which == "this":
                        code, took, tail = llamapin(root, argv)
                        times.append(took)
                        codes.add(code)
            prof = root / "profile.out"
            llamapin(root, argv, prof)
            results[name] = {
                "argv": [shown(a, root, model) for a in argv],
                "exit_codes": sorted(codes),
                "last_stderr_line": tail,
                "median_s": round(statistics.median(times), 3),
                "min_s": round(min(times), 3),
                "runs_s": [round(t, 3) for t in times],
                "top_costs": top_costs(prof, func),
            }
            if base_times:
                results[name]["baseline"] = {
                    "median_s": round(statistics.median(base_times), 3),
                    "min_s": round(min(base_times), 3),
                    "runs_s": [round(t, 3) for t in base_times],
                    "ratio_median": round(
                        statistics.median(t / b for t, b in zip(times, base_times, strict=True)),
                        3,
                    ),
                }
            with suppress(FileNotFoundError):
                prof.unlink()
            print(f"{name}: median {results[name]['median_s']} s", file=sys.stderr)
        if check_config is None:
            results["check"] = {"skipped": why}
        elif "check" in results:
            results["check"]["against"] = why
    load = os.getloadavg()
    record = {
        "label": args.label,
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "bytecode": "compiled first (compileall), as pip installs a wheel",
        "paired_with_baseline": args.baseline_src is not None,
        "loadavg_after": [round(x, 2) for x in load],
        "commands": results,
    }
    existing: dict[str, Any] = {}
    if args.out.is_file():
        existing = json.loads(args.out.read_text())
    existing[args.label] = record
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    print(table(record))


def table(record: dict[str, Any]) -> str:
    lines = [
        f"{record['label']} ({record['runs']} runs each, {record['cpus']} CPUs, "
        f"load average after {record['loadavg_after']})",
        "",
        "| command | median s | min s | exit | top three costs (cumulative s) |",
        "|---|---|---|---|---|",
    ]
    paired = record.get("paired_with_baseline", False)
    if paired:
        lines[-2:] = [
            "| command | baseline median s | median s | ratio (median of pairs) | min s | exit "
            "| top three costs (cumulative s) |",
            "|---|---|---|---|---|---|---|",
        ]
    for name, r in record["commands"].items():
        if "skipped" in r:
            lines.append(f"| `{name}` | skipped | | | {r['skipped']} |")
            continue
        costs = "; ".join(f"`{c['where']}` {c['cumulative_s']}" for c in r["top_costs"])
        exits = ",".join(str(c) for c in r["exit_codes"])
        if paired:
            b = r["baseline"]
            lines.append(
                f"| `{name}` | {b['median_s']} | {r['median_s']} | {b['ratio_median']} "
                f"| {r['min_s']} | {exits} | {costs} |"
            )
            continue
        lines.append(f"| `{name}` | {r['median_s']} | {r['min_s']} | {exits} | {costs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
