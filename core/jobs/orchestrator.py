"""Reading the Prefect server's REST API with explicit bodies.

Prefect 3.8's client sends `null` for every filter and sort it was not given, and the 3.8 server
(with pydantic 2.14) refuses a `null` filter object with 422, so its `read_flow_runs`,
`read_task_runs` and `read_artifacts` fail unless every field is set. forgeflow's reads go through
these few functions instead, which send only what they mean. Writes (state changes, flow-run
creation, variables) keep using Prefect's client, which sends complete bodies for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx

from core.errors import ForgeflowError

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def api_url() -> str:
    """PREFECT_API_URL, or '' when none is configured (then nothing may start a server by itself)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "").rstrip("/")


class NoRunner(ForgeflowError, status=503, code="ORCHESTRATOR_UNAVAILABLE"):
    """No Prefect server, or nothing serving the deployment a request needs."""


def client() -> PrefectClient:
    """Prefect's client for the configured server.

    Raises:
        NoRunner: no server is configured; without one Prefect would start a temporary server inside
            this process, which forgeflow never does behind the user's back.
    """
    from prefect.client.orchestration import get_client

    if not api_url():
        raise NoRunner("no Prefect server configured (PREFECT_API_URL): start the stack with `forgeflow up`")
    return get_client()


async def create_flow_run(
    deployment_path: str,
    params: dict[str, Any],
    *,
    tags: list[str],
    idempotency_key: str | None,
    name: str | None = None,
) -> FlowRun:
    """A new flow run of a served deployment, its parameters passed as `params`.

    Raises:
        NoRunner: no Prefect server, or nothing serves the deployment.
    """
    from prefect.exceptions import ObjectNotFound

    async with client() as prefect:
        try:
            deployment = await prefect.read_deployment_by_name(deployment_path)
        except ObjectNotFound:
            raise NoRunner(f"the deployment {deployment_path} is not served: start `forgeflow up`") from None
        except Exception as exc:  # the server is down or unreachable
            raise NoRunner(f"the Prefect server does not answer ({type(exc).__name__})") from None
        return await prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters={"params": params},
            tags=tags,
            idempotency_key=idempotency_key,
            name=name,
        )


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


def flow_run_id() -> UUID:
    """The id of the flow run this code runs in.

    Raises:
        RuntimeError: not inside a Prefect flow run.
    """
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("this runs as a Prefect flow run")
    return ctx.flow_run.id


def rename_flow_run(run_id: UUID, name: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        prefect.update_flow_run(run_id, name=name)
