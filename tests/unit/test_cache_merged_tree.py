"""The merged release tree (a CUDA build and its runtime) in the shared cache, when runs
overlap: a tree another run placed is never deleted in place, and several runs building
the same tree at once each get the complete one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from llamapin.archive import COMPLETE, Limits
from llamapin.config import EngineConfig
from llamapin.engine.sources import Context, merged
from llamapin.fetch import Cache
from llamapin.pin import Pin
from tests.conftest import COMMIT_10068

MERGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import httpx
    from llamapin.archive import Limits
    from llamapin.config import EngineConfig
    from llamapin.engine.sources import Context, merged
    from llamapin.fetch import Cache
    from llamapin.pin import Pin
    cache, go = Path(sys.argv[1]), Path(sys.argv[2])
    parts = [(Path(p), p[-1] * 64) for p in sys.argv[3:]]
    with httpx.Client() as http:
        ctx = Context(Pin("b1", "0" * 40, {}), EngineConfig(),
                      "windows-x64", Cache(cache), http, Limits(), log=lambda _: None)
        while not go.exists():
            time.sleep(0.005)
        tree = merged(ctx, parts)
    print(tree.stat().st_ino, sorted(p.name for p in tree.iterdir())[:3])
    """
)


def parts(tmp_path: Path) -> list[tuple[Path, str]]:
    build, runtime = tmp_path / "part-a", tmp_path / "part-b"
    for tree, names in ((build, ("llama-server.exe", "ggml.dll")), (runtime, ("cudart.dll",))):
        tree.mkdir()
        for name in names:
            (tree / name).write_bytes(name.encode())
        (tree / COMPLETE).write_text("x")
    for i in range(2000):  # enough files that the runs overlap
        (build / f"f{i}.dll").write_bytes(b"%d" % i)
    return [(build, "a" * 64), (runtime, "b" * 64)]


def test_an_unfinished_tree_in_the_way_is_set_aside_not_used(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    found = parts(tmp_path)
    with httpx.Client() as http:
        ctx = Context(
            Pin("b10068", COMMIT_10068, {}), EngineConfig(), "windows-x64", cache, http, Limits()
        )
        first = merged(ctx, found)
        key = first.name
        (first / COMPLETE).unlink()  # an older version's unfinished tree, with a stray file
        (first / "half.dll").write_bytes(b"partial")
        tree = merged(ctx, found)
    assert tree == first and (tree / COMPLETE).read_text() == key
    assert not (tree / "half.dll").exists()
    assert (tree / "cudart.dll").read_bytes() == b"cudart.dll"
    assert sorted(p.name for p in (cache.root / "trees").iterdir()) == [key]


def test_concurrent_runs_share_one_merged_tree(tmp_path: Path) -> None:
    """Before: each run deleted the folder in place, then renamed its own over it, so a
    tree one run had returned (and was copying from) was replaced beneath it, and a run
    could lose the rename (ENOTEMPTY: a traceback). Now the first tree placed stays: every
    run returns that same folder (one inode), and it is the one left."""
    found = parts(tmp_path)
    cache, go = tmp_path / "cache", tmp_path / "go"
    argv = [sys.executable, "-c", MERGE, str(cache), str(go), *(str(p) for p, _ in found)]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    time.sleep(0.5)  # not for correctness: gives the runs a chance to start before "go"
    go.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-2000:] for _, err in outs]
    assert all("['.complete', 'cudart.dll', 'f0.dll']" in out for out, _ in outs), outs
    trees = cache / "trees"
    (key,) = (p.name for p in trees.iterdir())  # one tree, no partial folder left
    assert len(list((trees / key).iterdir())) == 2004
    assert {out.split()[0] for out, _ in outs} == {str((trees / key).stat().st_ino)}, outs
