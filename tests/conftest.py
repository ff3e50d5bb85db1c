"""Shared fixtures: real git repositories built in temp dirs, and settings confined to them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import Settings
from tests.helpers import modelcache, tiers
from tests.helpers.datasets import EVAL
from tests.helpers.gitrepo import commit, git
from tests.helpers.recital import CONVERSATIONS
from tests.helpers.tinymodel import make_tiny_base, recite


def pytest_configure(config: pytest.Config) -> None:
    """A test session never touches the user's own workspace; a unit run guards its tier."""
    os.environ["FORGEFLOW_HOME"] = tempfile.mkdtemp(prefix="forgeflow-test-home-")  # one per process
    if tiers.unit_run():
        tiers.guard_unit_tier()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tiers.mark_folders(items)


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
    """One forgeflow cache for the session; SmolLM2's tokenizer in it comes from the test-model cache."""
    return modelcache.seed_cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_base(cache_dir: Path) -> Path:
    """A random 2-layer llama with the SmolLM2 tokenizer (tests/helpers/modelcache.py keeps it)."""

    def build(folder: Path) -> None:
        make_tiny_base(folder / "base", cache_dir)

    return modelcache.cached("tiny-base", build) / "base"


@pytest.fixture(scope="session")
def reciting_base(cache_dir: Path) -> Path:
    """The tiny llama trained to recite the parity prompts' answers and the jobs' eval answers.

    One model for every test that needs clear top-1 winners (parity, the promote gate):
    `recital.CONVERSATIONS` (the export tests' eval split) and `datasets.EVAL` (the flow and job
    tests' eval split).
    """

    def build(folder: Path) -> None:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model: OpenMP threads only spin-wait on each other
        try:
            recite(make_tiny_base(folder / "base", cache_dir), CONVERSATIONS + EVAL)
        finally:
            torch.set_num_threads(threads)

    return modelcache.cached("reciting-base", build) / "base"


@pytest.fixture(scope="session")
def tiny_gguf(tiny_base: Path) -> Path:
    """The tiny llama as an f16 GGUF (with the SmolLM2 chat template): what the serving tests serve."""
    from tasks.export.convert import convert_to_gguf

    def build(folder: Path) -> None:
        convert_to_gguf(tiny_base, folder / "tiny-f16.gguf", name="tiny")

    return modelcache.cached("tiny-gguf", build) / "tiny-f16.gguf"
