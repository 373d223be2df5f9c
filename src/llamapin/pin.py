"""The pin (which upstream build an app ships), its lock file, and locators.

A pin is provenance: build id, full commit, and per platform the asset name,
size and sha256. ``llamapin.lock`` is the file llamapin owns; locators read and
rewrite the same values where a project keeps copies of them (a TypeScript
constant, a JSON field, a TOML key), changing only the value's own bytes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import tomli_w

from llamapin.errors import ConfigError, LocatorError
from llamapin.paths import file_name, inside_root, read_text
from llamapin.saferegex import Pattern, compile_user

BUILD_RE = re.compile(r"^b([0-9]+)\Z")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


def build_number(build: str) -> int:
    """``b10068`` -> 10068. Upstream orders builds by this number, not by text."""
    match = BUILD_RE.match(build)
    if not match:
        raise ConfigError(
            f"bad build id {build!r}",
            "a llama.cpp build id is 'b' followed by its number, e.g. b10068",
            "Fix the build id in llamapin.lock or on the command line",
        )
    return int(match.group(1))


@dataclass(frozen=True)
class Asset:
    """One downloadable file of a release, pinned by name, size and sha256."""

    name: str
    sha256: str
    size: int | None = None
    url: str | None = None


@dataclass(frozen=True)
class Pin:
    build: str
    commit: str
    assets: dict[str, Asset] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return build_number(self.build)

    def asset(self, key: str) -> Asset:
        try:
            return self.assets[key]
        except KeyError:
            have = ", ".join(sorted(self.assets)) or "none"
            raise ConfigError(
                f"pin {self.build} has no asset {key!r}",
                f"the lock file lists assets for: {have}",
                f"Run 'llamapin lock {self.build}' to resolve every asset this config "
                f"needs from upstream (or add [pin.assets.{key}] with name and sha256 "
                "to llamapin.lock by hand)",
            ) from None

    def get(self, spec: str) -> str:
        """Read one pin value by field name: build, build_number, commit, assets.KEY.FIELD."""
        if spec == "build":
            return self.build
        if spec == "build_number":
            return str(self.number)
        if spec == "commit":
            return self.commit
        parts = spec.split(".")
        if (
            len(parts) == 3
            and parts[0] == "assets"
            and parts[2] in ("name", "sha256", "size", "url")
        ):
            value = getattr(self.asset(parts[1]), parts[2])
            return "" if value is None else str(value)
        raise ConfigError(
            f"unknown pin field {spec!r}",
            "a locator field is build, build_number, commit or assets.<key>.<name|sha256|size|url>",
            "Fix the locator's 'field' in the config",
        )


def validate(pin: Pin) -> Pin:
    build_number(pin.build)
    if not COMMIT_RE.match(pin.commit):
        raise ConfigError(
            f"bad commit {pin.commit!r} in pin {pin.build}",
            "the pin needs the full 40-character lowercase commit sha (provenance)",
            "Put the full commit of the build in llamapin.lock",
        )
    for key, asset in pin.assets.items():
        file_name(asset.name, f"asset {key!r} of pin {pin.build}: name")
        if not SHA256_RE.match(asset.sha256):
            raise ConfigError(
                f"bad sha256 for asset {key!r} of pin {pin.build}",
                f"{asset.sha256!r} is not 64 lowercase hex digits",
                "Put the asset's sha256 in llamapin.lock",
            )
    return pin


def pin_from_dict(data: dict[str, Any], origin: str) -> Pin:
    try:
        raw = data["pin"]
        assets = {
            key: Asset(
                name=str(value["name"]),
                sha256=str(value["sha256"]),
                size=int(value["size"]) if "size" in value else None,
                url=str(value["url"]) if "url" in value else None,
            )
            for key, value in dict(raw.get("assets", {})).items()
        }
        pin = Pin(build=str(raw["build"]), commit=str(raw["commit"]), assets=assets)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"cannot read the pin in {origin}",
            f"missing or malformed value ({type(exc).__name__}: {exc})",
            "The lock needs [pin] build, commit and [pin.assets.<key>] name, sha256",
        ) from None
    return validate(pin)


def pin_to_dict(pin: Pin) -> dict[str, Any]:
    assets: dict[str, Any] = {}
    for key, asset in sorted(pin.assets.items()):
        entry: dict[str, Any] = {"name": asset.name, "sha256": asset.sha256}
        if asset.size is not None:
            entry["size"] = asset.size
        if asset.url is not None:
            entry["url"] = asset.url
        assets[key] = entry
    return {"pin": {"build": pin.build, "commit": pin.commit, "assets": assets}}


LOCK_HEADER = (
    "# llamapin.lock: the engine build this project ships (pin = provenance, sha256 = integrity).\n"
    "# Written by llamapin; review changes to it like code.\n"
)


def read_lock(path: Path) -> Pin:
    try:
        data = tomllib.loads(read_text(path, "lock file"))
    except FileNotFoundError:
        raise ConfigError(
            f"no lock file at {path}",
            "llamapin needs a pin to know which engine build to install",
            "Run 'llamapin init' or write llamapin.lock",
        ) from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ConfigError(
            f"cannot parse {path}", str(exc), "Fix the TOML syntax in the lock file"
        ) from None
    return pin_from_dict(data, str(path))


def lock_text(pin: Pin) -> str:
    return LOCK_HEADER + tomli_w.dumps(pin_to_dict(validate(pin)))


def write_lock(path: Path, pin: Pin) -> None:
    text = lock_text(pin)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(name, 0o644)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


# --- locators -------------------------------------------------------------------------------

LocatorKind = Literal["regex", "json", "toml"]


@dataclass(frozen=True)
class Locator:
    """Where one pin value lives inside a project file.

    ``regex``: a pattern whose group ``value`` (or group 1) is the value.
    ``json`` / ``toml``: a dotted key path to a string value.
    """

    file: str
    field: str
    kind: LocatorKind
    expr: str

    def describe(self) -> str:
        return f"{self.file} ({self.kind} {self.expr!r} -> {self.field})"


def locator_pattern(loc: Locator) -> Pattern:
    """A regex locator's pattern (RE2: linear time), checked for a capture group."""
    pattern = compile_user(
        loc.expr, f"locator {loc.describe()}", multiline=True, error=LocatorError
    )
    if pattern.groups < 1:
        raise LocatorError(
            f"locator {loc.describe()} has no capture group",
            "the value to read and rewrite must be captured",
            "Wrap the value in (?P<value>...)",
        )
    return pattern


