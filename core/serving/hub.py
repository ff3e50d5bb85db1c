"""Registered model versions → running deployments: resolve a name, deploy on demand, route requests.

The hub is the one place that decides which backend serves a version (text-embedding models run in
the embedder, text-generation models on the configured backend) and keeps the registry's `state`
column in step with what actually runs. Resolutions are cached for a second: a request should not
pay a database round trip, and an alias moved by another process is seen within that second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from core.serving.base import Backend, BackendError, Json, NotDeployed, ServedModel

if TYPE_CHECKING:
    from core.registry import ModelInfo, Registry

T = TypeVar("T")
EMBEDDER = "embedder"


class Hub:
    """Routes requests for registry references (`name`, `name:1.2.0`, `name:champion`) to backends."""

    def __init__(
        self,
        registry: Registry,
        backends: dict[str, Backend],
        *,
        default_backend: str,
        n_ctx: int,
        resolve_ttl_s: float = 1.0,
    ) -> None:
        self.registry = registry
        self.backends = backends
        self.default_backend = default_backend
        self.n_ctx = n_ctx
        self._ttl = resolve_ttl_s
        self._resolved: dict[str, tuple[float, ModelInfo]] = {}
        self._deployed: set[tuple[str, str]] = set()  # (backend, key)
        self._locks: dict[str, asyncio.Lock] = {}

    async def resolve(self, ref: str) -> ModelInfo:
        """The version a reference names; embedded defaults are registered on first use."""
        hit = self._resolved.get(ref)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        info = await asyncio.to_thread(self._resolve_or_embed, ref)
        self._resolved[ref] = (now, info)
        return info

    def _resolve_or_embed(self, ref: str) -> ModelInfo:
        from core.registry import ModelNotFound

        try:
            return self.registry.resolve(ref)
        except ModelNotFound:
            name = ref.split(":", 1)[0]
            try:
                self.registry.ensure_embedded(name)
            except ModelNotFound:
                pass
            else:
                return self.registry.resolve(ref)
            raise

    def invalidate(self) -> None:
        """Forget cached resolutions (after an alias moved or a version was removed)."""
        self._resolved.clear()

    def backend_for(self, info: ModelInfo) -> Backend:
        """The embedder for text-embedding models; this server's configured backend for the rest."""
        return self.backends[EMBEDDER if info.task == "text-embedding" else self.default_backend]

    async def deploy(self, info: ModelInfo, backend: Backend | None = None) -> Backend:
        """Deploy a version (idempotent) and record its state in the registry."""
        backend = backend or self.backend_for(info)
        lock = self._locks.setdefault(info.key, asyncio.Lock())
        async with lock:
            await asyncio.to_thread(self.registry.set_state, info.key, "loading", backend.name)
            try:
                await backend.deploy(_served(info, self.n_ctx))
            except BaseException:
                await asyncio.to_thread(self.registry.set_state, info.key, "failed", backend.name)
                raise
            self._deployed.add((backend.name, info.key))
            await asyncio.to_thread(self.registry.set_state, info.key, "loaded", backend.name)
        await self._sync_unloaded(backend)
        return backend

    async def undeploy(self, info: ModelInfo) -> None:
        for backend in self.backends.values():
            if (backend.name, info.key) in self._deployed:
                await backend.undeploy(info.key)
                self._deployed.discard((backend.name, info.key))
        await asyncio.to_thread(self.registry.set_state, info.key, "unloaded", None)

    async def _sync_unloaded(self, backend: Backend) -> None:
        """Mark versions the backend dropped on its own (LRU unload) as unloaded."""
        live = {d.key for d in await backend.list() if d.state == "loaded"}
        gone = {key for name, key in self._deployed if name == backend.name and key not in live}
        for key in gone:
            self._deployed.discard((backend.name, key))
            await asyncio.to_thread(self.registry.set_state, key, "unloaded", backend.name)

    async def ensure(self, info: ModelInfo) -> Backend:
        """The version's backend, with the version deployed on it."""
        backend = self.backend_for(info)
        if (backend.name, info.key) not in self._deployed:
            await self.deploy(info, backend)
        return backend

    async def call(self, info: ModelInfo, fn: Callable[[Backend], Awaitable[T]]) -> T:
        """Run `fn` on the version's backend, deploying first when needed (once more if it was unloaded)."""
        backend = await self.ensure(info)
        try:
            return await fn(backend)
        except NotDeployed:
            self._deployed.discard((backend.name, info.key))
            await self.deploy(info, backend)
            return await fn(backend)

    async def stream(
        self, info: ModelInfo, fn: Callable[[Backend], AsyncIterator[Json]]
    ) -> tuple[Json, AsyncIterator[Json]]:
        """The first chunk (so errors surface before a response starts) and the rest of the stream."""

        async def first(backend: Backend) -> tuple[Json, AsyncIterator[Json]]:
            chunks = fn(backend)
            try:
                head = await chunks.__anext__()
            except StopAsyncIteration:
                raise BackendError(f"{info.key} returned an empty stream") from None
            except BaseException:
                await chunks.aclose()  # type: ignore[attr-defined]
                raise
            return head, chunks

        return await self.call(info, first)

    async def loaded(self) -> list[str]:
        """Keys of the versions loaded now, on every backend that answers."""
        keys: list[str] = []
        for backend in self.backends.values():
            try:
                deployments = await backend.list()
            except BackendError:  # a backend that is down has nothing loaded for us
                continue
            ours = {key for name, key in self._deployed if name == backend.name}  # Ollama lists all
            keys += [d.key for d in deployments if d.state == "loaded" and d.key in ours]
        return keys

    async def server_metrics(self) -> dict[str, dict[str, float]]:
        """Per-model series of the backends that run their own servers (llama.cpp), by version key."""
        found: dict[str, dict[str, float]] = {}
        for backend in self.backends.values():
            scrape = getattr(backend, "server_metrics", None)
            if scrape is not None:
                try:
                    found |= await scrape()
                except BackendError:  # a backend that is down has no series to show
                    continue
        return found

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()


def _served(info: ModelInfo, n_ctx: int) -> ServedModel:
    role = "model_dir" if info.task == "text-embedding" else "gguf"
    artifact = info.artifacts.get(role)
    if artifact is None:
        raise BackendError(f"{info.key} has no {role} artifact: register it again")
    options = dict(info.config.get("serve", {})) if isinstance(info.config.get("serve"), dict) else {}
    return ServedModel(info.key, info.task, Path(artifact.path), artifact.sha256, n_ctx, options)  # type: ignore[arg-type]
