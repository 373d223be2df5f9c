"""Untrusted text made inert before it reaches a report, a PR body or a JUnit file.

Text llamapin did not write reaches what people read: upstream commit subjects
and architecture names, engine answers and ``/props`` build info, log tails,
file names from a package index or an API, names from a suite a contributor
edited. Rendered as Markdown (a job summary, a PR body) such text could carry
live HTML, images that call out, links, @-mentions that ping a team, or a new
heading; in XML it could carry characters that make the file unreadable. Every
renderer passes it through one of the functions here.
"""

from __future__ import annotations

import re
import unicodedata

_INVISIBLE = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp"}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
ZWSP = "\u200b"
# Characters XML 1.0 cannot carry at all (a JUnit file with one is unreadable).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _visible(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) not in _INVISIBLE)


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _no_pings(text: str) -> str:
    """No @-mention, no scheme (so no autolink), no bare www link."""
    text = text.replace("@", "@" + ZWSP).replace(":", ":" + ZWSP)
    return re.sub(r"(?i)www(\\?\.)", "www" + ZWSP + r"\1", text)


def sanitize(text: str, limit: int = 200) -> str:
    """Untrusted text made inert for Markdown, as one line of running text.

    No raw HTML (``<`` ``>`` ``&`` become entities), no links or images (Markdown
    punctuation is escaped), no @-mentions or #-references that would ping people
    or link issues here (a zero-width space breaks them), no bare URLs turning
    into links, no control or bidirectional-override characters, one line, bounded.
    """
    flat = _bounded(_visible(" ".join(text.split())), limit)
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _no_pings(_MD_SPECIAL.sub(r"\\\1", flat))


def code(text: str, limit: int = 120) -> str:
    """Untrusted text as the inside of an inline code span (``f"`{code(x)}`"``).

    Nothing in a code span is live except a backtick, which would end it, and a
    ``|``, which would end a table cell: backticks become ``'`` and ``|`` is
    escaped (GitHub honours ``\\|`` inside code in tables). Mentions and links
    are broken as in :func:`sanitize`, for renderers that look inside code.
    """
    flat = _bounded(_visible(" ".join(text.split())), limit)
    return _no_pings(flat.replace("`", "'").replace("|", "\\|"))


def xml_text(text: str, limit: int = 20_000) -> str:
    """Untrusted text for a JUnit attribute or element: XML-safe, mentions and links broken.

    JUnit files are read by machines and re-rendered as Markdown by CI reporters,
    so characters XML cannot hold are dropped and pings and links are broken;
    ElementTree escapes ``<`` ``>`` ``&`` and quotes itself.
    """
    kept = "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) not in _INVISIBLE)
    return _no_pings(_bounded(_NOT_XML.sub("", kept), limit))


_LINK_TARGET = re.compile(r"\]\(([^()\s]*)\)")


def republished(markdown: str, allowed_links: tuple[str, ...], limit: int = 60_000) -> str:
    """Markdown that a job llamapin does not trust wrote (the prepare job of a split bump,
    which ran upstream code) made inert again before the privileged job publishes it.

    Headings, tables and code keep their shape; raw HTML, images, @-mentions, bare URLs
    and every link except those starting with one of ``allowed_links`` are broken, and
    control and bidirectional-override characters are dropped. Text that was already
    inert stays as it was.
    """
    text = "".join(
        ch
        for ch in _bounded(markdown, limit)
        if ch in "\n\t" + ZWSP or unicodedata.category(ch) not in _INVISIBLE
    )
    text = text.replace("<", "&lt;").replace("![", "!\\[")
    kept: list[str] = []

    def hold(match: re.Match[str]) -> str:
        if match.group(1).startswith(allowed_links):
            kept.append(match.group(0))
            return f"\x00{len(kept) - 1}\x00"
        return "]\\(" + match.group(1) + ")"

    text = _LINK_TARGET.sub(hold, text)
    text = re.sub("@(?!" + ZWSP + ")", "@" + ZWSP, text)
    text = text.replace("://", ":" + ZWSP + "//")
    text = re.sub(r"(?i)(www)(\\?\.)", r"\1" + ZWSP + r"\2", text)
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], text)


# ANSI escape sequences (CSI, OSC, and two-character escapes) and other control characters.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|\x9b")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_WORKFLOW_COMMAND = re.compile(r"^(\s*):", re.MULTILINE)


def terminal(text: str) -> str:
    """Untrusted text (an engine's log tail, a tool's output) made safe to print in a
    terminal or a CI log: no escape sequences that move the cursor, retitle the window or
    hide what follows, and no line a CI runner would read as a command (GitHub Actions
    obeys ``::add-mask::``, ``::error::`` and the like at the start of any output line)."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))
    return _WORKFLOW_COMMAND.sub(lambda m: m.group(1) + ZWSP + ":", text)
