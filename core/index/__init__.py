"""The repo index: what a project's repository holds, searchable, at a known commit.

`store` is the file (schema, atomic publish, hybrid search), `context` how retrieved entries are
shown to a model. Building it needs extraction's parsers, so the builder is `tasks/extract/index.py`.
"""

from __future__ import annotations

from pathlib import Path

from core.index.context import render_context
from core.index.store import (
    INDEX_FILE,
    Entry,
    FileEntries,
    Hit,
    IndexStatus,
    IndexUnavailable,
    RepoIndex,
    write_index,
)
from core.settings import Settings

__all__ = [
    "INDEX_FILE",
    "Entry",
    "FileEntries",
    "Hit",
    "IndexStatus",
    "IndexUnavailable",
    "RepoIndex",
    "index_path",
    "render_context",
    "write_index",
]


def index_path(settings: Settings, project_id: str) -> Path:
    """Where a project's index lives in the workspace."""
    return settings.projects_dir / project_id / INDEX_FILE
