"""In-process text embeddings (sentence-transformers models such as all-MiniLM-L6-v2) with torch.

Embedding models are small and answer in milliseconds: a subprocess per model would cost more than
the work. Weights are read from safetensors only; mean pooling over the attention mask, then L2
normalisation, which is what sentence-transformers does for the MiniLM family.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

from core.serving.base import BackendError, Deployment, Json, NotDeployed, ServedModel, UpstreamRejected

log = logging.getLogger(__name__)
MAX_INPUTS = 2048  # OpenAI's limit for one embeddings request
BATCH = 32


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    max_length: int


class EmbedderBackend:
    """Serves text-embedding models in this process; generation requests are refused."""

    name = "embedder"

    def __init__(self) -> None:
        self._models: dict[str, Loaded] = {}
        self._lock = asyncio.Lock()

    async def deploy(self, model: ServedModel) -> Deployment:
        if model.task != "text-embedding":
            raise UpstreamRejected(f"{model.key} is a {model.task} model: the embedder serves text-embedding")
        async with self._lock:
            if model.key not in self._models:
                self._models[model.key] = await asyncio.to_thread(load, model)
        return Deployment(model.key, self.name, "loaded")

    async def undeploy(self, key: str) -> None:
        self._models.pop(key, None)

    async def list(self) -> builtins.list[Deployment]:
        return [Deployment(key, self.name, "loaded") for key in self._models]

    async def health(self) -> bool:
        return True

    async def embeddings(self, key: str, inputs: builtins.list[str]) -> Json:
        loaded = self._models.get(key)
        if loaded is None:
            raise NotDeployed(f"model {key} is not loaded")
        if not inputs or len(inputs) > MAX_INPUTS:
            raise UpstreamRejected(f"input: give 1 to {MAX_INPUTS} strings")
        vectors, tokens = await asyncio.to_thread(embed, loaded, inputs)
        return {
            "object": "list",
            "model": key,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def chat(self, key: str, body: Json) -> Json:
        _generation_refused(key)

    def chat_stream(self, key: str, body: Json) -> AsyncIterator[Json]:
        _generation_refused(key)

    async def completion(self, key: str, body: Json) -> Json:
        _generation_refused(key)

    def completion_stream(self, key: str, body: Json) -> AsyncIterator[Json]:
        _generation_refused(key)

    async def close(self) -> None:
        self._models.clear()


def _generation_refused(key: str) -> NoReturn:
    raise UpstreamRejected(f"{key} is a text-embedding model: use it with /v1/embeddings")


def load(model: ServedModel) -> Loaded:
    """The model's tokenizer and weights (safetensors only), in float32, ready for `embed`."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    if not any(model.path.glob("*.safetensors")):
        raise BackendError(f"{model.key}: no safetensors weights (pickled weights are never loaded)")
    log.info("loading embedding model %s", model.key)
    tokenizer = AutoTokenizer.from_pretrained(str(model.path))
    net = AutoModel.from_pretrained(str(model.path), dtype=torch.float32, use_safetensors=True).eval()
    limit = int(getattr(net.config, "max_position_embeddings", 512))
    max_length = min(limit, int(model.options.get("max_seq_length", 256)))
    return Loaded(net, tokenizer, max_length)


def embed(loaded: Loaded, inputs: list[str]) -> tuple[list[list[float]], int]:
    """L2-normalised mean-pooled vectors of `inputs`, and the tokens read."""
    import torch

    vectors: list[list[float]] = []
    tokens = 0
    with torch.inference_mode():
        for start in range(0, len(inputs), BATCH):
            batch = loaded.tokenizer(
                inputs[start : start + BATCH],
                padding=True,
                truncation=True,
                max_length=loaded.max_length,
                return_tensors="pt",
            )
            hidden = loaded.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors.extend(torch.nn.functional.normalize(pooled, p=2, dim=1).tolist())
            tokens += int(batch["attention_mask"].sum())
    return vectors, tokens
