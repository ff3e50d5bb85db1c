"""`forgeflow deploy | serve`: put models behind the OpenAI-compatible API."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from cli.main import _run, app, err, out
from cli.models import models_app
from core.errors import InputError
from core.settings import Settings, get_settings

BackendOpt = Annotated[str | None, typer.Option(help="llamacpp (embedded) or ollama; default: settings")]
HostOpt = Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")]
PortOpt = Annotated[int | None, typer.Option(help="port (default 8000)")]


def _settings(backend: str | None, host: str | None, port: int | None) -> Settings:
    base = get_settings()
    serve = base.serve.model_copy(
        update={k: v for k, v in {"backend": backend, "host": host, "port": port}.items() if v is not None}
    )
    if serve.backend not in ("llamacpp", "ollama"):
        raise InputError(f"backend '{serve.backend}' is unknown: use llamacpp or ollama")
    return base.model_copy(update={"serve": serve})


def _serve(settings: Settings, preload: list[str]) -> None:
    import uvicorn

    from api.app import create_app
    from core.registry import Registry

    with Registry.from_settings(settings) as registry:  # unknown names fail here, not in the server's startup
        preload = [_resolve(registry, ref) for ref in preload]
    host, port = settings.serve.host, settings.serve.port
    if host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        err.print(f"[yellow]warning:[/] serving on {host} without FORGEFLOW_API_KEY: anyone may use it")
    out.print(
        f"forgeflow API on http://{host}:{port} (OpenAI base URL http://{host}:{port}/v1, docs at /docs)"
    )
    uvicorn.run(create_app(settings, preload=preload), host=host, port=port, log_level="warning")


def _resolve(registry: Any, ref: str) -> str:
    if (info := registry.find(ref)) is None:
        registry.ensure_embedded(ref.split(":", 1)[0])  # the embedded defaults register on first use
        info = registry.resolve(ref)
    return str(info.key)


@app.command()
def serve(
    model: Annotated[list[str] | None, typer.Option("--model", help="deploy at startup (repeatable)")] = None,
    backend: BackendOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Run the HTTP API: registry, OpenAI-compatible /v1 routes, health and metrics."""
    settings = _run(lambda: _settings(backend, host, port))
    _run(lambda: _serve(settings, model or []))


@app.command()
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
    settings = _run(lambda: _settings(backend, host, port))
    if settings.serve.backend == "ollama":
        result = _run(lambda: asyncio.run(_deploy_to_ollama(settings, model)))
        out.print(f"deployed {result['key']} to Ollama at {settings.ollama_url}")
        return
    running = _run(lambda: _ask_running_server(settings, model))
    if running is not None:
        out.print(f"deployed {running['deployed']} on the running server ({running['backend']})")
        return
    _run(lambda: _serve(settings, [model]))


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
    return _post_to_server(settings, f"/models/{name}/deploy", {"version": version or None}, "deploy")


def _post_to_server(settings: Settings, path: str, body: dict[str, Any], what: str) -> dict[str, Any] | None:
    """POST to a forgeflow API listening on serve.host:port; None when nothing listens there."""
    import httpx

    base = f"http://{settings.serve.host}:{settings.serve.port}"
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


@models_app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[str, typer.Argument(help="the version to go back to")],
    alias: Annotated[str, typer.Option(help="the alias to move")] = "champion",
    host: HostOpt = None,
    port: PortOpt = None,
) -> None:
    """Move an alias back to VERSION and redeploy it on the running server, in one call.

    With no server running, the alias is moved in the registry; the next `forgeflow serve` resolves
    `name:alias` to VERSION.
    """
    settings = _run(lambda: _settings(None, host, port))
    body = {"alias": alias, "version": version}
    reply = _run(lambda: _post_to_server(settings, f"/models/{name}/rollback", body, "rollback"))
    if reply is not None:
        out.print(f"{name}:{alias}: {reply['from']} → {reply['to']} (deployed on the running server)")
        return

    def move() -> str:
        from core.registry import Registry

        with Registry.from_settings(settings) as registry:
            before = registry.alias_target(name, alias)
            return str(registry.set_alias(name, alias, version).version) + f" (was {before})"

    out.print(f"{name}:{alias} → {_run(move)}; no server running: it serves on the next start")
