"""Small JSON memos in the cache for answers derived from content-addressed bytes.

Each answer is keyed by the sha256 of the bytes it was read from (a model, a source
archive): for a given hash it never changes, so it is read once and looked up after.
A memo that is missing, damaged or cannot be written only costs a re-read.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Memo:
    path: Path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, sha256: str) -> Any:
        """The remembered answer, or None (callers check its shape)."""
        return self.load().get(sha256)

    def put(self, sha256: str, value: Any, keep: Callable[[str], bool] | None = None) -> None:
        """Add one answer (written whole, then renamed into place); with ``keep``, the
        other answers whose key it refuses are dropped on the way."""
        old = self.load()
        if keep is not None:
            old = {key: answer for key, answer in old.items() if keep(key)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=".memo-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({**old, sha256: value}, out, indent=1, sort_keys=True)
            os.replace(name, self.path)
        except OSError:
            return
