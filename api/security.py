"""Bearer API key and request-size limits, as plain ASGI middleware in front of every route.

Both run before routing, so unknown routes, /docs and /openapi.json are covered too; /health is the
one open route (load balancers and `forgeflow` itself probe it). The key is compared in constant
time.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

OPEN_PATHS = frozenset({"/health"})


async def _reject(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = orjson.dumps(error_body(status, message))
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """401 unless `Authorization: Bearer <key>` matches (when a key is configured)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self.app(scope, receive, send)  # CORS preflight carries no credentials
            return
        given = _header(scope, b"authorization") or b""
        if not hmac.compare_digest(given, self.expected):
            reason = "missing API key" if not given else "invalid API key"
            await _reject(
                send,
                401,
                f"{reason}: send Authorization: Bearer <FORGEFLOW_API_KEY>",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for bodies over `max_bytes`, whether announced by Content-Length or streamed in chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _reject(send, 413, f"request body over the {self.max_bytes}-byte limit")
            return
        seen = 0
        over = False

        async def limited_receive() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # a chunked body that grew too large: stop reading it
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def replacing_send(message: Message) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":  # whatever the route made of the cut body
                await _reject(send, 413, f"request body over the {self.max_bytes}-byte limit")

        await self.app(scope, limited_receive, replacing_send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    headers: Any = scope.get("headers", ())
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None
