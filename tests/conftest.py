"""Shared fixtures: real git repositories built in temp dirs, and settings confined to them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import Settings
from tests.gitrepo import commit, git


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a git repo under tmp_path with an initial commit of the given files."""

    def make(
        files: dict[str, str | bytes] | None = None,
        name: str = "repo",
        message: str = "Initial import of the project",
    ) -> Path:
        repo = tmp_path / name
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        if files:
            commit(repo, files, message)
        return repo

    return make


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose workspace and allowed roots are this test's temp dir."""
    return Settings(home=tmp_path / "ws", allowed_roots=[tmp_path])
