"""forgeflow with `serve.backend: ollama`: deploy creates the model on (strict, recorded-protocol) Ollama."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from core.config import ServeConfig
from tests.helpers.api_server import api_settings, running_api
from tests.helpers.ollama_server import OllamaServer, running_ollama

USER = [{"role": "user", "content": "Say something about rebase."}]


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaServer]:
    with running_ollama() as server:
        yield server


@pytest.fixture(scope="module")
def ollama_api(api_root: Path, ollama: OllamaServer) -> Iterator[str]:
    settings = api_settings(api_root, ollama_host=ollama.url, serve=ServeConfig(backend="ollama", n_ctx=512))
    with running_api(settings) as url:
        yield url


def test_chat_through_forgeflow_creates_and_uses_the_ollama_model(
    ollama_api: str, ollama: OllamaServer
) -> None:
    client = openai.OpenAI(base_url=f"{ollama_api}/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(model="tiny:1.0.0", messages=USER, max_tokens=5)
    assert "tiny:1.0.0" in ollama.state.models
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert ollama.state.prompts[-1].endswith("<|im_start|>assistant\n")
    chunks = list(
        client.chat.completions.create(
            model="tiny:1.0.0",
            messages=USER,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_health_reports_ollama_available(ollama_api: str) -> None:
    body = httpx.get(f"{ollama_api}/health").json()
    assert body["ollama_available"] is True and body["status"] == "healthy"


def test_the_model_state_is_recorded_with_its_backend(ollama_api: str) -> None:
    httpx.post(f"{ollama_api}/models/tiny/deploy", json={"version": "1.0.0"}, timeout=60)
    body = httpx.get(f"{ollama_api}/models/tiny:1.0.0").json()
    assert (body["state"], body["backend"]) == ("loaded", "ollama")
