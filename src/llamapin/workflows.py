"""`llamapin init`: write the project's workflows from the templates shipped here."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from llamapin import __version__
from llamapin.config import RUNNER_LABEL, TARGET_NAME, Config
from llamapin.errors import ConfigError

GATE_PATH = ".github/workflows/llamapin-gate.yml"
BUMP_PATH = ".github/workflows/llamapin-bump.yml"

# A branch name git and GitHub both accept, without the forms git forbids ('..', '@{', '//',
# a leading '.', '/' or '-', a trailing '.', '/' or '.lock') and without any character a
# shell, YAML or a workflow expression gives a meaning to.
REF_PATTERN = r"(?!.*\.\.)(?!.*@\{)(?!.*//)(?![./-])[A-Za-z0-9._/-]{1,200}(?<![./])(?<!\.lock)"
REF_RE = re.compile(rf"^{REF_PATTERN}\Z")
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?"
_URL_PATH = r"[A-Za-z0-9._~%+/-]{1,400}"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?(?::[0-9]{1,5})?"
INSTALL_FORMS = (
    # name==version, with optional extras: an exact pin from a package index
    re.compile(rf"^{_NAME}(?:\[{_NAME}(?:,{_NAME})*\])?==[A-Za-z0-9][A-Za-z0-9.+!_-]{{0,60}}\Z"),
    # a wheel over HTTPS, optionally with its sha256
    re.compile(rf"^https://{_HOST}/{_URL_PATH}\.whl(?:#sha256=[0-9a-f]{{64}})?\Z"),
    # a git repository over HTTPS at a full commit
    re.compile(rf"^git\+https://{_HOST}/{_URL_PATH}@[0-9a-f]{{40}}\Z"),
)
_PATH_PART = re.compile(r"^[A-Za-z0-9._+-]{1,255}\Z")


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


def check_install(value: str) -> str:
    """``init --install``: a pinned requirement, an HTTPS wheel, a git URL at a full commit,
    or a relative path; nothing a shell, YAML or a workflow expression could read as code."""
    if not any(form.match(value) for form in INSTALL_FORMS) and not _relative_path(value):
        raise ConfigError(
            f"bad --install value {value!r}",
            "it is not name==version, an https://....whl URL, a git+https://...@<40-hex "
            "commit> URL, or a relative path",
            "Pin llamapin exactly, e.g. --install llamapin==1.2.3",
        )
    return value


def _relative_path(value: str) -> bool:
    """'.', or a relative path of plain names (a wheel, or with a '/'), never '..', never
    starting with '-' or '/'."""
    if value in (".", "./"):
        return True
    if "/" not in value and not value.endswith(".whl"):
        return False  # pip would read a bare name as an unpinned requirement
    parts = value.removeprefix("./").removesuffix("/").split("/")
    return not value.startswith("-") and all(
        _PATH_PART.match(x) and x not in (".", "..") and not x.startswith("-") for x in parts
    )


def check_branch(value: str) -> str:
    """``init --default-branch``: a plain git branch name."""
    if not REF_RE.match(value):
        raise ConfigError(
            f"bad --default-branch value {value!r}",
            "it is not a plain git branch name (letters, digits, '.', '_', '-', '/')",
            "Name the repository's default branch, e.g. --default-branch main",
        )
    return value


ACTION_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}@[0-9a-f]{40}\Z")
REPO_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}\Z")


def check_action(value: str) -> str:
    """``init --action``: this project's composite action, pinned to a full commit."""
    if not ACTION_RE.match(value):
        raise ConfigError(
            f"bad --action value {value!r}",
            "it is not <owner>/<repository>@<40-hex commit> (a tag or branch can be moved "
            "under the workflow)",
            "Pin the action to a full commit, e.g. --action my-org/llamapin@<commit sha>",
        )
    return value


def check_repository(value: str) -> str:
    """The repository the bump workflow may run in (never in a fork)."""
    if not REPO_RE.match(value):
        raise ConfigError(
            f"bad repository name {value!r}",
            "it is not <owner>/<repository>",
            "Set forge.repo in the config to the repository's owner/name",
        )
    return value


