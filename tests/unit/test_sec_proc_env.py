"""No secret reaches a child process, and no child outlives its owner.

The children here are real ELF programs compiled with gcc: one writes its whole environment
to a file, one double-forks a grandchild that calls setsid (and can scrub its environment).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from llamapin import lifetime, procenv
from llamapin.config import Config, load_config
from llamapin.engine.ensure import probe_version
from llamapin.errors import BundleError, ConfigError, EngineError
from llamapin.lifetime import entry_spans
from llamapin.procenv import child_env, is_secret_name
from llamapin.server import Server, ServerSpec
from llamapin.upstream.bump import git
from tests.conftest import compile_so

needs_gcc = pytest.mark.skipif(
    shutil.which("gcc") is None, reason="gcc is needed to build a test ELF"
)
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only /proc checks")

SECRETS = {
    "GITHUB_TOKEN": "ghs_secret_github_token_value",
    "LLAMAPIN_BUMP_TOKEN": "secret_bump_token_value",
    "FOO_SECRET": "secret_foo_value",
    "AWS_SECRET_ACCESS_KEY": "secret_aws_value",
    "ACTIONS_RUNTIME_TOKEN": "secret_actions_runtime_value",
    "ACTIONS_ID_TOKEN_REQUEST_URL": "https://secret.invalid/oidc",
    "MY_PASSWORD": "secret_password_value",
    "ssh_private_thing": "secret_lowercase_value",
    "GH_PAT": "secret_configured_token_value",  # not secret-looking: secret because configured
    "HTTPS_PROXY": "http://user:secret_proxy_password@proxy.invalid:3128",
    "LD_PRELOAD": "/nonexistent/secret_preload.so",
}

ENVDUMP = r"""
#include <stdio.h>
#include <string.h>
extern char **environ;
int main(int argc, char **argv) {
    FILE *f = fopen(OUT, "w");
    for (char **e = environ; *e; e++) fprintf(f, "%s\n", *e);
    fclose(f);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) printf("version: 10068 (571d0d5)\n");
    return 0;
}
"""

DAEMON = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>
static void write_pid(void) {
    FILE *f = fopen(OUT ".tmp", "w");
    fprintf(f, "%d\n", getpid());
    fclose(f);
    rename(OUT ".tmp", OUT);
}
int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == 's') {  /* the grandchild again, with no environment */
        write_pid();
        sleep(600);
        return 0;
    }
    pid_t child = fork();
    if (child == 0) {
        if (fork() == 0) {
            setsid();
            if (SCRUB) {
                char *args[] = {"daemon", "scrubbed", NULL};
                char *envp[] = {NULL};
                execve("/proc/self/exe", args, envp);
            }
            write_pid();
            sleep(600);
            _exit(0);
        }
        _exit(0);
    }
    waitpid(child, NULL, 0);
    for (int i = 0; i < 100; i++) {  /* until the grandchild has written its pid */
        FILE *f = fopen(OUT, "r");
        if (f) { fclose(f); break; }
        usleep(20000);
    }
    if (KILLPARENT) kill(getppid(), KILLPARENT);
    if (STAY) sleep(600);
    return 0;
}
"""


def build(tmp: Path, name: str, source: str, **defines: str | int) -> Path:
    defines.setdefault("KILLPARENT", 0)
    flags = tuple(f"-D{k}={v}" for k, v in defines.items())
    return compile_so(tmp, name, source, exe=True, rpath=None, extra=flags)


def c_string(path: Path) -> str:
    return '"' + str(path) + '"'