def _span_regex(text: str, loc: Locator) -> tuple[int, int]:
    pattern = locator_pattern(loc)
    matches = list(pattern.finditer(text))
    if len(matches) != 1:
        raise LocatorError(
            f"locator {loc.describe()} matched {len(matches)} times",
            "a locator must match exactly once so the rewrite is unambiguous",
            "Make the pattern more specific (anchor it on the constant's name)"
            if matches
            else "Check that the file still holds the value, and fix the pattern to match it",
        )
    return matches[0].span("value" if "value" in pattern.groupindex else 1)


def _walk(data: Any, path: str, loc: Locator) -> Any:
    node = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise LocatorError(
                f"locator {loc.describe()} found nothing",
                f"key {part!r} is not in the file",
                "Fix the key path, or add the value to the file",
            )
        node = node[part]
    if not isinstance(node, str):
        raise LocatorError(
            f"locator {loc.describe()} points at a {type(node).__name__}",
            "only string values can hold a pin value",
            "Point the locator at a string",
        )
    return node


def _span_structured(text: str, loc: Locator) -> tuple[int, int]:
    try:
        data = json.loads(text) if loc.kind == "json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise LocatorError(
            f"cannot parse {loc.file} for locator {loc.describe()}",
            str(exc),
            "Fix the file's syntax",
        ) from None
    value = _walk(data, loc.expr, loc)
    last_key = loc.expr.split(".")[-1]
    quoted = re.escape(json.dumps(value))
    key = rf'(?:"{re.escape(last_key)}"|{re.escape(last_key)})'
    sep = r"\s*:\s*" if loc.kind == "json" else r"\s*=\s*"
    spans = [m.span(1) for m in re.finditer(rf"{key}{sep}({quoted})", text)]
    if len(spans) != 1:
        raise LocatorError(
            f"locator {loc.describe()} is ambiguous",
            f"the value {value!r} under key {last_key!r} appears {len(spans)} times in the text",
            "Use a regex locator anchored on something unique",
        )
    start, end = spans[0]
    return start + 1, end - 1  # inside the quotes


def _span(text: str, loc: Locator) -> tuple[int, int]:
    if loc.kind == "regex":
        return _span_regex(text, loc)
    return _span_structured(text, loc)


def locator_path(root: Path, loc: Locator) -> Path:
    """The locator's file, resolved; refused unless it lies inside the project root."""
    return inside_root(root, loc.file, "locator file", LocatorError)


def _read_text(root: Path, loc: Locator) -> str:
    try:
        return read_text(locator_path(root, loc), "locator file", LocatorError)
    except FileNotFoundError:
        raise LocatorError(
            f"locator file {loc.file} does not exist",
            f"locator {loc.describe()} points at a missing file",
            "Fix the locator's file path (relative to the project root)",
        ) from None


def read_locator(root: Path, loc: Locator) -> str:
    text = _read_text(root, loc)
    start, end = _span(text, loc)
    return text[start:end]


def rewrite_text(text: str, loc: Locator, value: str) -> str:
    """Return ``text`` with only the located value's bytes replaced."""
    start, end = _span(text, loc)
    return text[:start] + value + text[end:]


def write_locators(root: Path, locators: list[Locator], pin: Pin) -> list[str]:
    """Rewrite every locator to the pin's values. All files are checked before any is written."""
    pending: dict[Path, str] = {}
    original: dict[Path, str] = {}
    for loc in locators:
        path = locator_path(root, loc)
        if path not in original:
            original[path] = _read_text(root, loc)
        pending[path] = rewrite_text(pending.get(path, original[path]), loc, pin.get(loc.field))
    changed = []
    for path, text in pending.items():
        if original[path] != text:
            path.write_text(text, encoding="utf-8")
            changed.append(str(path.relative_to(root.resolve())))
    return changed


def check_locators(root: Path, locators: list[Locator], pin: Pin) -> list[str]:
    """Each locator whose value differs from the pin, as 'file: field is X, lock says Y'."""
    drift = []
    for loc in locators:
        found = read_locator(root, loc)
        want = pin.get(loc.field)
        if found != want:
            drift.append(f"{loc.file}: {loc.field} is {found!r}, llamapin.lock says {want!r}")
    return drift


def with_asset(pin: Pin, key: str, asset: Asset) -> Pin:
    return replace(pin, assets={**pin.assets, key: asset})