_CACHE_PATH = re.compile(r"^(?:~/)?[A-Za-z0-9._/-]{1,400}\Z")


def cache_path(value: str) -> str:
    """``cache_dir`` as the workflows' cache path: the user's home as ``~``, plain path
    characters only (it is written into YAML)."""
    home = str(Path.home())
    if value == home or value.startswith(home + "/"):
        value = "~" + value[len(home) :]
    if not _CACHE_PATH.match(value) or ".." in value.split("/"):
        raise ConfigError(
            f"cache_dir {value[:80]!r} cannot be written into a workflow",
            "it holds characters other than letters, digits, '.', '_', '-' and '/' (or '..')",
            "Use a plain path for cache_dir, e.g. ~/.cache/llamapin",
        )
    return value


def version_on_index(filenames: list[str], version: str) -> bool:
    """Whether the index lists a wheel or sdist of llamapin ``version``."""
    stem = f"llamapin-{version}"
    return any(name.startswith(stem + "-") or name == stem + ".tar.gz" for name in filenames)


def default_install(filenames: list[str] | None, index_url: str) -> str:
    """``llamapin==<this version>`` when the index has it; otherwise a one-line refusal, so
    that no workflow is written whose install step would fail on its first run."""
    if filenames is not None and version_on_index(filenames, __version__):
        return f"llamapin=={__version__}"
    where = "has no llamapin at all" if filenames is None else f"has no llamapin {__version__}"
    raise ConfigError(
        f"cannot write an install step that works: the package index {index_url} {where}",
        f"the workflows would fail at 'pip install llamapin=={__version__}'",
        "Pass --install with a wheel URL, a git+https://...@<commit> URL or a path in the "
        "repository, or --action <owner>/llamapin@<commit> (see the README's Adopting section)",
    )


def install_step(install: str | None, action: str | None) -> str:
    """The body of the workflows' "Install llamapin" step (indented for the template): pip
    with the checked spec, or this project's action (its own checkout unless ``install``)."""
    if action is not None:
        lines = [f"        uses: {check_action(action)}", "        with:"]
        lines.append("          args: --version")
        if install is not None:
            lines.append(f"          install: {json.dumps(check_install(install))}")
        return "\n".join(lines)
    if install is None:
        raise ValueError("install_step needs an install spec or an action")
    return (
        "        env:\n"
        f"          LLAMAPIN_INSTALL: {json.dumps(check_install(install))}\n"
        '        run: python -m pip install "${LLAMAPIN_INSTALL}"'
    )


SETUP_NODE = "actions/setup-node@49933ea5288caeca8642d1e84afbd3f7d6820020 # v4.4.0"
SETUP_BUN = "oven-sh/setup-bun@0c5077e51419868618aeaa5fe8019c62421857d6 # v2.2.0"
NODE_TOOLS = ("node", "npm", "npx", "pnpm", "yarn", "corepack")


def runtime_step(command: str | None) -> str:
    """The step that sets up the runtime a delegated ``ensure.command`` starts with (bun, or
    node and its package managers), indented for the template; empty for anything else."""
    return "".join(_runtime_parts(command))


def runtime_steps(commands: list[str | None]) -> str:
    """The steps several targets' ``ensure.command`` need, each one once."""
    return "".join(dict.fromkeys(part for c in commands for part in _runtime_parts(c)))


def _runtime_parts(command: str | None) -> list[str]:
    words = (command or "").split()
    tool = words[0].rsplit("/", 1)[-1] if words else ""
    if tool in ("bun", "bunx"):
        return [
            f"\n      - name: Set up Bun (ensure.command runs bun)\n        uses: {SETUP_BUN}\n"
        ]
    if tool not in NODE_TOOLS:
        return []
    parts = [
        "\n      - name: Set up Node.js (ensure.command runs node)\n"
        f"        uses: {SETUP_NODE}\n"
        "        with:\n"
        '          node-version: "lts/*"\n'
    ]
    if tool in ("pnpm", "yarn"):
        parts.append(f"\n      - name: Enable {tool} (corepack)\n        run: corepack enable\n")
    return parts


