"""A repo index: one SQLite file per project, every symbol, doc section, module and recent commit.

The file is only ever replaced whole (`os.replace` of a finished copy), so a reader never sees a
half-built index: a refresh copies the current file, changes the files that changed, and renames.
Lexical search is SQLite's FTS5 (BM25); exact symbol names have their own table and rank first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from core.errors import ForgeflowError

FORMAT = "1"  # bump when the schema or what an entry holds changes: older files are rebuilt
INDEX_FILE = "index.sqlite"
EntryKind = Literal[
    "function",
    "method",
    "class",
    "struct",
    "interface",
    "trait",
    "enum",
    "type",
    "section",
    "module",
    "commit",
]
DEFINITIONS = frozenset({"function", "method", "class", "struct", "interface", "trait", "enum", "type"})
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (path TEXT PRIMARY KEY, blob TEXT NOT NULL, lang TEXT NOT NULL);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, qualname TEXT NOT NULL,
    path TEXT NOT NULL, start_line INTEGER NOT NULL, end_line INTEGER NOT NULL,
    signature TEXT NOT NULL, doc TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX entries_path ON entries (path);
CREATE TABLE names (name TEXT NOT NULL, entry INTEGER NOT NULL);
CREATE INDEX names_name ON names (name);
CREATE VIRTUAL TABLE fts USING fts5 (words, path, doc, body, tokenize = 'porter unicode61');
"""
_BM25_WEIGHTS = (8.0, 4.0, 2.0, 1.0)  # words (names and their parts), path, doc, body
_RRF_K = 60
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_TESTS = re.compile(r"(^|/)(tests?|testing)/|(^|/)test_[^/]*$|_test\.[a-z]+$")
_STOP_WORDS = """a an and are as at be by can class code define defined definition do does file find for from
    function how i in is it its method module of on or repo repository the this to used what where
    which why with you your me show explain tell about"""
_STOP = frozenset(_STOP_WORDS.split())


