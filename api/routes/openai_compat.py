"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from starlette.responses import StreamingResponse

from api import grounding, inference
from api.deps import AppState, StateDep
from api.errors import RESPONSES
from api.schemas.replies import ChatCompletion, Completion, EmbeddingList, OpenAIModel, OpenAIModelList
from api.schemas.requests import ChatRequest, CompletionRequest, EmbeddingRequest
from core.index.context import with_context
from core.registry import ModelInfo

router = APIRouter(prefix="/v1", tags=["openai"], responses=RESPONSES)
# One Server-Sent Event, as OpenAPI 3.2's `itemSchema` would say it; before 3.2, a stream's `schema`
# is read as describing each event (schemathesis reads it so). `data` is JSON, except the last one.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "const": "message"},
        "data": {
            "type": "string",
            "description": "a chunk (or an OpenAI error mid-stream) as JSON; `[DONE]` ends the stream",
        },
    },
}
# the JSON reply is the response model; `stream: true` answers these events instead
SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The reply; with `stream: true`, Server-Sent Events of chunks, then `data: [DONE]`",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    }
}


def _json(body: Any) -> Response:
    """The backend's reply as it came (a ready Response: FastAPI neither filters nor re-encodes it)."""
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "/chat/completions", operation_id="create_chat_completion", response_model=ChatCompletion, responses=SSE
)
async def chat_completions(req: ChatRequest, state: StateDep) -> Response | StreamingResponse:
    """Chat with a registered model; `stream: true` answers with Server-Sent Events."""
    info = await inference.resolve(state, req.model)
    body = req.upstream()
    messages = body["messages"]
    own = "".join(str(m["content"]) for m in messages)
    found = await inference.ground(
        state, info, req.retrieval, grounding.last_user_text(messages), own, body.get("max_tokens")
    )
    extra = None if found is None else found.extra()
    if found is not None:
        body["messages"] = with_context(messages, found.context)
    return await _answer(state, info, req, "chat", body, extra)


@router.post("/completions", operation_id="create_completion", response_model=Completion, responses=SSE)
async def completions(req: CompletionRequest, state: StateDep) -> Response | StreamingResponse:
    """Raw text completion (no chat template); a project's model gets the retrieved context first."""
    info = await inference.resolve(state, req.model)
    body = req.upstream()
    found = await inference.ground(
        state, info, req.retrieval, body["prompt"], body["prompt"], body.get("max_tokens")
    )
    extra = None if found is None else found.extra()
    if found is not None and found.context:
        body["prompt"] = f"{found.context}\n\n{body['prompt']}"
    return await _answer(state, info, req, "completion", body, extra)


async def _answer(
    state: AppState,
    info: ModelInfo,
    req: ChatRequest | CompletionRequest,
    route: Literal["chat", "completion"],
    body: dict[str, Any],
    extra: dict[str, Any] | None,
) -> Response | StreamingResponse:
    """The backend's reply (or its stream), with the grounding fields when there are any."""
    chat = route == "chat"
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body["stream_options"] = {"include_usage": True}  # always: the stats need the token counts
        return await inference.stream(
            state,
            info,
            route,
            lambda b: b.chat_stream(info.key, body) if chat else b.completion_stream(info.key, body),
            include_usage=include_usage,
            extra=extra,
        )
    result, _ = await inference.run(
        state, info, route, lambda b: b.chat(info.key, body) if chat else b.completion(info.key, body)
    )
    return _json(result | (extra or {}))


@router.post("/embeddings", operation_id="create_embeddings", response_model=EmbeddingList)
async def embeddings(req: EmbeddingRequest, state: StateDep) -> Response:
    """Vectors from a text-embedding model (all-minilm-l6-v2 is built in)."""
    info = await inference.resolve(state, req.model or "all-minilm-l6-v2")
    inputs = req.inputs()
    result, _ = await inference.run(state, info, "embeddings", lambda b: b.embeddings(info.key, inputs))
    if req.encoding_format == "base64":  # what the OpenAI SDKs ask for by default
        for row in result["data"]:
            row["embedding"] = base64.b64encode(np.asarray(row["embedding"], dtype="<f4").tobytes()).decode()
    return _json(result)


@router.get("/models", operation_id="list_openai_models")
async def list_models(state: StateDep) -> OpenAIModelList:
    """Every registered version as `name:version`, plus each `name:alias`."""
    page = await asyncio.to_thread(state.registry.list, limit=100)
    models = list(page.models)
    for n in range(2, page.pages + 1):
        models += (await asyncio.to_thread(state.registry.list, page=n, limit=100)).models
    data: list[OpenAIModel] = []
    for m in models:
        created = int(m.created_at.timestamp())
        data += [
            OpenAIModel(id=ref, created=created) for ref in (m.key, *(f"{m.name}:{a}" for a in m.aliases))
        ]
    return OpenAIModelList(data=data)
