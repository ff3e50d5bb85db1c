"""The repo index on real git repositories: what it holds, how it refreshes, what search finds."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from core.config import ExtractConfig
from core.index import IndexUnavailable, RepoIndex, render_context
from tasks.extract.index import build_index
from tests.helpers.gitrepo import commit, git

PROCESSOR = '''"""Data processing for the pipeline."""


class DataProcessor:
    """Cleans raw records and turns them into feature rows."""

    def run(self, rows):
        """Drop empty rows, then normalise the rest."""
        return [normalise(r) for r in rows if r]


def normalise(row):
    """Lower-case every key of a record."""
    return {k.lower(): v for k, v in row.items()}
'''
README = """# Demo

A demo project.

## Install

Run `pip install demo` to install it.
"""
CFG = ExtractConfig()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "demo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit(path, {"demo/processing.py": PROCESSOR, "README.md": README}, "Add the data processor and README")
    commit(path, {"demo/util.py": "def helper():\n    return 1\n"}, "Add a helper for the tests")
    return path


def build(repo: Path, target: Path, cache: Path, **kw: object) -> object:
    return build_index(repo, target, CFG, cache, display="demo", **kw)  # type: ignore[arg-type]


def test_the_index_holds_symbols_sections_modules_and_commits(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "idx" / "index.sqlite"
    report = build(repo, target, tmp_path / "cache")

    assert report.mode == "built"
    assert report.files == 3 and report.changed_files == 3
    with RepoIndex(target) as idx:
        assert idx.commit == git(repo, "rev-parse", "HEAD")
        kinds = idx.status().by_kind
    assert kinds["class"] == 1 and kinds["method"] == 1 and kinds["function"] == 2
    assert kinds["section"] == 2 and kinds["module"] == 3 and kinds["commit"] == 2


def test_a_symbol_named_in_the_question_is_the_first_hit_with_its_lines(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "index.sqlite"
    build(repo, target, tmp_path / "cache")
    with RepoIndex(target) as idx:
        hits = idx.search("What does the DataProcessor class do?", 5)
        locate = idx.search("Where is normalise defined?", 5)
        docs = idx.search("how to pip install it", 5)

    first = hits[0]
    assert (first.entry.kind, first.entry.qualname, first.entry.path) == (
        "class",
        "DataProcessor",
        "demo/processing.py",
    )
    assert (first.entry.start_line, first.entry.end_line) == (4, 9) and first.exact
    assert (locate[0].entry.name, locate[0].entry.start_line, locate[0].entry.end_line) == (
        "normalise",
        12,
        14,
    )
    assert any(h.entry.kind == "section" and h.entry.name == "Install" for h in docs)


def test_a_one_file_commit_reparses_one_file_and_moves_the_lines(repo: Path, tmp_path: Path) -> None:
    target, cache = tmp_path / "index.sqlite", tmp_path / "cache"
    build(repo, target, cache)
    moved = PROCESSOR.replace(
        '"""Data processing for the pipeline."""\n', '"""Data processing."""\n\nLIMIT = 10\n\n'
    )
    head = commit(repo, {"demo/processing.py": moved}, "Add a limit above the processor")

    report = build(repo, target, cache)

    assert (report.mode, report.changed_files, report.parsed_files, report.removed_files) == (
        "refreshed",
        1,
        1,
        0,
    )
    with RepoIndex(target) as idx:
        assert idx.commit == head
        hit = idx.search("Where is normalise defined?", 1)[0]
        commits = idx.search("Add a limit above the processor", 3)
    assert (hit.entry.start_line, hit.entry.end_line) == (15, 17)
    assert any(h.entry.kind == "commit" and h.entry.qualname == head for h in commits)


def test_an_index_at_head_is_left_alone_and_a_deleted_file_leaves_it(repo: Path, tmp_path: Path) -> None:
    target, cache = tmp_path / "index.sqlite", tmp_path / "cache"
    build(repo, target, cache)
    assert build(repo, target, cache).mode == "current"

    git(repo, "rm", "-q", "demo/util.py")
    git(repo, "commit", "-q", "-m", "Remove the helper again")
    report = build(repo, target, cache)

    assert (report.removed_files, report.files) == (1, 2)
    with RepoIndex(target) as idx:
        assert not [
            h for h in idx.search("helper", 5) if h.entry.kind != "commit" and h.entry.path == "demo/util.py"
        ]


def test_parsed_files_come_from_the_per_blob_cache_on_a_full_rebuild(repo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build(repo, tmp_path / "a.sqlite", cache)
    report = build(repo, tmp_path / "b.sqlite", cache, full=True)
    assert (report.changed_files, report.parsed_files) == (3, 0)


def test_a_reader_never_sees_a_half_built_index(repo: Path, tmp_path: Path) -> None:
    target, cache = tmp_path / "index.sqlite", tmp_path / "cache"
    build(repo, target, cache)
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            with RepoIndex(target) as idx:
                seen.append(idx.commit)
                assert idx.search("DataProcessor", 1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(5):
            commit(repo, {"demo/util.py": f"def helper():\n    return {i}\n"}, f"Change the helper to {i}")
            build(repo, target, cache)
    finally:
        stop.set()
        reader.join()
    assert seen and not list(tmp_path.glob(".index.sqlite.*"))  # no temp file left behind


def test_a_missing_or_corrupt_index_is_said_plainly(tmp_path: Path) -> None:
    with pytest.raises(IndexUnavailable, match="no index yet"):
        RepoIndex(tmp_path / "none.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(IndexUnavailable, match="unreadable"):
        RepoIndex(bad)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).executescript(
        "CREATE TABLE meta (key TEXT, value TEXT); INSERT INTO meta VALUES ('format', '0');"
    )
    with pytest.raises(IndexUnavailable, match="another forgeflow version"):
        RepoIndex(other)


def test_the_context_shows_each_chunk_with_its_path_and_lines_within_the_budget(
    repo: Path, tmp_path: Path
) -> None:
    target = tmp_path / "index.sqlite"
    build(repo, target, tmp_path / "cache")
    with RepoIndex(target) as idx:
        hits = idx.search("What does the DataProcessor class do?", 5)
        text, shown = render_context(hits, idx.commit, 4000)
        small, few = render_context(hits, idx.commit, 700)

    # a definition is headed in the words of a locate answer: a small model copies it
    assert "[1] `DataProcessor` is defined in `demo/processing.py` at line 4 (class, to line 9)" in text
    assert "demo/processing.py:1-" in text  # the module: headed by its locator
    assert "class DataProcessor:" in text and shown == len(hits)
    assert len(small) <= 700 and 1 <= few < shown


def test_the_example_question_names_a_documented_definition_of_the_repo(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "index.sqlite"
    build(repo, target, tmp_path / "cache")
    with RepoIndex(target) as idx:
        question = idx.example_question()
    assert question in (
        "Where is `DataProcessor` defined?",
        "Where is `normalise` defined?",
    )
