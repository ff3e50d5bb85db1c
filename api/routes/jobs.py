"""Jobs (seed 001): start a fine-tune, read its status, deploy and validate what it made; list jobs.

A job is a Prefect flow run of `retrain/training`; the API creates it and reads it back, and never
trains in its own process. Every parameter is checked before a flow run is created.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query

from api.deps import StateDep
from api.errors import RESPONSES
from api.schemas.jobs import (
    DeployReply,
    FineTuneRequest,
    JobCreated,
    JobPage,
    JobStatusReply,
    ValidateReply,
)
from core.base_models import check_base_model
from core.errors import InputError, PathNotAllowed
from core.jobs import runs
from core.jobs.directory import JobDir
from core.jobs.params import RetrainParams
from core.jobs.status import JobStatus
from core.paths import display
from core.repos.spec import parse_repo_spec
from core.settings import Settings, config_file

router = APIRouter(tags=["jobs"], responses=RESPONSES)
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="same key: same job"),
]


@router.post("/v1/fine-tune", status_code=202, operation_id="create_fine_tune")
async def create_fine_tune(body: FineTuneRequest, state: StateDep, key: IdempotencyKey = None) -> JobCreated:
    """Queue a training job; `GET /status/{job_id}` follows it (so does the Prefect UI)."""
    settings = state.settings
    params = await asyncio.to_thread(_checked_params, body, settings)
    run = await runs.create_job(params, idempotency_key=key)
    status = await runs.job_status(run.id)
    return JobCreated(
        job_id=str(run.id), status=status["status"], message=f"job {run.name} {status['status']}"
    )


class NotFound(InputError, status=404, code="NOT_FOUND"):
    """A dataset, profile or base model the request names does not exist here."""


class NoGpu(InputError, status=409, code="NO_GPU_WORKER"):
    """The request needs a GPU worker; the embedded stack trains on the CPU."""


def _checked_params(body: FineTuneRequest, settings: Settings) -> RetrainParams:
    """The flow's parameters; every check that can fail is made here, before any flow run exists."""
    if body.repo is not None:
        parse_repo_spec(body.repo, settings)
    if body.dataset is not None:
        confined(Path(body.dataset), settings, "dataset")
        if not (Path(body.dataset) / "train.jsonl").is_file():
            raise NotFound(
                f"dataset {Path(body.dataset).name!r} has no train.jsonl: run `forgeflow prepare` first"
            )
    profile = body.profile or settings.jobs.profile
    if config_file(f"train/{profile}.yaml") is None:
        raise NotFound(f"unknown training profile '{profile}' (configs/train/)")
    if body.base_model is not None:
        try:
            check_base_model(body.base_model)
        except InputError as exc:
            raise NotFound(str(exc)) from None
    params = body.params()
    if params.method == "qlora":
        raise NoGpu(
            "method qlora needs a CUDA worker with bitsandbytes; this stack's runner trains on the CPU"
        )
    return params


def confined(path: Path, settings: Settings, what: str) -> Path:
    resolved = path.expanduser().resolve()
    if not any(resolved.is_relative_to(root) for root in settings.allowed_roots):
        raise PathNotAllowed(f"{what} {path.name!r} is outside the allowed roots (allowed_roots)")
    return resolved


@router.get("/status/{job_id}", operation_id="job_status")
async def job_status(job_id: UUID) -> JobStatusReply:
    """The job as Prefect sees it: state, stage, progress, epoch, step, loss, queue position."""
    return JobStatusReply(**await runs.job_status(job_id))


@router.get("/jobs", operation_id="list_jobs")
async def list_jobs(
    status: Annotated[JobStatus | None, Query()] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> JobPage:
    """Jobs, newest first."""
    found, total = await runs.list_jobs(status, page, limit)
    return JobPage(
        jobs=[JobStatusReply(**j) for j in found],
        total=total,
        page=page,
        pages=max(1, math.ceil(total / limit)),
    )


@router.post("/deploy/{job_id}", operation_id="deploy_job")
async def deploy_job(job_id: UUID, state: StateDep) -> DeployReply:
    """Register the job's GGUF (once) and serve it now, as the active model."""
    status = await runs.job_status(job_id)
    job = JobDir.of(state.settings, job_id)
    if status["status"] != "completed" or job.exported() is None:
        raise runs.JobConflict(f"job {job_id} is {status['status']} and has no export to deploy yet")
    name = status["parameters"].get("project_name") or job.plan().project or "forgeflow"
    info = await asyncio.to_thread(state.registry.register_export, job.export, name=str(name))
    state.hub.invalidate()
    await state.hub.deploy(info)
    await asyncio.to_thread(state.registry.set_active, info.key)
    gguf = Path(info.artifacts["gguf"].path)
    return DeployReply(
        job_id=str(job_id), success=True, model_name=info.key, gguf_path=display(gguf, fallback=gguf.name)
    )


@router.post("/validate/{job_id}", operation_id="validate_job")
async def validate_job(job_id: UUID, state: StateDep) -> ValidateReply:
    """The job's evaluation against its base: passed, the real perplexity, where the report is."""
    await runs.read_job(job_id)  # 404 for an unknown job
    job = JobDir.of(state.settings, job_id)
    evaluation = job.evaluation()
    if evaluation is None:
        raise runs.JobConflict(f"job {job_id} has not been evaluated yet")
    return ValidateReply.from_report(str(job_id), evaluation, job.run)
