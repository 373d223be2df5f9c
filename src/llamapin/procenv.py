"""What a child process may see of llamapin's environment.

Every process llamapin starts (the engines, ``--version``, cmake and the compilers, git,
patchelf and the other tools, the project's delegated ensure command) gets an environment
built here from an allow-list for its kind, never ``os.environ`` as a whole. Whatever the
allow-list or the config asks for, a secret is never passed: the token variables the config
names, anything named like ``*TOKEN*``, ``*SECRET*``, ``*KEY*``, ``*PASSWORD*`` (and
``*PASSWD*``, ``*CREDENTIAL*``, ``*PRIVATE*``), anything under ``ACTIONS_``, and any value
that is a URL carrying a user name and password (a proxy with credentials).

Not passed to engines or tools, on purpose:

* ``LD_LIBRARY_PATH``, ``LD_PRELOAD`` and the ``DYLD_*`` family: the bundle is relinked to
  find its libraries next to itself; a host library path would let the gate pass a bundle
  that is missing a library (or load foreign code into it). Builds get ``LD_LIBRARY_PATH``
  (a compiler installed outside the system paths may need it); they never get ``LD_PRELOAD``.
* ``GIT_DIR``, ``GIT_WORK_TREE``, ``GIT_INDEX_FILE`` and ``GIT_CONFIG_PARAMETERS`` /
  ``GIT_CONFIG_COUNT``: run from a hook they would point bump's git at another repository,
  and ``GIT_CONFIG_*`` can carry an ``http.extraheader`` with a token.
* ``LLAMA_ARG_*``: they would change how the engine runs behind the gate's back (the gate
  sets ``LLAMA_ARG_FIT`` itself, from ``gate.fit``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Literal

Kind = Literal["engine", "tool", "build", "git", "delegate"]

SECRET_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE")
SECRET_PREFIXES = ("ACTIONS_",)
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
USERINFO_RE = re.compile(r"://[^/\s@]*:[^/\s@]*@")

BASE = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "TERM",
        # Windows needs these to start anything at all
        "SYSTEMROOT",
        "SYSTEMDRIVE",
        "WINDIR",
        "COMSPEC",
        "PATHEXT",
    }
)
BASE_PREFIXES = ("LC_",)

ENGINE = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "VK_ICD_FILENAMES",
        "VK_DRIVER_FILES",
        "VK_ADD_DRIVER_FILES",
        "XDG_RUNTIME_DIR",
    }
)
ENGINE_PREFIXES = ("GGML_",)

BUILD = frozenset(
    {
        "CC",
        "CXX",
        "CFLAGS",
        "CXXFLAGS",
        "CPPFLAGS",
        "LDFLAGS",
        "AR",
        "RANLIB",
        "NM",
        "LD_LIBRARY_PATH",
        "LIBRARY_PATH",
        "CPATH",
        "C_INCLUDE_PATH",
        "CPLUS_INCLUDE_PATH",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_LIBDIR",
        "MAKEFLAGS",
        "MFLAGS",
        "CUDACXX",
        "CUDA_PATH",
        "CUDA_HOME",
        "VULKAN_SDK",
        "MACOSX_DEPLOYMENT_TARGET",
        "SDKROOT",
        "DEVELOPER_DIR",
        "SOURCE_DATE_EPOCH",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
    }
)
BUILD_PREFIXES = ("CCACHE_", "CMAKE_", "NINJA_")

NETWORK = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    }
)

GIT = frozenset(
    {
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "SSH_AUTH_SOCK",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSH_VARIANT",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_COMMITTER_DATE",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_TERMINAL_PROMPT",
        "GIT_EXEC_PATH",
        "GIT_TEMPLATE_DIR",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "XDG_CONFIG_HOME",
    }
)
GIT_PREFIXES = ("GIT_TRACE",)

ALLOWED: dict[Kind, tuple[frozenset[str], tuple[str, ...]]] = {
    "engine": (BASE | ENGINE, BASE_PREFIXES + ENGINE_PREFIXES),
    "tool": (BASE, BASE_PREFIXES),
    "build": (BASE | BUILD, BASE_PREFIXES + BUILD_PREFIXES),
    "git": (BASE | GIT | NETWORK, BASE_PREFIXES + GIT_PREFIXES),
    "delegate": (BASE | BUILD | NETWORK, BASE_PREFIXES + BUILD_PREFIXES),
}

_secret_names: set[str] = set()
"""Variables this process was told hold secrets (the configured token variables)."""
_taken: dict[str, str | None] = {}


def is_secret_name(name: str, secrets: Iterable[str] = ()) -> bool:
    """True for a variable that must never reach a child process."""
    upper = name.upper()
    return (
        any(word in upper for word in SECRET_WORDS)
        or upper.startswith(SECRET_PREFIXES)
        or upper in {s.upper() for s in secrets}
    )


def child_env(
    environ: Mapping[str, str],
    kind: Kind,
    *,
    extra: Iterable[str] = (),
    secrets: Iterable[str] = (),
    values: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a child of ``kind``: the allow-listed variables of ``environ``,
    plus the names in ``extra``, minus every secret, plus ``values`` (set by llamapin)."""
    names, prefixes = ALLOWED[kind]
    wanted = names | set(extra)
    secret = set(secrets)
    env = {
        name: value
        for name, value in environ.items()
        if (name in wanted or name.startswith(prefixes))
        and not is_secret_name(name, secret)
        and not USERINFO_RE.search(value)
    }
    env.update(values or {})
    return env


def register_secrets(*names: str) -> None:
    """Remember variable names that hold secrets (the config's token variables)."""
    _secret_names.update(n for n in names if n)


def env_for(
    kind: Kind, *, extra: Iterable[str] = (), values: Mapping[str, str] | None = None
) -> dict[str, str]:
    """:func:`child_env` of this process's environment and the registered secret names."""
    return child_env(os.environ, kind, extra=extra, secrets=_secret_names, values=values)


def take_secret(name: str) -> str | None:
    """Read a secret from the environment once and remove it, so no child can inherit it
    (later calls for the same name in the same command answer the value read the first
    time, unless the variable was set again).

    On Linux the copy in the environment block the process started with (which
    ``/proc/<llamapin>/environ`` keeps showing after ``unsetenv``) is overwritten, and the
    process becomes non-dumpable: another process of the same user can then neither read
    its ``/proc`` files nor attach to it to read the token from memory.
    """
    register_secrets(name)
    if name not in _taken or name in os.environ:
        _taken[name] = os.environ.pop(name, None) or None
        from llamapin.lifetime import make_undumpable, scrub_initial_environ

        scrub_initial_environ(name)
        make_undumpable()
    return _taken[name]


def forget_secrets() -> None:
    """Start a new command: secrets read by an earlier command in this process are dropped,
    so each command reads the environment as it is now (a new process starts empty)."""
    _taken.clear()


def check_env_names(names: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    """Validate ``ensure.env``: plain variable names, none of them a secret."""
    names = list(names)
    secrets = list(secrets)
    for name in names:
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if is_secret_name(name, secrets):
            raise ValueError(
                f"{name} looks like a secret (a token, key or password): llamapin never passes "
                "one to a child process; remove it and give the command what it needs another way"
            )
    return names
