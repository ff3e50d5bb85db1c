"""The seeds' inference routes: `POST /v1/query` (AI Forge) and `POST /infer/{model_name}` (ModelMora)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from api import grounding, inference
from api.deps import StateDep
from api.errors import RESPONSES, ApiError
from api.schemas.replies import (
    InferEmbeddings,
    InferMetadata,
    InferReply,
    InferText,
    InferTiming,
    QueryReply,
    ServerTimings,
)
from api.schemas.requests import InferRequest, QueryRequest
from core.index.context import with_context

router = APIRouter(tags=["inference"], responses=RESPONSES)


@router.post("/v1/query", operation_id="query", response_model_exclude_unset=True)  # sources: when grounded
async def query(req: QueryRequest, state: StateDep) -> QueryReply:
    """One prompt in, one answer out."""
    info = await inference.resolve(state, req.model)
    messages: list[dict[str, Any]] = [{"role": "user", "content": req.prompt}]
    found = await inference.ground(state, info, req.retrieval, req.prompt, req.prompt, req.max_tokens)
    body: dict[str, Any] = {"messages": messages if found is None else with_context(messages, found.context)}
    body |= req.model_dump(include={"temperature", "max_tokens"}, exclude_none=True)
    result, _ = await inference.run(state, info, "query", lambda b: b.chat(info.key, body))
    usage = result.get("usage") or {}
    return QueryReply(
        response=result["choices"][0]["message"]["content"],
        model=info.key,
        tokens_used=int(usage.get("total_tokens") or 0),
        **({} if found is None else found.extra()),
    )


@router.post("/infer/{model_name}", operation_id="infer", response_model_exclude_unset=True)
async def infer(model_name: str, req: InferRequest, state: StateDep) -> InferReply:
    """Synchronous inference with timing: embeddings for text-embedding models, text otherwise.

    `timing.queue_time_ms` is the time before the backend got the request (name resolution and, for a
    model not yet loaded, loading it); `inference_time_ms` is the backend's share.
    """
    started = time.perf_counter()
    info = await inference.resolve(state, model_name)
    texts = [req.text] if isinstance(req.text, str) else list(req.text)
    if info.task != "text-embedding" and len(texts) != 1:  # refused before the model is loaded for it
        raise ApiError(400, "text: one prompt per request for a text-generation model", param="text")
    await state.hub.ensure(info)
    queued = time.perf_counter()
    result: InferText | InferEmbeddings
    server: ServerTimings | None = None
    found: grounding.Grounding | None = None
    if info.task == "text-embedding":
        out, _ = await inference.run(state, info, "infer", lambda b: b.embeddings(info.key, texts))
        vectors = [row["embedding"] for row in out["data"]]
        result = InferEmbeddings(embeddings=vectors[0] if isinstance(req.text, str) else vectors)
    else:
        messages: list[dict[str, Any]] = [{"role": "user", "content": texts[0]}]
        found = await inference.ground(state, info, req.retrieval, texts[0], texts[0], req.options.max_tokens)
        body: dict[str, Any] = {
            "messages": messages if found is None else with_context(messages, found.context)
        }
        body |= req.options.model_dump(exclude_none=True)
        out, _ = await inference.run(state, info, "infer", lambda b: b.chat(info.key, body))
        result = InferText(text=out["choices"][0]["message"]["content"], usage=out.get("usage"))
        server = _server_timings(out.get("timings"))
    done = time.perf_counter()
    return InferReply(
        result=result,
        metadata=InferMetadata(model=info.name, version=info.version, device=info.device),
        timing=InferTiming(
            queue_time_ms=round((queued - started) * 1000, 3),
            inference_time_ms=round((done - queued) * 1000, 3),
            total_time_ms=round((done - started) * 1000, 3),
            server=server,
        ),
        **({} if found is None else found.extra()),
    )


def _server_timings(timings: Any) -> ServerTimings | None:
    """llama-server's `timings` block in our names; None when the backend sent none."""
    if not isinstance(timings, dict):
        return None
    try:
        return ServerTimings(
            prompt_tokens=timings["prompt_n"],
            cached_tokens=timings.get("cache_n", 0),
            prompt_ms=round(timings["prompt_ms"], 3),
            predicted_tokens=timings["predicted_n"],
            predicted_ms=round(timings["predicted_ms"], 3),
            predicted_per_second=round(timings["predicted_per_second"], 2),
        )
    except (KeyError, TypeError, ValueError):
        return None