def render(
    name: str,
    platform: str,
    install: str | None,
    default_branch: str,
    action: str | None = None,
    repository: str | None = None,
    cache_dir: str = "~/.cache/llamapin",
    ensure_command: str | None = None,
    *,
    runner: str | None = None,
    target: str | None = None,
) -> str:
    """A workflow from its template. The install spec reaches the workflow only as a quoted
    ``env:`` (or action input) value, and every value is checked first. ``target`` (a
    config's target name) goes onto every llamapin command as ``--target``; ``runner``
    replaces the platform's usual runner."""
    return _substitute(
        name,
        install,
        default_branch,
        action,
        repository,
        cache_dir,
        RUNNER=_plain(runner, _RUNNER_LABEL, "runner") if runner else runner_for(platform),
        RUNTIME_STEP=runtime_step(ensure_command),
        TARGET_ARG=f" --target {_plain(target, _TARGET_NAME, 'target')}" if target else "",
        DEFAULTS=_bump_defaults(target, platform) if target else "",
    )


def _substitute(
    name: str,
    install: str | None,
    default_branch: str,
    action: str | None,
    repository: str | None,
    cache_dir: str,
    **values: str,
) -> str:
    template = Template(files("llamapin").joinpath(f"templates/{name}.yml").read_text())
    guard = (
        f"github.repository == '{check_repository(repository)}'"
        if repository is not None
        else "github.event.repository.fork != true"
    )
    return template.safe_substitute(
        VERSION=__version__,
        INSTALL_STEP=install_step(install, action),
        DEFAULT_BRANCH=check_branch(default_branch),
        REPO_GUARD=guard,
        CACHE_PATH=cache_path(cache_dir),
        **values,
    )


def _bump_defaults(target: str, platform: str) -> str:
    """The bump workflow's lines for a config with targets: which one it gates, and bash as
    every step's shell (whatever the runner's default)."""
    plain = _plain(platform, _RUNNER_LABEL, "platform")
    named = target if plain == target else f"{target} ({plain})"
    return (
        "\n# The config declares targets: the bump pins every target, and installs and gates\n"
        f"# the candidate for {named} on that target's runner.\n"
        "defaults:\n  run:\n    shell: bash\n"
    )


# A target's name and runner as written into a workflow: nothing YAML, a shell or an
# expression reads as code (the config checks both on load; this checks them again).
_TARGET_NAME = re.compile(rf"^{TARGET_NAME}\Z")
_RUNNER_LABEL = re.compile(rf"^{RUNNER_LABEL}\Z")


