"""`llamapin init`: write the project's workflows from the templates shipped here."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from llamapin import __version__
from llamapin.errors import ConfigError

GATE_PATH = ".github/workflows/llamapin-gate.yml"
BUMP_PATH = ".github/workflows/llamapin-bump.yml"


@dataclass(frozen=True)
class Planned:
    path: str
    text: str
    status: str  # "write", "unchanged", "edited"


def runner_for(platform: str) -> str:
    """The GitHub-hosted runner that runs the engine the app ships."""
    if platform.startswith("macos"):
        return "macos-latest"  # an Apple silicon (arm64) runner
    if platform.endswith("arm64"):
        return "[self-hosted, linux, arm64]"
    return "ubuntu-22.04"


def render(name: str, platform: str, install: str, default_branch: str) -> str:
    template = Template(files("llamapin").joinpath(f"templates/{name}.yml").read_text())
    return template.safe_substitute(
        VERSION=__version__,
        RUNNER=runner_for(platform),
        INSTALL=install,
        DEFAULT_BRANCH=default_branch,
    )


def plan(root: Path, rendered: dict[str, str]) -> list[Planned]:
    out = []
    for rel, text in rendered.items():
        path = root / rel
        if not path.exists():
            status = "write"
        elif path.read_text(encoding="utf-8") == text:
            status = "unchanged"
        else:
            status = "edited"
        out.append(Planned(rel, text, status))
    return out


def apply(root: Path, planned: list[Planned], force: bool) -> list[str]:
    """Write the planned files; refuse (writing nothing) if any was edited, unless forced."""
    edited = [p.path for p in planned if p.status == "edited"]
    if edited and not force:
        raise ConfigError(
            f"refusing to overwrite {', '.join(edited)}",
            "the file differs from what llamapin would write (it was edited, or written by "
            "another llamapin version)",
            "Review the difference, then run 'llamapin init --force' to replace it",
        )
    lines = []
    for p in planned:
        if p.status == "unchanged":
            lines.append(f"unchanged: {p.path}")
            continue
        path = root / p.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(p.text, encoding="utf-8")
        lines.append(f"{'replaced' if p.status == 'edited' else 'wrote'}: {p.path}")
    return lines
