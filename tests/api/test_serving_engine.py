"""llama-server behind the API, over real HTTP with the OpenAI SDK: batching, restarts, slots, saturation."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from core.config import ServeConfig
from tests.helpers.api_server import api_settings, running_api

pytestmark = pytest.mark.integration  # a llama-server process (see tests/helpers/tiers.py)

USER = [{"role": "user", "content": "Explain what a function is."}]
MODEL = "tiny:1.0.0"


def _series(url: str, name: str, model: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf'^{name}{{model="{re.escape(model)}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


def _llama_servers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "llama-server"]


def _server_of(model: str, slots: int = 8) -> psutil.Process:
    """The llama-server of `model` with that many slots (the session's shared API may run one too)."""
    (server,) = [
        p
        for p in _llama_servers()
        if model in (argv := p.cmdline()) and argv[argv.index("--parallel") + 1] == str(slots)
    ]
    return server


@pytest.fixture(scope="module")
def eight_slots(api_root: Path) -> Iterator[str]:
    """An API whose llama-server has 8 slots, the tiny model preloaded."""
    serve = ServeConfig(n_ctx=512, parallel=8, n_threads=2, request_timeout_s=60, start_timeout_s=60)
    with running_api(api_settings(api_root, serve=serve), preload=[MODEL]) as url:
        yield url


def test_eight_concurrent_sdk_streams_overlap_and_count_as_their_twins(eight_slots: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{eight_slots}/v1", api_key="x", max_retries=0, timeout=120)
    prompts = [[{"role": "user", "content": f"Explain idea number {i}."}] for i in range(8)]

    async def stream(messages: list[dict[str, str]]) -> tuple[str, int, float, float]:
        started = time.monotonic()
        parts, completion = [], 0
        chunks = await client.chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=48,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in chunks:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                completion = chunk.usage.completion_tokens
        return "".join(parts), completion, started, time.monotonic()

    async def main() -> list[tuple[str, int, float, float]]:
        await stream(USER)  # warm
        return await asyncio.gather(*(stream(p) for p in prompts))

    started = time.monotonic()
    results = asyncio.run(main())
    wall = time.monotonic() - started
    assert wall < 0.6 * sum(end - begin for *_, begin, end in results)  # decoded together, not in turn
    sync = openai.OpenAI(base_url=f"{eight_slots}/v1", api_key="x", max_retries=0, timeout=120)
    for (text, completion, _, _), messages in zip(results, prompts, strict=True):
        twin = sync.chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=48,
            temperature=0,
        )
        assert twin.usage is not None and completion == twin.usage.completion_tokens == 48
        assert text == twin.choices[0].message.content


def test_a_killed_llama_server_is_restarted_by_the_next_request(eight_slots: str) -> None:
    client = openai.OpenAI(base_url=f"{eight_slots}/v1", api_key="x", max_retries=0, timeout=120)
    client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)  # type: ignore[arg-type]
    server = _server_of(MODEL)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=10)
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=3)  # type: ignore[arg-type]
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert _server_of(MODEL).pid != server.pid


def test_a_client_leaving_mid_stream_frees_its_slot(eight_slots: str) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 400, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{eight_slots}/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert _series(eight_slots, "forgeflow_llamacpp_busy_slots", MODEL) == 1
    deadline = time.monotonic() + 5
    while _series(eight_slots, "forgeflow_llamacpp_busy_slots", MODEL) != 0:
        assert time.monotonic() < deadline, "the slot stayed busy after the client left"
        time.sleep(0.05)
    assert _series(eight_slots, "forgeflow_llamacpp_slots", MODEL) == 8
    assert (_series(eight_slots, "forgeflow_llamacpp_tokens_predicted_total", MODEL) or 0) > 0


def test_a_saturated_model_answers_503_with_retry_after(api_root: Path) -> None:
    serve = ServeConfig(n_ctx=2048, parallel=1, max_queue=0, n_threads=2, start_timeout_s=60)
    with running_api(api_settings(api_root, serve=serve), preload=[MODEL]) as url:
        # greedy: the random tiny model never picks its end token, so 1800 tokens hold the slot for seconds
        body = {"model": MODEL, "messages": USER, "max_tokens": 1800, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()  # kept: a dropped line iterator closes the connection
            assert next(lines).startswith("data: ")  # the one slot is busy
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=30)
            with pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)  # type: ignore[arg-type]
        assert refused.value.status_code == 503
        assert int(refused.value.response.headers["retry-after"]) >= 1
        assert "slots are busy" in refused.value.message
        # the slot is free once the stream is gone: the next request is served
        deadline = time.monotonic() + 5
        while True:
            try:
                reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)  # type: ignore[arg-type]
                break
            except openai.APIStatusError as exc:
                assert exc.status_code == 503 and time.monotonic() < deadline
                time.sleep(0.05)
        assert reply.usage is not None and reply.usage.completion_tokens == 2
