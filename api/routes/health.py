"""`GET /health` (open, no key needed) and `GET /metrics` (Prometheus text format)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import StateDep
from api.errors import RESPONSES
from api.schemas.replies import Health, Workers
from api.version import forgeflow_version

router = APIRouter(tags=["health"], responses=RESPONSES)
PROMETHEUS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


async def _healthy(backend: Any) -> bool:
    try:
        return bool(await asyncio.wait_for(backend.health(), timeout=1.0))
    except Exception:  # a backend that cannot even say it is down counts as down
        return False


@router.get("/health", operation_id="health")
async def health(state: StateDep) -> Health:
    """Service status, uptime, loaded models and which backends answer."""
    backends = state.hub.backends
    names = list(backends)
    up = await asyncio.gather(*(_healthy(backends[n]) for n in names))
    available = dict(zip(names, up, strict=True))
    loaded = await state.hub.loaded()
    busy = int(state.metrics.in_flight._value.get())
    default_up = available.get(state.settings.serve.backend, False)
    return Health(
        status="healthy" if default_up else "degraded",
        version=forgeflow_version(),
        uptime_seconds=round(time.monotonic() - state.started, 1),
        models_loaded=len(loaded),
        workers=Workers(active=min(busy, len(loaded)), idle=max(len(loaded) - busy, 0)),
        backend=state.settings.serve.backend,
        backends=available,
        ollama_available=available.get("ollama", False),
        timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )


@router.get("/metrics", operation_id="metrics", response_class=Response, responses=PROMETHEUS)
async def metrics(state: StateDep) -> Response:
    """Requests, errors, latency and time-to-first-token histograms, tokens per model; and each
    llama-server's own busy slots, deferred requests and tokens, labelled by model."""
    state.metrics.models_loaded.set(len(await state.hub.loaded()))
    state.metrics.servers.latest = await state.hub.server_metrics()
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
