"""One real API server for the module's tests: llama.cpp serving the tiny GGUF, MiniLM embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.helpers.api_server import api_settings, running_api, tiny_workspace


@pytest.fixture(scope="session")
def api_root(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Path:
    """A workspace whose registry holds the tiny GGUF as tiny 1.0.0 and 1.1.0 (champion → 1.1.0)."""
    return tiny_workspace(tmp_path_factory.mktemp("api"), tiny_gguf)


@pytest.fixture(scope="session")
def api_url(api_root: Path) -> Iterator[str]:
    with running_api(api_settings(api_root)) as url:
        yield url


@pytest.fixture
def client(api_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api_url}/v1", api_key="unused", max_retries=0, timeout=60)
