"""The real API on a real port: uvicorn in a background thread, stopped (with its backends) on exit."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from api.app import create_app
from core.config import ServeConfig
from core.reports import IndexReport
from core.serving.base import Backend
from core.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_api(
    settings: Settings,
    backends: dict[str, Backend] | None = None,
    preload: list[str] | None = None,
    port: int | None = None,
    indexer: Callable[[str, Settings], IndexReport] | None = None,
) -> Iterator[str]:
    """Serve `create_app(settings)` on `port` (default: a free loopback port); yields the base URL."""
    port = port or free_port()
    app = create_app(settings, backends=backends, preload=preload, indexer=indexer)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def tiny_workspace(root: Path, tiny_gguf: Path) -> Path:
    """`root` with a registry holding the tiny GGUF as tiny 1.0.0 and 1.1.0 (champion → 1.1.0)."""
    from core.registry import Registry

    model = root / "tiny.gguf"
    model.write_bytes(tiny_gguf.read_bytes())
    registry = Registry.from_settings(api_settings(root))
    registry.register(model, name="tiny")
    registry.register(model, name="tiny")
    registry.set_alias("tiny", "champion", "1.1.0")
    registry.close()
    return root


def api_settings(root: Path, **overrides: object) -> Settings:
    """Settings confined to `root`; small contexts so the tiny model starts fast."""
    serve = ServeConfig(n_ctx=512, max_loaded_models=2, request_timeout_s=60, start_timeout_s=60)
    fields: dict[str, object] = {"home": root / "ws", "allowed_roots": [root], "serve": serve}
    return Settings(**(fields | overrides))
