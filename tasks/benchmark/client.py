"""One measured request against an OpenAI-compatible streaming endpoint, and the load around many.

Each request streams a chat (`stream_options.include_usage`), so the server's own token count comes
in the last chunk; TTFT is taken at the first chunk that carries content, every later content
chunk adds one inter-chunk gap. The whole request is bounded by a timeout: a request past it is
a timeout, a refused or failed one an error, and each request is one record whatever happens.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from core.bench.records import RequestRecord

Chat = list[dict[str, str]]


@dataclass(frozen=True)
class Target:
    """Where requests go: the chat completions URL, the model name sent, and what a body adds."""

    url: str  # .../v1/chat/completions
    model: str
    ignore_eos: bool = True  # llama.cpp: generate exactly max_tokens (other servers ignore the key)
    api_key: str | None = None


@dataclass(frozen=True)
class Load:
    """One level: `requests` requests at most `concurrency` at a time, optionally Poisson arrivals."""

    scenario: str
    chats: Sequence[Chat]
    max_tokens: int
    temperature: float
    requests: int
    concurrency: int
    rate: float | None = None
    seed: int = 0


def body_for(target: Target, chat: Chat, max_tokens: int, temperature: float) -> dict[str, Any]:
    """The request body: greedy when temperature is 0 (sent as 0, never replaced), usage asked for."""
    body: dict[str, Any] = {
        "model": target.model,
        "messages": chat,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if target.ignore_eos:
        body["ignore_eos"] = True
    return body


async def measure(
    client: httpx.AsyncClient,
    target: Target,
    body: dict[str, Any],
    *,
    scenario: str,
    concurrency: int,
    index: int,
    origin: float,
    timeout_s: float,
) -> RequestRecord:
    """Send one streamed chat and record it; never raises for what the server or network does."""
    record = RequestRecord(
        model=target.model, scenario=scenario, concurrency=concurrency, index=index, ok=False
    )
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    sent = time.perf_counter()
    record.sent_at = sent - origin
    last: float | None = None
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", target.url, json=body, headers=headers) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode("utf-8", "replace")
                    record.error = f"HTTP {resp.status_code}: {_message(text)}"
                    return record
                done = False
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = orjson.loads(data)
                    if isinstance(chunk, dict) and chunk.get("error"):
                        record.error = f"stream error: {_message(orjson.dumps(chunk).decode())}"
                        return record
                    now = time.perf_counter()
                    if _content(chunk):
                        if record.ttft_s is None:
                            record.ttft_s = now - sent
                        elif last is not None:
                            record.itl_s.append(now - last)
                        last = now
                        record.chunks += 1
                    usage = chunk.get("usage")
                    if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                        record.output_tokens = int(usage["completion_tokens"])
                        record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    timings = chunk.get("timings")
                    if isinstance(timings, dict):
                        record.server_timings = timings
                if not done:
                    record.error = "the stream ended before [DONE]: the server failed mid-generation"
                    return record
    except TimeoutError:
        record.timed_out = True
        record.error = f"no complete reply within {timeout_s:g} s"
        return record
    except httpx.HTTPError as exc:
        record.error = f"{type(exc).__name__}: {str(exc)[:200] or 'connection failed'}"
        return record
    except orjson.JSONDecodeError:
        record.error = "the server sent a chunk that is not JSON"
        return record
    record.e2e_s = time.perf_counter() - sent
    record.ok = record.ttft_s is not None or record.output_tokens == 0
    if not record.ok:
        record.error = "the stream carried no content"
    return record


def _content(chunk: Any) -> bool:
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not choices:
        return False
    delta = choices[0].get("delta") or {}
    return bool(delta.get("content"))


def _message(text: str) -> str:
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return " ".join(text.split())[:200] or "no body"
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return " ".join(str(message or text).split())[:200]


async def run_load(
    client: httpx.AsyncClient,
    target: Target,
    load: Load,
    *,
    timeout_s: float,
    deadline: float,
    on_done: Any = None,
) -> tuple[list[RequestRecord], float, bool]:
    """Send one level's requests; (records, wall seconds, cut short by the deadline).

    Closed loop: `concurrency` workers each send the next request as soon as theirs ends. With a
    rate, arrivals are Poisson (exponential gaps, seeded) and at most `concurrency` are in flight.
    No request starts after `deadline` (a `time.monotonic()` value); each in flight is bounded by
    `timeout_s`, so a level never hangs on a dead server.
    """
    origin = time.perf_counter()
    records: list[RequestRecord] = []
    slots = asyncio.Semaphore(load.concurrency)
    gaps = random.Random(load.seed)
    cut = False

    async def one(i: int) -> None:
        try:
            chat = load.chats[i % len(load.chats)]
            body = body_for(target, chat, load.max_tokens, load.temperature)
            rec = await measure(
                client,
                target,
                body,
                scenario=load.scenario,
                concurrency=load.concurrency,
                index=i,
                origin=origin,
                timeout_s=timeout_s,
            )
            records.append(rec)
            if on_done is not None:
                on_done(rec)
        finally:
            slots.release()

    tasks: list[asyncio.Task[None]] = []
    for i in range(load.requests):
        if load.rate is not None and i:
            await asyncio.sleep(gaps.expovariate(load.rate))
        await slots.acquire()
        if time.monotonic() >= deadline:
            slots.release()
            cut = True
            break
        tasks.append(asyncio.create_task(one(i)))
    if tasks:
        await asyncio.gather(*tasks)
    records.sort(key=lambda r: r.index)
    return records, time.perf_counter() - origin, cut
