"""One exception tree. Every error says what happened, why, and what to do next.

The CLI prints ``error: <what>: <why>. <fix>`` on one line, then any detail
(a log tail, a list of files) below it, and never a traceback.
"""

from __future__ import annotations

from llamapin.inert import terminal

PROJECT_URL = "https://github.com/llamapin/llamapin"
DOCS_URL = f"{PROJECT_URL}/blob/main/docs/adopting.md"
"""Where messages send the reader: the installed wheel has no docs/ folder."""


class LlamapinError(Exception):
    """Base of every error llamapin raises on purpose."""

    exit_code = 2

    def __init__(self, what: str, why: str, fix: str, detail: str = "") -> None:
        self.what = what
        self.why = why
        self.fix = fix
        self.detail = detail
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.what}: {self.why}. {self.fix}"

    def render(self) -> str:
        """The error as printed: its message can quote engine output, and its detail is
        often an engine's log tail, so both pass through :func:`inert.terminal`."""
        text = f"error: {self.line()}"
        if self.detail:
            text += "\n" + self.detail.rstrip("\n")
        return terminal(text)


class ConfigError(LlamapinError):
    """The configuration, the lock file or a command-line value is wrong."""


class LocatorError(ConfigError):
    """A pin value could not be found in, or written into, a project file."""


class FetchError(LlamapinError):
    """A download failed (network, HTTP status, size)."""


class PackageIndexError(FetchError):
    """A package index did not list what was asked for."""


class NotOnIndexError(PackageIndexError):
    """The package index has no such package at all (it answered 404)."""


class IntegrityError(LlamapinError):
    """Bytes, a commit or a build do not match what the pin says."""


class UnpackError(LlamapinError):
    """An archive is unsafe or malformed."""


class BuildError(LlamapinError):
    """A source build failed."""


class BinaryFormatError(LlamapinError):
    """An ELF, Mach-O or GGUF file could not be read."""


class ClosureError(LlamapinError):
    """A shared library the engine needs is not there."""


class SignatureError(LlamapinError):
    """A Mach-O code signature is missing or does not match the bytes."""


class BundleError(LlamapinError):
    """An installed bundle is missing, busy, or differs from its manifest."""


class MacosFloorError(BundleError):
    """A bundled Mach-O file needs a newer macOS than the app declares it supports."""


class EngineError(LlamapinError):
    """The engine did not start, died, or answered wrongly at the protocol level."""


class ModelError(LlamapinError):
    """The gate model could not be fetched, verified or read."""


class ForgeError(LlamapinError):
    """The forge (GitHub's API, or the git remote) refused or failed a request."""