def dumped(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


def assert_clean(env: dict[str, str]) -> None:
    leaked = sorted(k for k in SECRETS if k in env)
    assert not leaked, f"secrets reached the child: {leaked}"
    text = "\n".join(f"{k}={v}" for k, v in env.items())
    for value in SECRETS.values():
        assert value not in text
    assert env.get("PATH", "").endswith(os.environ["PATH"])  # git puts its own dir first
    assert env.get("HOME") == os.environ["HOME"]


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(procenv, "_secret_names", set(procenv._secret_names))
    procenv.register_secrets("GH_PAT")


@pytest.fixture
def envdump(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "env.txt"
    return build(tmp_path, "llama-server", ENVDUMP, OUT=c_string(out)), out


# --- the pure function ---------------------------------------------------------------------------


def test_secret_names() -> None:
    for name in SECRETS:
        if name not in ("GH_PAT", "HTTPS_PROXY", "LD_PRELOAD"):
            assert is_secret_name(name), name
    assert is_secret_name("gh_pat", ["GH_PAT"])
    assert not is_secret_name("PATH") and not is_secret_name("GH_PAT")


def test_child_env_kinds() -> None:
    environ = {
        "PATH": "/bin",
        "LC_ALL": "C",
        "CC": "gcc",
        "CCACHE_DIR": "/c",
        "CMAKE_GENERATOR": "Ninja",
        "LD_LIBRARY_PATH": "/opt/lib",
        "LD_PRELOAD": "/x.so",
        "GGML_VK_VISIBLE_DEVICES": "0",
        "LLAMA_ARG_THREADS": "99",
        "SSH_AUTH_SOCK": "/s",
        "GIT_DIR": "/elsewhere/.git",
        "GIT_CONFIG_PARAMETERS": "'http.extraheader'='AUTHORIZATION: basic x'",
        "GIT_TRACE": "1",
        "HTTPS_PROXY": "http://proxy:3128",
        "http_proxy": "http://u:p@proxy:3128",
        "GITHUB_TOKEN": "t",
        "MY_VAR": "v",
    }
    engine = child_env(environ, "engine")
    assert engine == {"PATH": "/bin", "LC_ALL": "C", "GGML_VK_VISIBLE_DEVICES": "0"}
    build_env = child_env(environ, "build", values={"CCACHE_BASEDIR": "/b"})
    assert set(build_env) == {
        "PATH", "LC_ALL", "CC", "CCACHE_DIR", "CMAKE_GENERATOR", "LD_LIBRARY_PATH", "CCACHE_BASEDIR"
    }  # fmt: skip
    assert set(child_env(environ, "git")) == {
        "PATH", "LC_ALL", "SSH_AUTH_SOCK", "GIT_TRACE", "HTTPS_PROXY"
    }  # fmt: skip
    assert set(child_env(environ, "tool")) == {"PATH", "LC_ALL"}
    delegate = child_env(environ, "delegate", extra=["MY_VAR", "GITHUB_TOKEN"])
    assert "MY_VAR" in delegate and "GITHUB_TOKEN" not in delegate and "CC" in delegate
    assert "MY_VAR" not in child_env(environ, "delegate", extra=["MY_VAR"], secrets=["my_var"])


NAMES = st.text(
    alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789"),
    min_size=1,
    max_size=12,
)
WORDS = st.sampled_from(["TOKEN", "secret", "Key", "PASSWORD", "passwd", "Credential", "PRIVATE"])


@given(
    st.dictionaries(NAMES, st.text(max_size=20), max_size=20),
    st.lists(st.tuples(NAMES, WORDS, NAMES), max_size=6),
    st.sampled_from(["engine", "tool", "build", "git", "delegate"]),
)
def test_no_secret_name_ever_passes(
    plain: dict[str, str], secret_parts: list[tuple[str, str, str]], kind: procenv.Kind
) -> None:
    secret = {f"{a}{w}{b}": "s" for a, w, b in secret_parts}
    secret.update({f"ACTIONS_{a}": "s" for a, _, _ in secret_parts})
    environ = {**plain, **secret, "PATH": "/bin"}
    # even when every name is asked for explicitly
    env = child_env(environ, kind, extra=list(environ))
    assert not set(env) & set(secret)
    assert env["PATH"] == "/bin"
    assert set(env) <= set(environ)


def test_ensure_env_secret_names_are_refused(tmp_path: Path) -> None:
    def config(**ensure: object) -> Path:
        (tmp_path / "llamapin.toml").write_text(
            tomli_w.dumps({"ensure": ensure, "upstream": {"token_env": "GH_PAT"}})
        )
        return tmp_path

    for name in ("GITHUB_TOKEN", "my_api_key", "ACTIONS_CACHE_URL", "GH_PAT", "DB_PASSWORD"):
        with pytest.raises(ConfigError, match=f"{name} looks like a secret"):
            load_config(config(env=[name]))
    with pytest.raises(ConfigError, match="is not an environment variable name"):
        load_config(config(env=["A=B"]))
    assert load_config(config(env=["MY_VAR"])).ensure.env == ["MY_VAR"]


# --- real children --------------------------------------------------------------------------------


@needs_gcc
def test_engine_gets_no_secret(
    tmp_path: Path, envdump: tuple[Path, Path], secrets_set: None
) -> None:
    binary, out = envdump
    spec = ServerSpec(
        binary=binary, model=tmp_path / "m.gguf", log=tmp_path / "log.txt", health_timeout_s=20
    )
    with pytest.raises(EngineError, match="exited with code 0"):
        Server(spec).start()
    env = dumped(out)
    assert_clean(env)
    assert env[lifetime.OWNER_VAR].count(".") == 1
    assert "LD_PRELOAD" not in env


@needs_gcc
def test_version_probe_gets_no_secret(envdump: tuple[Path, Path], secrets_set: None) -> None:
    binary, out = envdump
    assert "version: 10068" in probe_version(binary)
    assert_clean(dumped(out))


@needs_gcc
def test_delegated_ensure_gets_only_what_it_names(
    tmp_path: Path,
    envdump: tuple[Path, Path],
    secrets_set: None,
    run_cli: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    binary, out = envdump
    monkeypatch.setenv("MY_VAR", "mine")
    root = tmp_path / "app"
    root.mkdir()
    (root / "llamapin.toml").write_text(
        tomli_w.dumps(
            {
                "ensure": {"command": str(binary), "output": "engine", "env": ["MY_VAR"]},
                "upstream": {"token_env": "GH_PAT"},
                "cache_dir": str(tmp_path / "cache"),
            }
        )
    )
    (root / "engine").mkdir()
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 2 and "Traceback" not in res.err  # the script made no llama-server
    env = dumped(out)
    assert env["MY_VAR"] == "mine"
    assert env["LLAMAPIN_BUILD"].startswith("b")
    assert_clean(env)


@needs_gcc
def test_git_gets_no_secret(tmp_path: Path, secrets_set: None) -> None:
    out = tmp_path / "git-env.txt"
    git(["init", "--quiet", str(tmp_path / "repo")], tmp_path)
    git(["-c", f"alias.dump=!env > {out}", "dump"], tmp_path / "repo")
    env = dumped(out)
    assert_clean(env)


@needs_gcc
@linux
def test_taken_secret_is_gone_even_from_proc(tmp_path: Path) -> None:
    """A child (the same user) cannot read the token from llamapin's /proc environ."""
    out = tmp_path / "peek.txt"
    peek = build(
        tmp_path,
        "peek",
        r"""
        #include <stdio.h>
        #include <unistd.h>
        int main(void) {
            char path[64]; snprintf(path, sizeof path, "/proc/%d/environ", getppid());
            FILE *in = fopen(path, "r"), *out = fopen(OUT, "w");
            if (!in) { fputs("DENIED", out); fclose(out); return 0; }
            int c; while ((c = fgetc(in)) != EOF) fputc(c ? c : '\n', out);
            fclose(out); return 0;
        }
        """,
        OUT=c_string(out),
    )
    script = textwrap.dedent(
        f"""
        import os, subprocess
        from llamapin.procenv import env_for, take_secret
        before = {str(peek)!r}
        assert take_secret("GITHUB_TOKEN") == "ghs_in_memory_only"
        assert take_secret("GITHUB_TOKEN") == "ghs_in_memory_only"  # read once, answered again
        assert "GITHUB_TOKEN" not in os.environ
        subprocess.run([before], env=env_for("tool"), check=True)
        """
    )
    env = {**os.environ, "GITHUB_TOKEN": "ghs_in_memory_only"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    text = out.read_text()
    assert "ghs_in_memory_only" not in text
    # and the check can fail: without take_secret the same child reads it
    script_bad = f"import subprocess; subprocess.run([{str(peek)!r}], check=True)"
    subprocess.run([sys.executable, "-c", script_bad], env=env, check=True, timeout=300)
    assert "ghs_in_memory_only" in out.read_text()


# --- no child outlives its owner ----------------------------------------------------------------


def wait_gone(pid: int, deadline_s: float = 30.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def read_pid(path: Path, deadline_s: float = 30.0) -> int:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return int(text)
        time.sleep(0.05)
    raise AssertionError("the grandchild never wrote its pid")


@needs_gcc
@pytest.mark.parametrize("stay", [0, 1], ids=["engine-exits", "engine-hangs"])
def test_double_forked_grandchild_dies_with_the_server(tmp_path: Path, stay: int) -> None:
    pidfile = tmp_path / "grandchild.pid"
    binary = build(tmp_path, "llama-server", DAEMON, OUT=c_string(pidfile), SCRUB=0, STAY=stay)
    spec = ServerSpec(
        binary=binary, model=tmp_path / "m.gguf", log=tmp_path / "log.txt", health_timeout_s=3
    )
    server = Server(spec)
    with pytest.raises(EngineError):
        server.start()
    grandchild = read_pid(pidfile)
    assert wait_gone(grandchild), "the setsid grandchild outlived Server.stop()"


@needs_gcc
@linux
def test_scrubbed_orphan_dies_when_the_cli_exits(tmp_path: Path) -> None:
    """A grandchild that left the group and the session and dropped its environment (so no
    tag finds it) is reparented to llamapin (a subreaper) and killed when llamapin exits."""
    pidfile = tmp_path / "grandchild.pid"
    daemon = build(tmp_path, "daemon", DAEMON, OUT=c_string(pidfile), SCRUB=1, STAY=0)
    root = tmp_path / "app"
    (root / "engine").mkdir(parents=True)
    (root / "llamapin.toml").write_text(
        tomli_w.dumps({"ensure": {"command": str(daemon), "output": "engine"}})
    )
    proc = subprocess.run(
        [sys.executable, "-m", "llamapin", "--root", str(root), "ensure"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    grandchild = read_pid(pidfile)
    assert wait_gone(grandchild), "the scrubbed orphan outlived llamapin"


@needs_gcc
def test_timed_out_command_takes_its_whole_group(tmp_path: Path) -> None:
    """subprocess.run kills only the child on a timeout; the grandchild kept running."""
    pidfile = tmp_path / "grandchild.pid"
    daemon = build(tmp_path, "daemon", DAEMON, OUT=c_string(pidfile), SCRUB=0, STAY=1)
    cfg = Config.model_validate(
        {
            "cache_dir": str(tmp_path / "cache"),
            "ensure": {"command": str(daemon), "output": "o", "timeout_s": 2},
        }
    )
    (tmp_path / "o").mkdir()
    from llamapin.engine.sources import run_command
    from llamapin.fetch import Cache
    from llamapin.pin import Pin

    with pytest.raises(BundleError, match="timed out"):
        run_command(cfg.ensure, Cache(tmp_path / "cache"), tmp_path, Pin("b1", "0" * 40, {}), print)
    assert wait_gone(read_pid(pidfile))


def test_a_second_signal_does_not_interrupt_the_clean_up() -> None:
    handler = lifetime.make_handler()
    with pytest.raises(lifetime.Terminated):
        handler(signal.SIGTERM, None)
    handler(signal.SIGTERM, None)  # no exception: the first one's clean-up goes on


def test_terminated_lines() -> None:
    term = lifetime.Terminated(signal.SIGTERM)
    assert term.exit_code == 143 and term.line().startswith("error: stopped (SIGTERM)")
    assert "interrupted by the user" in lifetime.Terminated(signal.SIGINT).line()


def test_entry_spans() -> None:
    block = b"XGITHUB_TOKEN=a\0GITHUB_TOKEN=b\0PATH=/bin\0GITHUB_TOKEN=c"
    assert entry_spans(block, "GITHUB_TOKEN") == [(16, 30), (41, 55)]
    assert entry_spans(b"GITHUB_TOKEN=\0", "GITHUB_TOKEN") == [(0, 13)]
    assert entry_spans(block, "HOME") == []


def test_kill_all_outlasts_an_ignored_sigterm() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(120)"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stdout.readline()
        assert [p.pid for p in lifetime.kill_all([psutil.Process(proc.pid)], 0.5)] == [proc.pid]
        assert wait_gone(proc.pid)


def test_guarded_off_the_main_thread_installs_no_handler() -> None:
    seen: list[object] = []

    def body() -> None:
        with lifetime.guarded():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(timeout=60)
    assert seen == [signal.getsignal(signal.SIGTERM)]


@needs_gcc
@linux
@pytest.mark.timeout(300)  # once seen to hang (SIGINT, after the integration tests): fail instead
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_stops_the_cli_and_every_child(tmp_path: Path, run_cli: Any, sig: int) -> None:
    """The delegated command signals llamapin (in this process), then hangs; llamapin exits
    with one line and 128 + the signal, and the command's setsid grandchild is gone."""
    pidfile = tmp_path / "grandchild.pid"
    daemon = build(
        tmp_path, "daemon", DAEMON, OUT=c_string(pidfile), SCRUB=0, STAY=1, KILLPARENT=int(sig)
    )
    root = tmp_path / "app"
    (root / "engine").mkdir(parents=True)
    (root / "llamapin.toml").write_text(
        tomli_w.dumps({"ensure": {"command": str(daemon), "output": "engine"}})
    )
    before = signal.getsignal(sig)
    res = run_cli("--root", str(root), "ensure")
    assert res.code == 128 + sig, res.err
    name = signal.Signals(sig).name
    assert res.err.strip().splitlines()[-1].startswith("error: ")
    assert f"({name}); engines and other child processes were stopped" in res.err
    assert "Traceback" not in res.err
    assert wait_gone(read_pid(pidfile))
    assert signal.getsignal(sig) == before  # the handlers were put back


def test_build_commands_get_the_build_allow_list(tmp_path: Path, secrets_set: None) -> None:
    from llamapin.engine.sources import _run_build
    from llamapin.errors import BuildError

    log = tmp_path / "build.log"
    _run_build(["sh", "-c", "env"], log, "configure", tmp_path)
    env = dumped_lines(log.read_text().splitlines()[1:])
    assert env["CCACHE_BASEDIR"] == str(tmp_path)
    assert_clean(env)
    with pytest.raises(BuildError, match="compile failed: sh exited 3"):
        _run_build(["sh", "-c", "exit 3"], log, "compile", tmp_path)


def dumped_lines(lines: list[str]) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition("=") for line in lines)}


def test_stopping_a_server_that_never_started_is_harmless(tmp_path: Path) -> None:
    spec = ServerSpec(binary=tmp_path / "none", model=tmp_path / "m", log=tmp_path / "l")
    Server(spec).stop()
    assert not (tmp_path / "l").exists()


@needs_gcc
def test_version_probe_that_hangs_takes_its_group_down(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    daemon = build(tmp_path, "llama-server", DAEMON, OUT=c_string(pidfile), SCRUB=0, STAY=1)
    with pytest.raises(EngineError, match="--version did not run: TimeoutExpired"):
        probe_version(daemon, timeout=2)
    assert wait_gone(read_pid(pidfile))
    with pytest.raises(EngineError, match="did not run: FileNotFoundError"):
        probe_version(tmp_path / "missing")
