"""Paths named by configuration, and what they may point at.

A config file, a lock file or a locator arrives in a pull request like any
other change, so every path it names is checked before llamapin opens it:
files named by config keys must resolve (symlinks followed) inside the project
root, a directory where a file belongs is a one-line error, asset names are
single file-name components, and ``engine.binary`` stays inside its bundle.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from llamapin.errors import ConfigError

# One file name: starts with a letter or digit (so never '.', '..' or a hidden name),
# then letters, digits and . _ + - only. Release assets, wheels and sdists all fit.
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}\Z")


def is_within(path: Path, base: Path) -> bool:
    """``path`` is ``base`` or below it (both already resolved)."""
    return path == base or base in path.parents


def resolve(path: Path, key: str, error: type[ConfigError] = ConfigError) -> Path:
    """``path`` with every symlink followed; a link loop is a one-line error."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # 3.11 raises RuntimeError on a symlink loop
        raise error(
            f"cannot resolve {key} {path}",
            str(exc),
            f"Remove the symlink loop, or point {key} elsewhere",
        ) from None


def inside_root(
    root: Path, value: str | Path, key: str, error: type[ConfigError] = ConfigError
) -> Path:
    """The resolved path a config key names, refused unless it lies inside ``root``.

    Relative values are taken from the project root; symlinks are followed before
    the check, so a link inside the project that points out of it is refused too.
    """
    base = root.resolve()
    resolved = resolve(base / value, key, error)
    if not is_within(resolved, base):
        raise error(
            f"{key} {str(value)!r} is outside the project root",
            f"it resolves to {resolved}, and llamapin opens only files inside {base}",
            f"Point {key} at a file inside the project (relative to its root)",
        )
    return resolved


def read_text(path: Path, key: str, error: type[ConfigError] = ConfigError) -> str:
    """A config-named file's text; one-line errors for a directory, bad bytes or no access.

    A missing file raises FileNotFoundError for the caller to word.
    """
    try:
        return path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise error(
            f"{key} {path} is a directory",
            "a file belongs there",
            f"Point {key} at a file",
        ) from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{key} {path} is not UTF-8 text",
            f"byte {exc.start} cannot be decoded",
            "Save the file as UTF-8",
        ) from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(
            f"cannot read {key} {path}",
            exc.strerror or type(exc).__name__,
            "Check the file's permissions",
        ) from None


def file_name(name: str, key: str) -> str:
    """``name`` when it is one safe file-name component, else a ConfigError."""
    if not FILE_NAME_RE.match(name):
        raise ConfigError(
            f"{key} {name!r} is not a plain file name",
            "an asset name is one file-name component of letters, digits and . _ + - "
            "(no '/', no leading dot)",
            "Fix the name in llamapin.lock (it is the file's name on the release or index)",
        )
    return name


def bundle_relative(name: str, key: str) -> str:
    """``name`` when it is a relative path that stays inside a bundle, else a ConfigError."""
    pure = PurePosixPath(name)
    if "\\" in name or not pure.parts or pure.is_absolute() or ".." in pure.parts:
        raise ConfigError(
            f"{key} {name!r} is not a path inside the bundle",
            "it must be a relative path without '..' parts",
            f"Set {key} to the binary's name (or its path inside the build, e.g. bin/llama-server)",
        )
    return name


def contained(path: Path, base: Path, key: str) -> Path:
    """``path`` itself, refused when it (or a symlink on its way) leads out of ``base``."""
    resolved = resolve(path, key)
    if not is_within(resolved, base.resolve()):
        raise ConfigError(
            f"{key} {path.name} leaves the bundle",
            f"it resolves to {resolved}, outside {base}",
            f"Point {key} at a regular file inside the build, not a link out of it",
        )
    return path


def json_at(root: Path, file: str, key_path: str, key: str) -> tuple[Any, Path]:
    """The value at the dotted ``key_path`` of the JSON file ``file`` inside the project
    (``key`` names the setting that points at it), None where a part is missing; and the
    file's path."""
    path = inside_root(root, file, key)
    try:
        node: Any = json.loads(read_text(path, key))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}", str(exc), f"Fix {key}") from None
    for part in key_path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node, path
