"""A project in a real git repository whose remote is a local bare one (the forge side of the
bump tests), shared by the tests that open PRs against the fake GitHub."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def publish(root: Path, bare: Path, github: Any, repo: str) -> None:
    """Commit everything in ``root`` on main, push it to ``bare`` (its origin), and let the
    fake GitHub serve ``bare`` as ``repo``."""
    git(root, "init", "--quiet", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "app")
    git(root, "remote", "add", "origin", str(bare))
    git(root, "push", "--quiet", "origin", "main")
    github.repo(repo, bare=bare)