def _plain(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise ConfigError(
            f"{what} {value[:80]!r} cannot be written into a workflow",
            "it holds characters other than letters, digits, '.', '_' and '-'",
            f"Fix the {what} in the config's [targets] table",
        )
    return value


def bump_target(cfg: Config) -> str:
    """The target the bump workflow installs and gates candidates for (it pins them all):
    a gated one before an ungated one, linux-x64 (the cheapest runner, where upstream's
    builds are tested most) before another Linux, Linux before other systems, then by name."""
    targets = cfg.shared.targets
    if not any(t.gated for t in targets.values()):
        raise ConfigError(
            "no target is gated",
            "the bump workflow gates each candidate on a gated target, and no target in the "
            "config is (a Windows target never is: llamapin does not run on Windows hosts yet)",
            "Set gated = true on a Linux or macOS target whose runner should gate bumps "
            "(e.g. linux-x64)",
        )

    def rank(name: str) -> tuple[bool, bool, bool, str]:
        platform = targets[name].platform
        return (not targets[name].gated, platform != "linux-x64", "linux" not in platform, name)

    return min(targets, key=rank)


def matrix_entries(cfg: Config) -> list[dict[str, str | bool]]:
    """One gate job per target: its name, runner, whether it is gated and whether it
    declares a library list to compare (drift)."""
    out: list[dict[str, str | bool]] = []
    for view in cfg.shared.views():
        name = view.target_name
        runner = _plain(cfg.shared.targets[name].ci_runner(), _RUNNER_LABEL, "runner")
        _plain(name, _TARGET_NAME, "target")
        drift = view.bundle.frameworks_file is not None
        out.append({"target": name, "runner": runner, "gated": view.gated, "drift": drift})
    return out


def _matrix_yaml(entries: list[dict[str, str | bool]]) -> str:
    lines = []
    for entry in entries:
        for i, (key, value) in enumerate(entry.items()):
            lead = "          - " if i == 0 else "            "
            lines.append(f"{lead}{key}: {json.dumps(value)}")
    return "\n".join(lines)


def render_all(
    cfg: Config, install: str | None, default_branch: str, action: str | None = None
) -> dict[str, str]:
    """Both workflows for a config: without targets, one gate job on the engine's platform;
    with targets, a gate job per target (a matrix) and one combined check, and a bump
    workflow that gates on one target's runner (``bump_target``)."""
    shared = cfg.shared
    repo, cache = shared.forge.repo, shared.cache_dir
    if not shared.targets:
        platform, command = shared.engine.resolved_platform(), shared.ensure.command
        if not shared.gated:
            raise ConfigError(
                f"cannot write a gate for {platform}",
                "the config's one platform is Windows, and the gate runs the engine, which "
                "llamapin cannot do on Windows hosts yet",
                "Declare [targets.NAME] sections: a gated Linux or macOS target, and the "
                "Windows target (ensure, verify and drift still run for it, on Linux)",
            )
        return {
            GATE_PATH: render(
                "gate", platform, install, default_branch, action, repo, cache, command
            ),
            BUMP_PATH: render(
                "bump", platform, install, default_branch, action, repo, cache, command
            ),
        }
    entries = matrix_entries(shared)
    host = bump_target(shared)
    gate = _substitute(
        "gate-targets",
        install,
        default_branch,
        action,
        repo,
        cache,
        MATRIX=_matrix_yaml(entries),
        RUNTIME_STEP=runtime_steps([v.ensure.command for v in shared.views()]),
    )
    bump = render(
        "bump",
        shared.targets[host].platform,
        install,
        default_branch,
        action,
        repo,
        cache,
        shared.for_target(host).ensure.command,
        runner=shared.targets[host].ci_runner(),
        target=host,
    )
    return {GATE_PATH: gate, BUMP_PATH: bump}


def _no_links(root: Path, rel: str) -> Path:
    """``root / rel``, refused when a directory on the way is a symlink or not a directory,
    or the file itself is something other than a regular file or a symlink."""
    path = root
    parts = Path(rel).parts
    for i, part in enumerate(parts):
        path = path / part
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            break
        last = i == len(parts) - 1
        if stat.S_ISLNK(mode) and not last:
            raise ConfigError(
                f"refusing to write {rel}",
                f"{path.relative_to(root)} is a symlink: the workflow would land outside the "
                "project",
                f"Replace the link {path.relative_to(root)} with a real directory",
            )
        ok = stat.S_ISLNK(mode) or stat.S_ISREG(mode) if last else stat.S_ISDIR(mode)
        if not ok:
            raise ConfigError(
                f"refusing to write {rel}",
                f"{path.relative_to(root)} is neither a " + ("file" if last else "directory"),
                f"Move {path.relative_to(root)} out of the way",
            )
    return root / rel


def plan(root: Path, rendered: dict[str, str]) -> list[Planned]:
    out = []
    for rel, text in rendered.items():
        path = _no_links(root, rel)
        if not os.path.lexists(path):
            status = "write"
        elif not path.is_symlink() and path.read_bytes() == text.encode("utf-8"):
            status = "unchanged"
        else:
            status = "edited"  # a symlink is never taken as ours, whatever it points at
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
        path = _no_links(root, p.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _no_links(root, p.path)  # again, now that the directories exist
        _replace(path, p.text)
        lines.append(f"{'replaced' if p.status == 'edited' else 'wrote'}: {p.path}")
    return lines


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a fresh, uniquely named file beside ``path`` (never an existing
    name) and rename it over ``path``: a symlink there is replaced, its target never opened."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            os.fchmod(handle.fileno(), 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
