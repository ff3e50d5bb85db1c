"""The registry over HTTP (seed 000): list, show, register, remove; aliases, rollback, deploy."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import Path as InPath

from api.deps import HubDep, RegistryDep, StateDep
from api.errors import RESPONSES, ApiError
from api.schemas.replies import (
    ArtifactFile,
    Deployed,
    ModelDetail,
    ModelPage,
    ModelSource,
    ModelSummary,
    Rollback,
)
from api.schemas.requests import NOT_LATEST, AliasRequest, DeployRequest, RegisterRequest
from core.registry import ALIAS, NAME, ModelInfo

router = APIRouter(tags=["models"], responses=RESPONSES)
Task = str | None
# the registry's own rules, so that the document says which names and aliases can exist
Name = Annotated[str, InPath(pattern=NAME.pattern, description="a model name")]
Alias = Annotated[str, InPath(pattern=ALIAS.pattern, json_schema_extra=NOT_LATEST, description="not latest")]


def detail(info: ModelInfo) -> ModelDetail:
    """Everything about a version; artifact paths are shown by file name only."""
    artifacts = {
        role: ArtifactFile(file=Path(ref.path).name, sha256=ref.sha256, size=ref.size)
        for role, ref in info.artifacts.items()
    }
    return ModelDetail(
        **dict(ModelSummary.from_info(info)),
        source=ModelSource(repo=info.source_repo, commit=info.source_commit),
        dataset_hash=info.dataset_hash,
        config=info.config,
        metrics=info.metrics,
        artifacts=artifacts,
        updated_at=info.updated_at.isoformat(),
        stats=info.stats,
    )


@router.get("/models", operation_id="list_models")
def list_models(
    registry: RegistryDep,
    task: Task = Query(None, description="text-generation or text-embedding"),
    device: str | None = Query(None, max_length=64),
    name: str | None = Query(None, max_length=64),
    page: int = Query(1, ge=1, le=1_000_000),
    limit: int = Query(20, ge=1, le=100),
) -> ModelPage:
    """Registered versions, newest first within a name, with paging and filters."""
    result = registry.list(name=name, task=task, device=device, page=page, limit=limit)
    active = registry.active()
    return ModelPage(
        models=[ModelSummary.from_info(m) for m in result.models],
        total=result.total,
        page=result.page,
        pages=result.pages,
        active_model=active.key if active else None,
    )


@router.get("/models/{ref}", operation_id="get_model")
def get_model(ref: str, state: StateDep) -> ModelDetail:
    """One version (`name`, `name:1.2.0`, `name:alias`) with its config, lineage and stats."""
    state.stats.flush()  # so the stats include requests served in the last few seconds
    return detail(state.registry.resolve(ref))


@router.post("/models", status_code=201, operation_id="register_model")
def register_model(body: RegisterRequest, state: StateDep) -> ModelDetail:
    """Register a GGUF file, an export directory or an HF embedding model directory."""
    raw = body.path or body.source
    if not raw:
        raise ApiError(400, "path: give the model file or directory to register", param="path")
    # `~` expanded as a shell does: `~nobody` (no such user) stays as written instead of failing
    path = Path.cwd() / os.path.expanduser(raw)
    try:
        info = state.registry.register(
            path,
            name=body.name,
            version=body.version,
            task=body.task,
            device=body.device,
            config=body.config or None,
        )
    except OSError as exc:  # only under an allowed root: elsewhere the path is refused before it is looked up
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise ApiError(400, "path: a name in it is too long for the file system", param="path") from None
    state.hub.invalidate()
    return detail(info)


@router.delete("/models/{ref}", status_code=204, operation_id="delete_model")
async def delete_model(ref: str, state: StateDep) -> Response:
    """Remove a version (`name:1.2.0`) or every version of a name; deployed ones are stopped first."""
    name, _, version = ref.partition(":")
    registry = state.registry
    targets = (
        [await asyncio.to_thread(registry.resolve, ref)]
        if version
        else (await asyncio.to_thread(registry.list, name=name, limit=100)).models
    )
    if not targets:
        await asyncio.to_thread(registry.resolve, name)  # raises the registry's not-found error
    for info in targets:
        await state.hub.undeploy(info)
    for info in targets:
        await asyncio.to_thread(registry.delete, info.name, info.version)
    state.hub.invalidate()
    return Response(status_code=204)


@router.post("/models/{name}/aliases", operation_id="set_alias")
def set_alias(name: Name, body: AliasRequest, registry: RegistryDep, hub: HubDep) -> ModelDetail:
    """Create or move an alias (`champion`, `staging`, ...) to a version."""
    info = registry.set_alias(name, body.alias, body.version)
    hub.invalidate()
    return detail(info)


@router.delete("/models/{name}/aliases/{alias}", status_code=204, operation_id="remove_alias")
def remove_alias(name: Name, alias: Alias, registry: RegistryDep, hub: HubDep) -> Response:
    registry.remove_alias(name, alias)
    hub.invalidate()
    return Response(status_code=204)


@router.post("/models/{name}/rollback", operation_id="rollback")
async def rollback(name: Name, body: AliasRequest, state: StateDep) -> Rollback:
    """Move an alias to an (older) version and deploy that version, in one call."""
    registry, hub = state.registry, state.hub
    before = await asyncio.to_thread(registry.alias_target, name, body.alias)
    info = await asyncio.to_thread(registry.set_alias, name, body.alias, body.version)
    hub.invalidate()
    await hub.deploy(info)
    active = await asyncio.to_thread(registry.active)
    if active is None or active.name == name:
        await asyncio.to_thread(registry.set_active, info.key)
    fresh = await asyncio.to_thread(registry.resolve, info.key)
    return Rollback(alias=f"{name}:{body.alias}", from_=before, to=info.version, model=detail(fresh))


@router.post("/models/{name}/deploy", operation_id="deploy_model")
async def deploy_model(name: str, body: DeployRequest, state: StateDep) -> Deployed:
    """Deploy a version on its backend now and make it the active model (the default for requests)."""
    ref = f"{name}:{body.version}" if body.version else name
    info = await state.hub.resolve(ref)
    backend = await state.hub.deploy(info)
    await asyncio.to_thread(state.registry.set_active, info.key)
    fresh = await asyncio.to_thread(state.registry.resolve, info.key)
    return Deployed(deployed=info.key, backend=backend.name, model=detail(fresh))


# `{name}` as in POST's path: OpenAPI refuses two templated paths that differ only in a parameter's name
@router.delete("/models/{name}/deploy", status_code=204, operation_id="undeploy_model")
async def undeploy_model(
    name: Annotated[str, InPath(description="a name (its newest version) or name:version")], state: StateDep
) -> Response:
    info = await state.hub.resolve(name)
    await state.hub.undeploy(info)
    return Response(status_code=204)
