"""The inference path shared by /v1 and the seed routes: resolve, deploy, time out, count, stream.

Streams are checked before the response starts: the first chunk is awaited first, so an unknown
model, a down backend or a timeout still get a proper status code. After that, chunks are relayed
as Server-Sent Events as they arrive; a client that goes away cancels the relay, which closes the
upstream stream and so stops the generation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api import grounding
from api.deps import AppState
from api.errors import ApiError, error_body, from_exception
from core.registry import ModelInfo
from core.serving.base import Backend, Json

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def resolve(state: AppState, ref: str | None) -> ModelInfo:
    """The version a request names; without a model, the active one."""
    if ref:
        return await state.hub.resolve(ref)
    active = await asyncio.to_thread(state.registry.active)
    if active is None:
        raise ApiError(400, "model: required (no model is deployed as the active one)", param="model")
    return active


async def ground(
    state: AppState,
    info: ModelInfo,
    switch: bool | None,
    question: str,
    own_text: str,
    max_tokens: int | None,
) -> grounding.Grounding | None:
    """Retrieval for a generation request, or None when it is off (`grounding.enabled`)."""
    if info.task == "text-embedding" or not grounding.enabled(state.settings, info, switch):
        return None
    reserve = grounding.reserve(own_text, max_tokens)
    return await grounding.ground(state.retriever, state.settings, info, question, reserve, state.hub.n_ctx)


async def run(
    state: AppState, info: ModelInfo, route: str, fn: Callable[[Backend], Any]
) -> tuple[Json, float]:
    """One non-streamed call with the request timeout; returns the result and its duration (s)."""
    started = time.perf_counter()
    state.metrics.in_flight.inc()
    try:
        await state.hub.ensure(info)
        async with asyncio.timeout(state.settings.serve.request_timeout_s):  # no task, unlike wait_for
            result: Json = await state.hub.call(info, fn)
    except BaseException as exc:
        _failed(state, info, route, started, exc)
        raise
    finally:
        state.metrics.in_flight.dec()
    elapsed = time.perf_counter() - started
    usage = result.get("usage") or {}
    state.stats.record(
        info.key,
        route,
        seconds=elapsed,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
    return result, elapsed


def _failed(state: AppState, info: ModelInfo, route: str, started: float, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError):
        return
    err = from_exception(exc) if isinstance(exc, Exception) else None
    state.stats.record(
        info.key,
        route,
        seconds=time.perf_counter() - started,
        code=err.code if err else "CANCELLED",
        status=err.status if err else 499,
    )


async def stream(
    state: AppState,
    info: ModelInfo,
    route: str,
    fn: Callable[[Backend], AsyncIterator[Json]],
    *,
    include_usage: bool,
    extra: Json | None = None,
) -> StreamingResponse:
    """An SSE response relaying the backend's chunks, ending with `data: [DONE]`."""
    started = time.perf_counter()
    state.metrics.in_flight.inc()
    try:
        await state.hub.ensure(info)
        async with asyncio.timeout(state.settings.serve.request_timeout_s):
            head, rest = await state.hub.stream(info, fn)
    except BaseException as exc:
        state.metrics.in_flight.dec()
        _failed(state, info, route, started, exc)
        raise
    state.metrics.ttft.labels(info.key).observe(time.perf_counter() - started)
    return _Relay(_relay(state, info, route, started, head, rest, include_usage, extra), rest)


async def _relay(
    state: AppState,
    info: ModelInfo,
    route: str,
    started: float,
    head: Json,
    rest: AsyncIterator[Json],
    include_usage: bool,
    extra: Json | None,
) -> AsyncIterator[bytes]:
    usage: dict[str, Any] = {}
    code: str | None = None
    status = 200
    ended = False
    try:
        chunk: Json | None = head
        while chunk is not None:
            if chunk.get("usage") and not chunk.get("choices"):
                usage = chunk["usage"]
                if include_usage:
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            else:
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            chunk = await anext(rest, None)
        if extra is not None:  # the extension fields, in a last chunk without choices (as usage comes)
            last = {k: head[k] for k in ("id", "object", "created", "model") if k in head}
            yield b"data: " + orjson.dumps({**last, "choices": [], **extra}) + b"\n\n"
        ended = True
        yield DONE
    except Exception as exc:  # mid-stream: the status is sent already, so the error goes in the stream
        ended = True
        err = from_exception(exc)
        code, status = err.code, err.status
        yield b"data: " + orjson.dumps(error_body(err.status, err.message, code=err.code)) + b"\n\n"
    finally:
        # the client left first: the relay was cancelled while waiting for a token (CancelledError)
        # or closed while parked at a `yield` after a cancelled send (GeneratorExit)
        if not ended:
            code, status = "CANCELLED", 499
            state.metrics.cancelled.labels(info.key).inc()
        state.metrics.in_flight.dec()
        state.stats.record(
            info.key,
            route,
            seconds=time.perf_counter() - started,
            code=code,
            status=status,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )


class _Relay(StreamingResponse):
    """A streaming response that always closes the upstream stream, however the response ends."""

    def __init__(self, content: AsyncIterator[bytes], upstream: AsyncIterator[Json]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self._content = content
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for gen in (self._content, self._upstream):
                aclose = getattr(gen, "aclose", None)
                if aclose is not None:
                    await asyncio.shield(aclose())
