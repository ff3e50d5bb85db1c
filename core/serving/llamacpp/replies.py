"""What a llama_cpp.server answers: its errors as ours, its SSE streams as chunks, and their usage.

llama_cpp.server ignores `stream_options`, so a stream's usage is computed here. Completion tokens:
llama-cpp-python sends one chunk per generated token, except that a character split over several
tokens arrives as one chunk, and tokens of a matched stop sequence are never sent. So an ASCII chunk
is exactly one token; other chunks are counted by tokenizing them; a `length` finish is exact by
arithmetic (llama.cpp stopped at max_tokens, or where the context was full).
"""

from __future__ import annotations

import asyncio
import builtins
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from core.paths import scrub_paths
from core.serving.base import BackendError, Json, UpstreamRejected

_VALIDATION = re.compile(r"'loc': \(([^)]*)\), 'msg': '([^']*)'")  # pydantic's error repr


@dataclass(slots=True)
class StreamTally:
    """Generated tokens seen in a stream, and how it finished."""

    ascii_tokens: int = 0
    other_texts: list[str] = field(default_factory=list)  # to be tokenized
    finish_reason: str | None = None
    last: Json = field(default_factory=dict)

    def add(self, chunk: Json) -> None:
        self.last = chunk
        for choice in chunk.get("choices") or []:
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text is None:  # the role-only first chunk of a chat stream
                continue
            if text.isascii():
                self.ascii_tokens += 1
            else:
                self.other_texts.append(text)

    def length_limited(self, prompt_tokens: int, max_tokens: int | None, n_ctx: int) -> int | None:
        """The exact completion tokens of a stream that finished by `length`; None for other finishes."""
        if self.finish_reason != "length":
            return None
        room = n_ctx - prompt_tokens  # llama-cpp-python caps max_tokens to what the context holds
        return room if not max_tokens or max_tokens <= 0 else min(max_tokens, room)


def usage_chunk(last: Json, kind: str, key: str, prompt_tokens: int, completion_tokens: int) -> Json:
    """The final chunk of a stream with `stream_options.include_usage`: empty choices, and usage."""
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    created = last.get("created", 0)
    return {
        "id": last.get("id", ""),
        "object": kind,
        "created": created,
        "model": key,
        "choices": [],
        "usage": usage,
    }


async def sse_chunks(key: str, resp: httpx.Response, idle_timeout_s: float) -> AsyncIterator[Json]:
    """The `data: {...}` events of a streamed response, until `data: [DONE]`.

    Raises:
        TimeoutError: no line arrived for `idle_timeout_s`.
        BackendError: the stream ended without [DONE] (the server failed mid-generation).
    """
    lines = resp.aiter_lines()
    while True:
        async with asyncio.timeout(idle_timeout_s):
            line = await anext(lines, None)
        if line is None:
            raise BackendError(f"{key}: the llama.cpp stream ended early: see the model's server log")
        if not line.startswith("data:"):
            continue  # blank separators and ": ping" comments
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield orjson.loads(data)


def raise_for_status(key: str, resp: httpx.Response) -> None:
    """4xx → UpstreamRejected, 5xx → BackendError, each with upstream's reason (read the body first).

    llama_cpp.server answers a body that fails its validation with a 500 carrying pydantic's
    message: that is the client's mistake, so it becomes UpstreamRejected naming the fields.
    """
    if resp.status_code < 400:
        return
    message = scrub_paths(_upstream_message(resp))
    invalid = [f"{_field(loc)}: {msg}" for loc, msg in _VALIDATION.findall(message)]
    if resp.status_code < 500 or (invalid and "validation error" in message):
        raise UpstreamRejected(f"{key}: {'; '.join(invalid) or _one_line(message)}")
    raise BackendError(f"{key}: llama.cpp failed the request ({resp.status_code}): {_one_line(message)}")


def _field(loc: str) -> str:
    parts = [p.strip(" '\"") for p in loc.split(",")]
    return ".".join(p for p in parts[1:] if p) or "body"  # loc starts with 'body'


def _one_line(message: str) -> str:
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return first[:500]


def _upstream_message(resp: httpx.Response) -> str:
    """The reason in an error body: OpenAI's `error.message`, or FastAPI's validation `detail`."""
    try:
        body: Any = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return resp.text[:300] or f"HTTP {resp.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, builtins.list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail)
    return str(detail or error or body)[:300]
