"""`forgeflow deploy | serve`: put models behind the OpenAI-compatible API."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from cli.app import err, out, run
from cli.server_client import BackendOpt, HostOpt, PortOpt, post_to_server, serve_settings
from core.settings import Settings


def _serve(settings: Settings, preload: list[str]) -> None:
    import uvicorn

    from api.app import create_app
    from core.registry import Registry

    with Registry.from_settings(settings) as registry:  # unknown names fail here, not in the server's startup
        preload = [_resolve(registry, ref) for ref in preload]
    host, port = settings.serve.host, settings.serve.port
    if host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        err.print(f"[yellow]warning:[/] serving on {host} without FORGEFLOW_API_KEY: anyone may use it")
    url = settings.api_url
    out.print(f"forgeflow API on {url} (OpenAI base URL {url}/v1, docs at /docs)")
    from tasks.extract.index import refresh_index
    from tasks.monitor.run import monitor_decision

    app = create_app(settings, preload=preload, monitor=monitor_decision, indexer=refresh_index)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _resolve(registry: Any, ref: str) -> str:
    if (info := registry.find(ref)) is None:
        registry.ensure_embedded(ref.split(":", 1)[0])  # the embedded defaults register on first use
        info = registry.resolve(ref)
    return str(info.key)


def serve(
    model: Annotated[list[str] | None, typer.Option("--model", help="deploy at startup (repeatable)")] = None,
    backend: BackendOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Run the HTTP API: registry, OpenAI-compatible /v1 routes, health and metrics."""
    settings = run(lambda: serve_settings(backend, host, port))
    run(lambda: _serve(settings, model or []))


def deploy(
    model: Annotated[str, typer.Option("--model", help="name, name:version or name:alias")] = "smollm2-135m",
    backend: BackendOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Deploy a model and make it the active one.

    With Ollama the model is created there and the command returns. With the embedded llama.cpp
    backend the model runs inside the API server: a running `forgeflow serve` on --host/--port is
    asked to load it; otherwise this command starts serving it in the foreground.
    """
    settings = run(lambda: serve_settings(backend, host, port))
    if settings.serve.backend == "ollama":
        result = run(lambda: asyncio.run(_deploy_to_ollama(settings, model)))
        out.print(f"deployed {result['key']} to Ollama at {settings.ollama_url}")
        return
    running = run(lambda: _ask_running_server(settings, model))
    if running is not None:
        out.print(f"deployed {running['deployed']} on the running server ({running['backend']})")
        return
    run(lambda: _serve(settings, [model]))


async def _deploy_to_ollama(settings: Settings, ref: str) -> dict[str, Any]:
    from core.registry import Registry
    from core.serving.hub import Hub
    from core.serving.ollama.backend import OllamaBackend

    registry = Registry.from_settings(settings)
    backend = OllamaBackend(settings.ollama_url, settings.serve.request_timeout_s)
    hub = Hub(registry, {"ollama": backend}, default_backend="ollama", n_ctx=settings.serve.n_ctx)
    try:
        info = await hub.resolve(ref)
        await hub.deploy(info, backend)
        registry.set_active(info.key)
        return {"key": info.key}
    finally:
        await backend.close()
        registry.close()


def _ask_running_server(settings: Settings, ref: str) -> dict[str, Any] | None:
    """Deploy through a forgeflow API already listening on host:port; None when nothing listens."""
    name, _, version = ref.partition(":")
    return post_to_server(settings, f"/models/{name}/deploy", {"version": version or None}, "deploy")
