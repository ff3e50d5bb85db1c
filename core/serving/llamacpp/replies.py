"""What a llama-server answers: its errors as ours, its SSE streams as chunks, its /metrics as numbers.

llama-server's errors are OpenAI-shaped: `{"error": {"code", "message", "type"}}`. A 4xx is the
request's fault and becomes UpstreamRejected (400, with llama.cpp's message); a prompt longer than
a slot's context (`exceed_context_size_error`) says both sizes; a 503 (still loading) is
BackendUnavailable; any other 5xx is the backend failing (502).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from core.paths import scrub_paths
from core.serving.base import BackendError, BackendUnavailable, Json, UpstreamRejected

_SAMPLE = re.compile(r"^llamacpp:([A-Za-z_][A-Za-z0-9_]*) ([-+0-9.eE]+|[-+]?[Ii]nf|NaN)$", re.MULTILINE)


async def sse_chunks(key: str, resp: httpx.Response, idle_timeout_s: float) -> AsyncIterator[Json]:
    """The `data: {...}` events of a streamed response, until `data: [DONE]`.

    Read from the raw body (no text decoding layer: orjson takes bytes) and to its very end, so that
    the kept-alive connection goes back to the pool for the next request.

    Raises:
        TimeoutError: nothing arrived for `idle_timeout_s`.
        BackendError: the stream ended without [DONE] (the server failed mid-generation), or an event
            carried an error.
    """
    raw = resp.aiter_raw()
    pending = b""
    while True:
        async with asyncio.timeout(idle_timeout_s):
            block = await anext(raw, None)
        if block is None:
            raise BackendError(f"{key}: the llama.cpp stream ended early: see the model's server log")
        *lines, pending = (pending + block).split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators and comments
            data = line[5:].strip()
            if data == b"[DONE]":
                async for _ in raw:  # the chunked terminator
                    pass
                return
            chunk = orjson.loads(data)
            if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
                _raise(key, int(chunk["error"].get("code") or 500), chunk["error"])
            yield chunk


def raise_for_status(key: str, resp: httpx.Response) -> None:
    """Raise the error a failed reply stands for (read the body first); a success returns."""
    if resp.status_code < 400:
        return
    try:
        body: Any = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": resp.text[:300] or f"HTTP {resp.status_code}"}
    _raise(key, resp.status_code, error)


def _raise(key: str, status: int, error: dict[str, Any]) -> None:
    message = _one_line(scrub_paths(str(error.get("message") or f"HTTP {status}")))
    if error.get("type") == "exceed_context_size_error":
        n_ctx, n_prompt = error.get("n_ctx"), error.get("n_prompt_tokens")
        if n_ctx and n_prompt:
            message = (
                f"this model's maximum context length is {n_ctx} tokens; the prompt has {n_prompt}: "
                "shorten it"
            )
        raise UpstreamRejected(f"{key}: {message}")
    if status == 503:
        raise BackendUnavailable(f"{key}: {message}", retry_after=1)
    if status < 500:
        raise UpstreamRejected(f"{key}: {message}")
    raise BackendError(f"{key}: llama.cpp failed the request ({status}): {message}")


def parse_metrics(text: str) -> dict[str, float]:
    """llama-server's Prometheus text as {name without the `llamacpp:` prefix: value} (unlabelled)."""
    return {name: float(value) for name, value in _SAMPLE.findall(text)}


def _one_line(message: str) -> str:
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return first[:500]