class IndexUnavailable(ForgeflowError, status=503, code="INDEX_UNAVAILABLE"):
    """The project's index is missing or unreadable: answers go on without sources."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing a question can be about, with where it lives."""

    kind: EntryKind
    name: str
    qualname: str
    path: str
    start_line: int
    end_line: int
    signature: str = ""
    doc: str = ""
    body: str = ""


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved entry and its fused score (higher is better)."""

    entry: Entry
    score: float
    exact: bool

    def source(self, commit: str) -> dict[str, object]:
        """What a reply cites: path, lines, commit, score, and what the entry is."""
        e = self.entry
        return {
            "path": e.path,
            "start_line": e.start_line,
            "end_line": e.end_line,
            "kind": e.kind,
            "name": e.qualname or e.name,
            "commit": commit,
            "score": round(self.score, 4),
        }


@dataclass(frozen=True, slots=True)
class IndexStatus:
    """What an index file reflects."""

    path: Path
    commit: str
    repo: str
    built_at: float
    files: int
    entries: int
    by_kind: dict[str, int]


def words(*texts: str) -> str:
    """Identifiers and their parts (`DataProcessor` → dataprocessor data processor), for FTS5."""
    out: list[str] = []
    for text in texts:
        for ident in _IDENT.findall(text):
            for part in ident.split("."):
                out.append(part.lower())
                pieces = [p.lower() for chunk in part.split("_") for p in _CAMEL.findall(chunk)]
                if len(pieces) > 1:
                    out.extend(pieces)
    return " ".join(out)


class RepoIndex:
    """A read-only view of one index file (open it per question: files are replaced, not changed)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise IndexUnavailable(
                "this project has no index yet: build it with `forgeflow index build --repo ...`"
            )
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            meta = dict(self._db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError:
            with contextlib.suppress(Exception):
                self._db.close()
            raise IndexUnavailable(
                "the project's index is unreadable: rebuild it with `forgeflow index build`"
            ) from None
        if meta.get("format") != FORMAT:
            self._db.close()
            raise IndexUnavailable("the project's index is from another forgeflow version: rebuild it")
        self.path = path
        self.commit = meta.get("commit", "")
        self.repo = meta.get("repo", "")
        self.built_at = float(meta.get("built_at", "0"))

    def __enter__(self) -> RepoIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def status(self) -> IndexStatus:
        kinds = dict(self._db.execute("SELECT kind, count(*) FROM entries GROUP BY kind ORDER BY kind"))
        (files,) = self._db.execute("SELECT count(*) FROM files").fetchone()
        return IndexStatus(
            self.path, self.commit, self.repo, self.built_at, files, sum(kinds.values()), kinds
        )

    def file_blobs(self) -> dict[str, tuple[str, str]]:
        """path → (blob SHA, language) of every indexed file."""
        return {p: (b, lang) for p, b, lang in self._db.execute("SELECT path, blob, lang FROM files")}

    def example_question(self) -> str | None:
        """A real question about this repo: where a documented, uniquely named definition is (the same
        one for the same index content), asked the way the training data asks it."""
        rows = self._db.execute(
            "SELECT e.qualname, e.path FROM entries e WHERE e.kind IN ('function', 'class') "
            "AND e.doc != '' AND substr(e.name, 1, 1) != '_' "
            "AND (SELECT count(*) FROM names n WHERE n.name = lower(e.name)) = 1 "
            "ORDER BY e.path, e.start_line"
        ).fetchall()
        picked = [(q, p) for q, p in rows if not _TESTS.search(p)]
        if not picked:
            return None
        qualname, _ = picked[len(picked) // 2]
        return f"Where is `{qualname}` defined?"

    def at(self, path: str, start_line: int, kinds: frozenset[str]) -> Entry | None:
        """The entry of one of `kinds` that starts at `path:start_line`, if any."""
        for row in self._db.execute(
            "SELECT id, kind, name, qualname, path, start_line, end_line, signature, doc, body "
            "FROM entries WHERE path = ? AND start_line = ?",
            (path, start_line),
        ):
            if row[1] in kinds:
                return _entry(row)
        return None

    def search(self, question: str, k: int = 5) -> list[Hit]:
        """The `k` entries that best match: exact symbol names first, then BM25, fused by rank."""
        try:
            return self._search(question, k)
        except sqlite3.DatabaseError:
            raise IndexUnavailable(
                "the project's index is unreadable: rebuild it with `forgeflow index build`"
            ) from None

    def _search(self, question: str, k: int) -> list[Hit]:
        named, mentioned = self._exact(question)
        scores: dict[int, float] = {}
        for rank, eid in enumerate(named):  # a tier above everything else, in their own order
            scores[eid] = 1.0 + 0.5 * (len(named) - rank) / len(named)
        for ranked in (mentioned[:k], self._bm25(question, limit=max(50, 4 * k))):
            for rank, eid in enumerate(ranked):
                scores[eid] = scores.get(eid, 0.0) + 1.0 / (_RRF_K + 2 * rank)
        best = sorted(scores.items(), key=lambda kv: -kv[1])[:k]
        if not best:
            return []
        rows = {r[0]: r for r in self._rows([eid for eid, _ in best])}
        exact = set(named)
        return [Hit(_entry(rows[eid]), score, eid in exact) for eid, score in best if eid in rows]

    def _exact(self, question: str) -> tuple[list[int], list[int]]:
        """Entries whose name the question writes: (named like code, named as a plain word), each
        best first (definitions before sections, the exact case, code before tests)."""
        first = _IDENT.match(question.strip())
        named: list[tuple[int, int, int]] = []  # (preference, order, id)
        mentioned: list[tuple[int, int, int]] = []
        for order, ident in enumerate(dict.fromkeys(_IDENT.findall(question))):
            if ident.lower() in _STOP:
                continue
            shaped = (
                "_" in ident
                or "." in ident
                or any(c.isupper() for c in ident[1:])
                or f"`{ident}" in question
                or f"{ident}(" in question
                or (ident[0].isupper() and not (first and first.group() == ident))
            )
            for eid, kind, name, path in self._db.execute(
                "SELECT e.id, e.kind, e.name, e.path FROM names n JOIN entries e ON e.id = n.entry "
                "WHERE n.name = ?",
                (ident.lower(),),
            ):
                pref = (
                    (0 if kind in DEFINITIONS else 2)
                    + (0 if name == ident or name.endswith("." + ident) else 1)
                    + (1 if _TESTS.search(path) else 0)
                )
                (named if shaped else mentioned).append((pref, order, eid))
        return [e for _, _, e in sorted(set(named))], [e for _, _, e in sorted(set(mentioned))]

    def _bm25(self, question: str, limit: int) -> list[int]:
        terms = [t for t in dict.fromkeys(words(question).split()) if t not in _STOP and len(t) > 1]
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        weights = ", ".join(str(w) for w in _BM25_WEIGHTS)
        query = f"SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY bm25(fts, {weights}) LIMIT ?"
        return [r[0] for r in self._db.execute(query, (match, limit))]

    def _rows(self, ids: list[int]) -> Iterator[tuple[object, ...]]:
        marks = ",".join("?" * len(ids))
        yield from self._db.execute(
            "SELECT id, kind, name, qualname, path, start_line, end_line, signature, doc, body "
            f"FROM entries WHERE id IN ({marks})",
            ids,
        )


def _entry(row: tuple[object, ...]) -> Entry:
    _, kind, name, qualname, path, start, end, signature, doc, body = row
    return Entry(kind, name, qualname, path, start, end, signature, doc, body)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FileEntries:
    """A file's blob SHA, language and entries, as the builder hands them over."""

    path: str
    blob: str
    lang: str
    entries: list[Entry]


def write_index(
    target: Path,
    *,
    commit: str,
    repo: str,
    files: Iterable[FileEntries],
    removed: Iterable[str] = (),
    commits: list[Entry] | None = None,
    base: Path | None = None,
) -> None:
    """Publish an index at `target`: a copy of `base` (when given) with `files` replaced, `removed`
    dropped and the commit entries set to `commits`; readers see the old file or the new one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if base is not None:
            shutil.copyfile(base, tmp)
        else:
            tmp.unlink()
        db = sqlite3.connect(tmp)
        try:
            db.execute("PRAGMA journal_mode=OFF")  # a private file until the rename: no journal needed
            db.execute("PRAGMA synchronous=OFF")
            if base is None:
                db.executescript(_SCHEMA)
            with db:
                for path in removed:
                    _drop_path(db, path)
                for f in files:
                    _drop_path(db, f.path)
                    db.execute(
                        "INSERT INTO files (path, blob, lang) VALUES (?, ?, ?)", (f.path, f.blob, f.lang)
                    )
                    _insert(db, f.entries)
                if commits is not None:
                    _drop_kind(db, "commit")
                    _insert(db, commits)
                meta = {"format": FORMAT, "commit": commit, "repo": repo, "built_at": f"{time.time():.3f}"}
                db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())
            if base is None:
                db.execute("INSERT INTO fts (fts) VALUES ('optimize')")
                db.commit()
        finally:
            db.close()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _drop_path(db: sqlite3.Connection, path: str) -> None:
    ids = [r[0] for r in db.execute("SELECT id FROM entries WHERE path = ? AND kind != 'commit'", (path,))]
    _drop_ids(db, ids)
    db.execute("DELETE FROM files WHERE path = ?", (path,))


def _drop_kind(db: sqlite3.Connection, kind: str) -> None:
    _drop_ids(db, [r[0] for r in db.execute("SELECT id FROM entries WHERE kind = ?", (kind,))])


def _drop_ids(db: sqlite3.Connection, ids: list[int]) -> None:
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for table, column in (("entries", "id"), ("names", "entry"), ("fts", "rowid")):
            db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)


def _insert(db: sqlite3.Connection, entries: list[Entry]) -> None:
    for e in entries:
        cur = db.execute(
            "INSERT INTO entries (kind, name, qualname, path, start_line, end_line, signature, doc, body) "
            "VALUES (:kind, :name, :qualname, :path, :start_line, :end_line, :signature, :doc, :body)",
            asdict(e),
        )
        eid = cur.lastrowid
        names = {e.name.lower(), e.qualname.lower()} - {""}
        db.executemany("INSERT INTO names (name, entry) VALUES (?, ?)", [(n, eid) for n in names])
        db.execute(
            "INSERT INTO fts (rowid, words, path, doc, body) VALUES (?, ?, ?, ?, ?)",
            (eid, words(e.name, e.qualname, e.signature), words(e.path), e.doc, e.body),
        )
