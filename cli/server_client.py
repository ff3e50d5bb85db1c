"""Talking to a `forgeflow serve` that is already running: settings for it, and one POST."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from core.errors import InputError
from core.settings import Settings, get_settings

BackendOpt = Annotated[str | None, typer.Option(help="llamacpp (embedded) or ollama; default: settings")]
HostOpt = Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")]
PortOpt = Annotated[int | None, typer.Option(help="port (default 8000)")]


def serve_settings(backend: str | None, host: str | None, port: int | None) -> Settings:
    base = get_settings()
    serve = base.serve.model_copy(
        update={k: v for k, v in {"backend": backend, "host": host, "port": port}.items() if v is not None}
    )
    if serve.backend not in ("llamacpp", "ollama"):
        raise InputError(f"backend '{serve.backend}' is unknown: use llamacpp or ollama")
    return base.model_copy(update={"serve": serve})


def post_to_server(settings: Settings, path: str, body: dict[str, Any], what: str) -> dict[str, Any] | None:
    """POST to a forgeflow API listening on serve.host:port; None when nothing listens there."""
    import httpx

    base = settings.api_url
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
    try:
        health = httpx.get(f"{base}/health", timeout=2)
    except httpx.HTTPError:
        return None
    if health.status_code != 200 or "models_loaded" not in health.json():
        raise InputError(f"{base} answers but is not a forgeflow API: pick another --port")
    reply = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=600)
    if reply.status_code != 200:
        message = reply.json().get("error", {}).get("message", reply.text[:200])
        raise InputError(f"{what} failed ({reply.status_code}): {message}")
    return dict(reply.json())
