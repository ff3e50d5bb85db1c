"""Reading the Prefect server's REST API with explicit bodies.

Prefect 3.8's client sends `null` for every filter and sort it was not given, and the 3.8 server
(with pydantic 2.14) refuses a `null` filter object with 422, so its `read_flow_runs`,
`read_task_runs` and `read_artifacts` fail unless every field is set. forgeflow's reads go through
these few functions instead, which send only what they mean. Writes (state changes, flow-run
creation, variables) keep using Prefect's client, which sends complete bodies for them.
"""

from __future__ import annotations

from typing import Any

import httpx

TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def api_url() -> str:
    """PREFECT_API_URL, or '' when none is configured (then nothing may start a server by itself)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "").rstrip("/")


def any_of(values: list[Any]) -> dict[str, list[Any]]:
    return {"any_": [str(v) for v in values]}


async def post(path: str, body: dict[str, Any]) -> Any:
    async with httpx.AsyncClient(base_url=api_url(), timeout=TIMEOUT) as client:
        reply = await client.post(path, json=body)
    reply.raise_for_status()
    return reply.json()


async def get(path: str) -> Any | None:
    """The JSON at `path`, or None for a 404."""
    async with httpx.AsyncClient(base_url=api_url(), timeout=TIMEOUT) as client:
        reply = await client.get(path)
    if reply.status_code == 404:
        return None
    reply.raise_for_status()
    return reply.json()


def post_sync(path: str, body: dict[str, Any]) -> Any:
    with httpx.Client(base_url=api_url(), timeout=TIMEOUT) as client:
        reply = client.post(path, json=body)
    reply.raise_for_status()
    return reply.json()
