"""The forgeflow HTTP API: one FastAPI app (registry, OpenAI-compatible inference, health, metrics)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from api import errors
from api.deps import AppState
from api.grounding import Retriever
from api.routes import benchmarks, health, infer, jobs, models, openai_compat, retrain
from api.security import BearerAuth, BodyLimit
from api.telemetry import Metrics, StatsBook
from api.version import forgeflow_version
from core.errors import ForgeflowError
from core.registry import Registry
from core.reports import IndexReport, MonitorReport
from core.serving.base import Backend
from core.serving.embedder import EmbedderBackend
from core.serving.hub import EMBEDDER, Hub
from core.settings import Settings

log = logging.getLogger(__name__)


def default_backends(settings: Settings) -> dict[str, Backend]:
    """The embedded llama.cpp pool, an Ollama client, and the in-process embedder."""
    from core.serving.llamacpp.backend import LlamaCppBackend
    from core.serving.ollama.backend import OllamaBackend

    return {
        "llamacpp": LlamaCppBackend(settings.serve, settings.home / "logs" / "serving", settings.cpu),
        "ollama": OllamaBackend(settings.ollama_url, settings.serve.request_timeout_s),
        EMBEDDER: EmbedderBackend(),
    }


def create_app(
    settings: Settings,
    *,
    backends: dict[str, Backend] | None = None,
    preload: list[str] | None = None,
    monitor: Callable[[str, Settings], MonitorReport] | None = None,
    indexer: Callable[[str, Settings], IndexReport] | None = None,
) -> FastAPI:
    """Build the app; backends default to `default_backends(settings)`.

    Args:
        preload: model references to deploy at startup (the first one becomes the active model).
        monitor: the monitor stage's decision for a repo spec (`forgeflow serve` passes
            `tasks.monitor.run`'s), used by `/v1/retrain` and `/v1/retrain/monitor`.
        indexer: brings a repo spec's index to its HEAD (`forgeflow serve` passes
            `tasks.extract.index.refresh_index`); grounded answers refresh a stale index with it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry.from_settings(settings)
        hub = Hub(
            registry,
            backends if backends is not None else default_backends(settings),
            default_backend=settings.serve.backend,
            n_ctx=settings.serve.n_ctx,
        )
        metrics = Metrics()
        stats = StatsBook(registry, metrics)
        retriever = Retriever(indexer)
        app.state.forgeflow = AppState(settings, registry, hub, metrics, stats, monitor, retriever)
        stats.start()
        try:
            for i, ref in enumerate(preload or []):
                try:
                    info = await hub.resolve(ref)
                    await hub.deploy(info)
                except ForgeflowError as exc:  # keep serving the rest; the reason is one line
                    log.error("could not deploy %s: %s", ref, exc)
                    continue
                if i == 0:
                    registry.set_active(info.key)
            yield
        finally:
            await stats.stop()
            await hub.close()
            retriever.close()
            registry.close()

    app = FastAPI(
        title="forgeflow",
        version=forgeflow_version(),
        description="Registry, deployment and OpenAI-compatible inference for repository-tuned models.",
        lifespan=lifespan,
        # not FastAPI's pydantic-to-JSON fast path: it writes 1e-05 as 0.00001, changing replies' bytes
        default_response_class=JSONResponse,
    )
    errors.install(app)
    for router in (
        health.router,
        models.router,
        openai_compat.router,
        infer.router,
        jobs.router,
        retrain.router,
        benchmarks.router,
    ):
        app.include_router(router)
    # added last = outermost: CORS (so even a 401 carries its headers), then auth, then size limits
    app.add_middleware(BodyLimit, max_bytes=settings.serve.max_request_bytes)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(BearerAuth, api_key=key)
    if settings.serve.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serve.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
