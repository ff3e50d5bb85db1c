"""Per-file extraction results keyed by content (git blob SHA), so unchanged files are never re-parsed."""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ResultCache:
    """A small SQLite key-value store of compressed JSON values."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """Cached values for those keys that are present."""
        found: dict[str, Any] = {}
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in self._db.execute(
                f"SELECT key, value FROM results WHERE key IN ({marks})", chunk
            ):
                found[key] = json.loads(zlib.decompress(blob))
        return found

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Store values (one transaction)."""
        rows = [(k, zlib.compress(json.dumps(v, separators=(",", ":")).encode(), 1)) for k, v in items]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()
