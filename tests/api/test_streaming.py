"""What happens when things go wrong mid-flight: a client leaving, a slow model, a backend down."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import openai
import pytest

from core.config import ServeConfig
from tests.helpers.api_server import api_settings, free_port, running_api

LONG = {"messages": [{"role": "user", "content": "Tell me everything."}], "max_tokens": 400, "temperature": 0}


def _metric(api_url: str, name: str, model: str) -> float:
    text = httpx.get(f"{api_url}/metrics").text
    match = re.search(rf'^{name}{{model="{re.escape(model)}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.integration
def test_a_client_leaving_mid_stream_cancels_the_generation(api_root: Path) -> None:
    # its own server with room for a long answer: 1,900 tokens take seconds even for the tiny model,
    # so the client is gone long before the answer could end on its own
    serve = ServeConfig(n_ctx=2048, request_timeout_s=60, start_timeout_s=60)
    model = "tiny:1.0.0"
    long = LONG | {"model": model, "stream": True, "max_tokens": 1900}
    with running_api(api_settings(api_root, serve=serve), preload=[model]) as api_url:
        before = _metric(api_url, "forgeflow_streams_cancelled_total", model)
        with httpx.stream("POST", f"{api_url}/v1/chat/completions", json=long) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
        # the connection is closed now; the server notices and cancels the relay and the upstream stream
        deadline = time.monotonic() + 10
        while _metric(api_url, "forgeflow_streams_cancelled_total", model) <= before:
            assert time.monotonic() < deadline, "the abandoned stream was not cancelled"
            time.sleep(0.05)
        # the model is free again at once: a new request is answered
        reply = httpx.post(
            f"{api_url}/v1/chat/completions", json={**LONG, "model": model, "max_tokens": 2}, timeout=30
        )
        assert reply.status_code == 200


@pytest.mark.integration
def test_an_inference_over_the_timeout_is_504_inference_timeout(api_root: Path) -> None:
    serve = ServeConfig(n_ctx=512, request_timeout_s=0.02, start_timeout_s=60)
    with running_api(api_settings(api_root, serve=serve), preload=["tiny:1.0.0"]) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json=LONG | {"model": "tiny:1.0.0"}, timeout=30)
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "INFERENCE_TIMEOUT"
        streamed = httpx.post(
            f"{url}/v1/chat/completions", json=LONG | {"model": "tiny:1.0.0", "stream": True}, timeout=30
        )
        assert streamed.status_code in (200, 504)  # the first token may beat 20 ms; the whole answer cannot


def test_a_backend_that_is_down_is_503_with_retry_after(api_root: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = api_settings(api_root, ollama_host=dead, serve=ServeConfig(backend="ollama", n_ctx=512))
    with running_api(settings) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="tiny", messages=LONG["messages"], max_tokens=2)
        assert info.value.status_code == 503
        assert int(info.value.response.headers["retry-after"]) > 0
        assert httpx.get(f"{url}/health").json()["status"] == "degraded"
