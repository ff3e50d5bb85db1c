"""Per-file extraction results keyed by content (git blob SHA), so unchanged files are never re-parsed.

A value is a JSON object plus, under "sigs", an optional numpy array stored as a raw blob beside it
(MinHash signatures: JSON would make them ten times larger and slower to load). A second table keeps
token counts by key (tokenizer and conversation), so re-extraction counts only new samples.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tasks.extract.dedup import NUM_PERM


class ResultCache:
    """A small SQLite key-value store of compressed JSON values."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value BLOB NOT NULL, sigs BLOB)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS token_counts (key TEXT PRIMARY KEY, tokens INTEGER NOT NULL)"
        )

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """Cached values for those keys that are present."""
        found: dict[str, Any] = {}
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, value, sigs FROM results WHERE key IN ({marks})"
            for key, blob, sigs in self._db.execute(query, chunk):
                value = orjson.loads(zlib.decompress(blob))
                if sigs is not None:
                    value["sigs"] = np.frombuffer(sigs, dtype=np.uint32).reshape(-1, NUM_PERM)
                found[key] = value
        return found

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Store values (one transaction)."""
        rows = []
        for key, value in items:
            sigs = value.get("sigs")
            plain = {k: v for k, v in value.items() if k != "sigs"}
            blob = zlib.compress(orjson.dumps(plain), 1)
            rows.append(
                (key, blob, None if sigs is None else np.ascontiguousarray(sigs, np.uint32).tobytes())
            )
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO results (key, value, sigs) VALUES (?, ?, ?)", rows)

    def get_counts(self, keys: list[str]) -> dict[str, int]:
        """Stored token counts for those keys that are present."""
        found: dict[str, int] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            query = f"SELECT key, tokens FROM token_counts WHERE key IN ({','.join('?' * len(chunk))})"
            found.update(self._db.execute(query, chunk))
        return found

    def put_counts(self, items: Iterable[tuple[str, int]]) -> None:
        """Store token counts (one transaction)."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO token_counts (key, tokens) VALUES (?, ?)", items)

    def close(self) -> None:
        self._db.close()
