"""The gate report comment on a bump PR: which comment is edited, and what it says."""

from __future__ import annotations

from llamapin.upstream.pr_comment import (
    FENCE,
    MARKER,
    MAX_COMMENT_CHARS,
    CommentFact,
    comment_body,
    ours,
)

ME = frozenset({"llamapin-bot"})
LINKS = ("https://github.com/ggml-org/llama.cpp/compare/",)


def test_no_comment_means_a_new_one() -> None:
    assert ours([], ME) is None
    plain = [CommentFact(5, "llamapin-bot", "Superseded by #2 (b10088). Closed by llamapin.")]
    assert ours(plain, ME) is None


def test_our_marked_comment_is_edited() -> None:
    comments = [
        CommentFact(3, "alice", "looks good"),
        CommentFact(7, "llamapin-bot", MARKER + "\n## llamapin gate: FAIL"),
    ]
    assert ours(comments, ME) == 7


def test_someone_elses_marked_comment_is_never_ours() -> None:
    forged = [
        CommentFact(2, "mallory", MARKER + "\nI copied the marker"),
        CommentFact(4, None, MARKER + "\na deleted account's comment"),
    ]
    assert ours(forged, ME) is None
    assert ours([*forged, CommentFact(9, "llamapin-bot", MARKER + "\nreport")], ME) == 9
    # nobody known (no login at all): nothing is edited
    assert ours([CommentFact(9, "llamapin-bot", MARKER)], frozenset()) is None


def test_a_quote_of_the_marker_is_not_the_report() -> None:
    quoted = [CommentFact(6, "llamapin-bot", "> " + MARKER + "\n> the old report")]
    assert ours(quoted, ME) is None


def test_of_several_ours_the_oldest_is_edited() -> None:
    comments = [
        CommentFact(12, "llamapin-bot", MARKER + "\nnewer"),
        CommentFact(8, "llamapin-bot", MARKER + "\nolder"),
        CommentFact(1, "mallory", MARKER + "\nforged, oldest"),
    ]
    assert ours(comments, ME) == 8


def test_the_body_is_marked_and_inert() -> None:
    report = (
        "## llamapin gate: FAIL\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
        "@octocat <img src=x> ![i](https://evil.example/i.png) [l](https://evil.example) "
        "[ok](https://github.com/ggml-org/llama.cpp/compare/b1...b2) \u202e"
    )
    body = comment_body(report, LINKS)
    assert body.startswith(MARKER + "\n## llamapin gate: FAIL\n")
    assert "| 1 | 2 |" in body  # the tables keep their shape
    assert "@octocat" not in body and "<img" not in body and "![" not in body
    assert "](https://evil" not in body and "\u202e" not in body
    assert "[ok](https://github.com/ggml-org/llama.cpp/compare/b1...b2)" in body
    # the only raw HTML is the marker itself
    assert body.count("<") == 1


def test_a_long_report_is_cut_at_a_line_with_a_note() -> None:
    report = "## report\n" + "".join(f"| row {i} | {'x' * 50} |\n" for i in range(3000))
    body = comment_body(report, LINKS)
    assert len(body) <= MAX_COMMENT_CHARS
    kept, note = body.rsplit("\n\n", 1)
    assert kept.endswith("|") and kept.splitlines()[-1].startswith("| row ")
    assert note.startswith("_The report was cut to fit a comment (")
    assert "gate.md in the bump workflow's llamapin-bump artifact" in note
    small = comment_body(report, LINKS, limit=1000)
    assert len(small) <= 1000 and small.startswith(MARKER)


def test_a_cut_inside_a_code_block_closes_it() -> None:
    report = "## report\n" + FENCE + "\n" + "log line\n" * 2000 + FENCE + "\nafter\n"
    body = comment_body(report, LINKS, limit=2000)
    fences = [x for x in body.splitlines() if x.startswith(FENCE)]
    assert len(fences) == 2 and len(body) <= 2000
    assert "after" not in body
    # a cut outside any code block adds no fence
    closed = "## report\n" + FENCE + "\nx\n" + FENCE + "\n" + "tail\n" * 2000
    body = comment_body(closed, LINKS, limit=2000)
    assert [x for x in body.splitlines() if x.startswith(FENCE)] == [FENCE, FENCE]


def test_a_single_line_report_is_cut_anywhere() -> None:
    body = comment_body("x" * 5000, LINKS, limit=1000)
    assert len(body) <= 1000 and "x" * 100 in body


def test_the_runtime_an_ensure_command_needs() -> None:
    from llamapin.workflows import SETUP_BUN, SETUP_NODE, runtime_step

    assert runtime_step(None) == runtime_step("") == runtime_step("   ") == ""
    assert runtime_step("scripts/fetch.sh --engine") == ""
    assert runtime_step("python -m fetch") == ""
    bun = runtime_step("bun run engine:ensure")
    assert bun == runtime_step("bunx fetch-engine") == runtime_step("/usr/local/bin/bun x")
    assert f"uses: {SETUP_BUN}" in bun and "setup-node" not in bun
    node = runtime_step("node scripts/ensure.mjs")
    assert f"uses: {SETUP_NODE}" in node and 'node-version: "lts/*"' in node
    assert runtime_step("npx fetch-engine") == runtime_step("npm run ensure") == node
    assert "corepack" not in node
    for tool in ("pnpm", "yarn"):
        step = runtime_step(f"{tool} run ensure")
        assert step.startswith(node) and f"Enable {tool} (corepack)" in step
    # pinned to a full commit, with the version as a comment, like the other actions
    for ref in (SETUP_BUN, SETUP_NODE):
        sha, comment = ref.split("@", 1)[1].split(" # ")
        assert len(sha) == 40 and comment.startswith("v")
