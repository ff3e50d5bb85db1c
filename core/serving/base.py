"""The contract every serving backend keeps, and the errors the API maps to HTTP statuses.

Requests and responses are OpenAI-shaped dicts (chat.completion, chat.completion.chunk,
text_completion, embeddings list): the llama.cpp server speaks that shape natively, other backends
translate to it, and the API layer forwards it with no further conversion.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from core.errors import ForgeflowError

Task = Literal["text-generation", "text-embedding"]
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ServedModel:
    """What a backend needs to serve one registered model version."""

    key: str  # "name:version": the id clients see in responses and in /v1/models
    task: Task
    path: Path  # a GGUF file (text-generation) or a model directory (text-embedding)
    sha256: str  # of the GGUF (or of the directory's weights): checked before serving
    n_ctx: int = 2048
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific (e.g. Ollama parameters)


@dataclass(frozen=True, slots=True)
class Deployment:
    key: str
    backend: str
    state: Literal["loading", "loaded", "failed", "unloaded"]
    detail: str = ""  # endpoint, pid, or why it failed (no absolute paths)


class BackendError(ForgeflowError, status=502, code="BACKEND_ERROR"):
    """A backend failed a request; `status` is the HTTP status the API answers with."""


class BackendUnavailable(BackendError, status=503, code="BACKEND_UNAVAILABLE"):
    """The backend (or the model's server) is down or still starting: try again later."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotDeployed(BackendError, status=409, code="MODEL_NOT_DEPLOYED"):
    """The model is registered but not deployed on this backend."""


class UpstreamRejected(BackendError, status=400, code="INVALID_REQUEST"):
    """The backend refused the request as invalid (bad parameters, prompt too long for the context)."""


@runtime_checkable
class Backend(Protocol):
    """A place where models run. All methods are coroutines; streams are async iterators of chunks.

    Chat and completion bodies are validated OpenAI request bodies (with `model` already replaced by
    the served key). Streams yield OpenAI chunk dicts; when `stream_options.include_usage` is set the
    last chunk carries `usage` (and empty `choices`). Closing a stream early (the client went away)
    must stop the generation upstream.
    """

    name: str

    async def deploy(self, model: ServedModel) -> Deployment: ...

    async def undeploy(self, key: str) -> None: ...

    async def list(self) -> builtins.list[Deployment]: ...

    async def health(self) -> bool: ...

    async def chat(self, key: str, body: Json) -> Json: ...

    def chat_stream(self, key: str, body: Json) -> AsyncIterator[Json]: ...

    async def completion(self, key: str, body: Json) -> Json: ...

    def completion_stream(self, key: str, body: Json) -> AsyncIterator[Json]: ...

    async def embeddings(self, key: str, inputs: builtins.list[str]) -> Json: ...

    async def close(self) -> None: ...
