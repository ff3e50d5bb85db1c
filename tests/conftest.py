"""Shared fixtures: real git repositories built in temp dirs, and settings confined to them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import Settings
from tests.helpers.gitrepo import commit, git
from tests.helpers.tinymodel import make_tiny_base


def pytest_configure(config: pytest.Config) -> None:
    """A test session never touches the user's own workspace (the per-user data directory)."""
    os.environ.setdefault("FORGEFLOW_HOME", tempfile.mkdtemp(prefix="forgeflow-test-home-"))


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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One forgeflow cache for the session: the SmolLM2 tokenizer is converted from its GGUF once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A random 2-layer llama with the SmolLM2 tokenizer (tests/export overrides it with a reciting one)."""
    return make_tiny_base(tmp_path_factory.mktemp("tiny") / "base", cache_dir)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """The tiny llama as an f16 GGUF (with the SmolLM2 chat template): what the serving tests serve."""
    from tasks.export.convert import convert_to_gguf

    target = tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf"
    convert_to_gguf(tiny_base, target, name="tiny")
    return target
