"""Reply bodies: the response models the routes declare, so the OpenAPI document shows each shape.

The OpenAI-compatible replies are relayed from the backend as they come (the routes answer a ready
`Response`, so FastAPI neither filters nor re-serializes them): their models document OpenAI's shape
and allow extra fields, since llama.cpp and Ollama add their own (`timings`, `system_fingerprint`...).
The registry, health and seed replies are built by the routes from these models; fields are declared
in the order they are sent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from core.registry import ModelInfo, Stats

ISO_8601: JsonDict = {"format": "date-time"}  # sent as `datetime.isoformat()`, e.g. 2025-01-31T12:00:00+00:00


class _Relayed(BaseModel):
    model_config = ConfigDict(extra="allow")


# OpenAI-compatible (/v1)


class Usage(_Relayed):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_Relayed):
    role: Literal["assistant"]
    content: str | None


class ChatChoice(_Relayed):
    index: int
    message: AssistantMessage
    finish_reason: str | None


class Source(BaseModel):
    """A retrieved chunk the answer was grounded on: where it lives in the repo, and its score."""

    path: str = Field(description="the file, relative to the repository; empty for a commit")
    start_line: int
    end_line: int
    kind: str = Field(description="function, method, class, ..., section, module or commit")
    name: str
    commit: str = Field(description="the commit the index reflects")
    score: float


class IndexState(BaseModel):
    """The index a grounded answer retrieved from: its commit, the repo's HEAD, and any note."""

    commit: str | None = Field(description="the commit the index reflects; None: no index")
    head: str | None = Field(description="the repository's HEAD when asked; None: not readable")
    current: bool = Field(description="whether the index reflected HEAD")
    note: str | None = Field(None, description="why there are no sources, or why they may be stale")


class _Generated(_Relayed):
    """What a chat and a text completion reply share."""

    id: str
    created: int
    model: str = Field(description="the served version, `name:version`")
    usage: Usage | None = None
    sources: list[Source] | None = Field(
        None, description="forgeflow's extension: the repo chunks the answer was grounded on"
    )
    index: IndexState | None = Field(None, description="forgeflow's extension: the index retrieved from")


class ChatCompletion(_Generated):
    """`POST /v1/chat/completions`; with `stream: true`, `chat.completion.chunk` events instead."""

    object: Literal["chat.completion"]
    choices: list[ChatChoice]


class CompletionChoice(_Relayed):
    index: int
    text: str
    finish_reason: str | None


class Completion(_Generated):
    """`POST /v1/completions`; with `stream: true`, `text_completion` chunk events instead."""

    object: Literal["text_completion"]
    choices: list[CompletionChoice]


class Embedding(_Relayed):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(
        description="floats, or with `encoding_format: base64` their float32 little-endian bytes in base64"
    )


class EmbeddingUsage(_Relayed):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Relayed):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class OpenAIModel(BaseModel):
    id: str = Field(description="`name:version` or `name:alias`")
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "forgeflow"


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


# the registry (/models)


class ModelSummary(BaseModel):
    name: str
    version: str
    id: str = Field(description="`name:version`")
    task: str = Field(description="text-generation or text-embedding")
    device: str
    state: str = Field(description="registered, loading, loaded, failed or unloaded")
    backend: str | None
    base_model: str | None
    aliases: list[str]
    created_at: str = Field(json_schema_extra=ISO_8601)

    @classmethod
    def from_info(cls, info: ModelInfo) -> ModelSummary:
        return cls.model_validate(
            info.model_dump() | {"id": info.key, "created_at": info.created_at.isoformat()}
        )


class ModelSource(BaseModel):
    repo: str | None
    commit: str | None


class ArtifactFile(BaseModel):
    file: str = Field(description="the file name only: no path leaves the server")
    sha256: str
    size: int


class ModelDetail(ModelSummary):
    source: ModelSource
    dataset_hash: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    artifacts: dict[str, ArtifactFile]
    updated_at: str = Field(json_schema_extra=ISO_8601)
    stats: Stats


class ModelPage(BaseModel):
    models: list[ModelSummary]
    total: int
    page: int
    pages: int
    active_model: str | None = Field(description="`name:version` of the default model for requests")


class Rollback(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    alias: str = Field(description="`name:alias`")
    from_: str | None = Field(alias="from", description="the version the alias left (none: a new alias)")
    to: str
    model: ModelDetail


class Deployed(BaseModel):
    deployed: str = Field(description="`name:version`")
    backend: str
    model: ModelDetail


# health and the seeds' routes


class Workers(BaseModel):
    active: int
    idle: int


class Health(BaseModel):
    status: Literal["healthy", "degraded"]
    version: str
    uptime_seconds: float
    models_loaded: int
    workers: Workers
    backend: str = Field(description="the default backend")
    backends: dict[str, bool] = Field(description="which backends answer")
    ollama_available: bool
    timestamp: str = Field(json_schema_extra=ISO_8601)


class QueryReply(BaseModel):
    response: str | None
    model: str = Field(description="the served version, `name:version`")
    tokens_used: int
    sources: list[Source] | None = Field(
        None, description="the repo chunks the answer used (sent only when retrieval was on)"
    )
    index: IndexState | None = Field(
        None, description="the index retrieved from (sent only when retrieval was on)"
    )


class InferText(BaseModel):
    text: str | None
    usage: dict[str, Any] | None = Field(description="the backend's token counts, as it sent them")


class InferEmbeddings(BaseModel):
    embeddings: list[float] | list[list[float]] = Field(description="one vector per string sent")


class InferMetadata(BaseModel):
    model: str
    version: str
    device: str


class ServerTimings(BaseModel):
    """llama-server's own account of one generation (absent for backends that give none)."""

    prompt_tokens: int = Field(description="prompt tokens evaluated (not served from the prompt cache)")
    cached_tokens: int = Field(description="prompt tokens reused from the slot's cache")
    prompt_ms: float
    predicted_tokens: int
    predicted_ms: float
    predicted_per_second: float = Field(description="decode speed, without HTTP or queueing")


class InferTiming(BaseModel):
    queue_time_ms: float
    inference_time_ms: float
    total_time_ms: float
    server: ServerTimings | None = Field(
        None, description="the serving engine's timings, where it reports them"
    )


class InferReply(BaseModel):
    result: InferText | InferEmbeddings
    metadata: InferMetadata
    timing: InferTiming
    sources: list[Source] | None = Field(
        None, description="the repo chunks the answer used (sent only when retrieval was on)"
    )
    index: IndexState | None = Field(
        None, description="the index retrieved from (sent only when retrieval was on)"
    )
