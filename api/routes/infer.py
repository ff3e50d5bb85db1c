"""The seeds' inference routes: `POST /v1/query` (AI Forge) and `POST /infer/{model_name}` (ModelMora)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from api import inference
from api.deps import StateDep
from api.errors import RESPONSES, ApiError
from api.schemas.replies import InferEmbeddings, InferMetadata, InferReply, InferText, InferTiming, QueryReply
from api.schemas.requests import InferRequest, QueryRequest

router = APIRouter(tags=["inference"], responses=RESPONSES)


@router.post("/v1/query", operation_id="query")
async def query(req: QueryRequest, state: StateDep) -> QueryReply:
    """One prompt in, one answer out."""
    info = await inference.resolve(state, req.model)
    body: dict[str, Any] = {"messages": [{"role": "user", "content": req.prompt}]}
    body |= req.model_dump(include={"temperature", "max_tokens"}, exclude_none=True)
    result, _ = await inference.run(state, info, "query", lambda b: b.chat(info.key, body))
    usage = result.get("usage") or {}
    return QueryReply(
        response=result["choices"][0]["message"]["content"],
        model=info.key,
        tokens_used=int(usage.get("total_tokens") or 0),
    )


@router.post("/infer/{model_name}", operation_id="infer")
async def infer(model_name: str, req: InferRequest, state: StateDep) -> InferReply:
    """Synchronous inference with timing: embeddings for text-embedding models, text otherwise.

    `timing.queue_time_ms` is the time before the backend got the request (name resolution and, for a
    model not yet loaded, loading it); `inference_time_ms` is the backend's share.
    """
    started = time.perf_counter()
    info = await inference.resolve(state, model_name)
    await state.hub.ensure(info)
    queued = time.perf_counter()
    texts = [req.text] if isinstance(req.text, str) else list(req.text)
    if not texts or not all(texts):
        raise ApiError(400, "text: give a non-empty string or list of strings", param="text")
    result: InferText | InferEmbeddings
    if info.task == "text-embedding":
        out, _ = await inference.run(state, info, "infer", lambda b: b.embeddings(info.key, texts))
        vectors = [row["embedding"] for row in out["data"]]
        result = InferEmbeddings(embeddings=vectors[0] if isinstance(req.text, str) else vectors)
    else:
        if len(texts) != 1:
            raise ApiError(400, "text: one prompt per request for a text-generation model", param="text")
        body: dict[str, Any] = {"messages": [{"role": "user", "content": texts[0]}]}
        body |= {k: v for k, v in req.options.items() if k in ("temperature", "top_p", "max_tokens", "seed")}
        out, _ = await inference.run(state, info, "infer", lambda b: b.chat(info.key, body))
        result = InferText(text=out["choices"][0]["message"]["content"], usage=out.get("usage"))
    done = time.perf_counter()
    return InferReply(
        result=result,
        metadata=InferMetadata(model=info.name, version=info.version, device=info.device),
        timing=InferTiming(
            queue_time_ms=round((queued - started) * 1000, 3),
            inference_time_ms=round((done - queued) * 1000, 3),
            total_time_ms=round((done - started) * 1000, 3),
        ),
    )
