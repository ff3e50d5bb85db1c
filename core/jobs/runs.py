"""Jobs over Prefect: create flow runs of the training deployment and read their state back.

The API keeps nothing about a job in memory: every answer is read from the Prefect server
(`PREFECT_API_URL`), so the Prefect UI and `/status` agree and an API restart loses nothing.
"""

from __future__ import annotations

import statistics
import uuid
from typing import Any
from uuid import UUID

import httpx
from prefect.client.schemas.objects import FlowRun
from prefect.states import Cancelled, Cancelling, Scheduled, State

from core.errors import ForgeflowError
from core.jobs import orchestrator
from core.jobs.orchestrator import NoRunner
from core.jobs.params import IndexParams, RetrainParams
from core.jobs.pause import drop_request, request_pause
from core.jobs.progress import (
    JOB_PROGRESS_KEY,
    STAGES,
    JobStage,
    TrainingProgress,
    estimate_defaults,
    from_metadata,
)
from core.jobs.status import (
    DEPLOYMENT_PATH,
    INDEX_DEPLOYMENT_PATH,
    JOB_TAG,
    TRAINING_DEPLOYMENT,
    JobStatus,
    status_of,
)

__all__ = ["JobConflict", "JobNotFound", "NoRunner"]


class JobNotFound(ForgeflowError, status=404, code="JOB_NOT_FOUND"):
    """No job has this id."""


class JobConflict(ForgeflowError, status=409, code="JOB_STATE_CONFLICT"):
    """The job's state does not allow what was asked (pause a finished job...)."""


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
QUEUED = ["SCHEDULED", "PENDING"]
# task-run names (Prefect adds a suffix) → the stage they belong to, for the time estimates
TASK_STAGES = {
    "resolve-repo": "monitor",
    "check-repo": "monitor",
    "extract-data": "extract",
    "validate-data": "validate",
    "train-adapter": "train",
    "evaluate-model": "evaluate",
    "export-model": "export",
    "record-lineage": "export",
    "promote-model": "promote",
    "deploy-model": "promote",
    "benchmark": "promote",
}


async def create_job(
    params: RetrainParams, *, idempotency_key: str | None, name: str | None = None
) -> FlowRun:
    """A new flow run of the training deployment (or, for a repeated idempotency key, the earlier one)."""
    return await orchestrator.create_flow_run(
        DEPLOYMENT_PATH,
        params.flow_parameters(),
        tags=[JOB_TAG, f"trigger:{params.trigger}"],
        idempotency_key=idempotency_key,
        name=name,
    )


async def create_index_run(params: IndexParams) -> FlowRun:
    """A flow run of `index-repo/refresh`: the index refresh and the retrain verdict, visible in the UI."""
    return await orchestrator.create_flow_run(
        INDEX_DEPLOYMENT_PATH,
        params.flow_parameters(),
        tags=[f"trigger:{params.trigger}"],
        idempotency_key=None,
        name=None,
    )


async def read_job(job_id: UUID) -> dict[str, Any]:
    """The job's flow run (Prefect's JSON); JobNotFound for any other id."""
    orchestrator.client()  # refuses when no Prefect server is configured
    try:
        run = await orchestrator.get(f"/flow_runs/{job_id}")
    except httpx.HTTPError as exc:
        raise NoRunner(f"the Prefect server does not answer ({type(exc).__name__})") from None
    if run is None or JOB_TAG not in (run.get("tags") or []):
        raise JobNotFound(f"job {job_id} does not exist")  # another flow's run is not a job
    return dict(run)


async def job_status(job_id: UUID) -> dict[str, Any]:
    """Everything `GET /status/{job_id}` shows, read from Prefect."""
    return await _describe(await read_job(job_id))


def _state(run: dict[str, Any]) -> dict[str, Any]:
    return run.get("state") or {}


async def _describe(run: dict[str, Any]) -> dict[str, Any]:
    state = _state(run)
    running = await orchestrator.post(
        "/task_runs/filter",
        {
            "flow_runs": {"id": orchestrator.any_of([run["id"]])},
            "task_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
            "limit": 50,
        },
    )
    status: JobStatus = status_of(state.get("type"), state.get("name"), [t["name"] for t in running])
    artifacts = await orchestrator.post(
        "/artifacts/filter",
        {
            "artifacts": {"flow_run_id": orchestrator.any_of([run["id"]]), "type": {"any_": ["progress"]}},
            "sort": "UPDATED_DESC",
            "limit": 20,
        },
    )
    overall = next((a for a in artifacts if a.get("key") == JOB_PROGRESS_KEY), None)
    training = next((a for a in artifacts if a.get("key") != JOB_PROGRESS_KEY), None)
    progress = float(overall["data"]) if overall is not None and overall.get("data") is not None else 0.0
    where: JobStage | None = from_metadata(JobStage, (overall or {}).get("metadata_"))
    train: TrainingProgress | None = from_metadata(TrainingProgress, (training or {}).get("metadata_"))
    if status == "training" and train is not None:
        start, end = STAGES["train"]
        progress = max(progress, start + (end - start) * train.percent / 100)
    if status == "completed":
        progress = 100.0
    return {
        "job_id": run["id"],
        "name": run["name"],
        "status": status,
        "state": state.get("name"),
        "stage": where.stage if where else None,
        "progress": round(min(progress, 100.0), 1),
        "current_epoch": train.epoch if train else None,
        "current_step": train.step if train else None,
        "total_steps": train.total if train else None,
        "loss": train.loss if train else None,
        "created_at": run.get("created"),
        "updated_at": max(t for t in (run.get("updated"), state.get("timestamp"), run.get("created")) if t),
        "error": state.get("message") if status in ("failed", "crashed") else None,
        "message": state.get("message"),
        "queue_position": await _queue_position(run) if status == "queued" else None,
        "parameters": dict((run.get("parameters") or {}).get("params") or {}),
    }


def _training_runs(states: list[str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"deployments": {"name": {"any_": [TRAINING_DEPLOYMENT]}}}
    if states:
        body["flow_runs"] = {"state": {"type": {"any_": states}}}
    return body


async def _queue_position(run: dict[str, Any]) -> int:
    queued = await orchestrator.post(
        "/flow_runs/filter", {**_training_runs(QUEUED), "sort": "EXPECTED_START_TIME_ASC", "limit": 200}
    )
    ids = [r["id"] for r in queued]
    return ids.index(run["id"]) + 1 if run["id"] in ids else 1


async def list_jobs(status: str | None, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """One page of jobs, newest first, optionally of one status; and the total count."""
    orchestrator.client()
    body = _training_runs(_kinds(status))
    total = int(await orchestrator.post("/flow_runs/count", body))
    runs = await orchestrator.post(
        "/flow_runs/filter",
        {**body, "sort": "EXPECTED_START_TIME_DESC", "limit": limit, "offset": (page - 1) * limit},
    )
    jobs = [await _describe(run) for run in runs]
    if status in ("preparing", "training"):  # both are Running in Prefect: split them here
        jobs = [j for j in jobs if j["status"] == status]
    return jobs, total


def _kinds(status: str | None) -> list[str] | None:
    return {
        None: None,
        "queued": QUEUED,
        "preparing": ["RUNNING"],
        "training": ["RUNNING"],
        "paused": ["PAUSED"],
        "completed": ["COMPLETED"],
        "failed": ["FAILED"],
        "cancelled": ["CANCELLED", "CANCELLING"],
        "crashed": ["CRASHED"],
    }[status]


async def pause_job(job_id: UUID) -> dict[str, Any]:
    """Ask a running job to pause; it suspends at its next task boundary or training step."""
    run = await read_job(job_id)
    if _state(run).get("type") != "RUNNING":
        raise JobConflict(f"job {job_id} is {_status(run)}: only a running job can be paused")
    await request_pause(job_id, uuid.uuid4().hex)
    return await _describe(run)


async def resume_job(job_id: UUID) -> dict[str, Any]:
    """Resume a paused job, or restart a crashed one: either continues from its last checkpoint."""
    run = await read_job(job_id)
    kind = _state(run).get("type")
    if kind not in ("PAUSED", "CRASHED"):
        raise JobConflict(f"job {job_id} is {_status(run)}: only a paused or crashed job can be resumed")
    await drop_request(job_id)  # a request not honoured yet is dropped too
    async with orchestrator.client() as client:
        if kind == "PAUSED":
            await client.resume_flow_run(job_id)
        else:
            await client.set_flow_run_state(job_id, Scheduled(message="resumed after a crash"), force=True)
    return await _describe(await read_job(job_id))


async def cancel_job(job_id: UUID) -> dict[str, Any]:
    """Cancel a job: a running one is stopped by its runner; a queued or paused one ends at once."""
    run = await read_job(job_id)
    kind = _state(run).get("type")
    if kind in TERMINAL or kind == "CANCELLING":
        raise JobConflict(f"job {job_id} is {_status(run)} already")
    await drop_request(job_id)
    why = "cancelled through the API"
    # a started job's runner stops its process (Pending: it may be starting one right now); a queued or
    # suspended job has no process, so it ends at once
    started = kind in ("RUNNING", "PENDING")
    state: State[Any] = Cancelling(message=why) if started else Cancelled(message=why)
    async with orchestrator.client() as client:
        await client.set_flow_run_state(job_id, state, force=True)
    return await _describe(await read_job(job_id))


def _status(run: dict[str, Any]) -> str:
    return status_of(_state(run).get("type"), _state(run).get("name"), [])


async def estimate_minutes() -> dict[str, float]:
    """Minutes per stage: medians of completed jobs' task runs, the documented defaults before any."""
    estimates = estimate_defaults()
    if not orchestrator.api_url():
        return estimates
    try:
        runs = await orchestrator.post(
            "/flow_runs/filter",
            {**_training_runs(["COMPLETED"]), "sort": "EXPECTED_START_TIME_DESC", "limit": 20},
        )
        tasks = (
            await orchestrator.post(
                "/task_runs/filter",
                {"flow_runs": {"id": orchestrator.any_of([r["id"] for r in runs])}, "limit": 200},
            )
            if runs
            else []
        )
    except httpx.HTTPError:
        return estimates
    per_run: dict[tuple[str, str], float] = {}
    for t in tasks:
        stage = TASK_STAGES.get(t["name"].rsplit("-", 1)[0]) or TASK_STAGES.get(t["name"])
        if stage is None or t.get("state_type") != "COMPLETED":
            continue
        key = (t["flow_run_id"], stage)
        per_run[key] = per_run.get(key, 0.0) + float(t.get("total_run_time") or 0) / 60
    for stage in estimates:
        seen = [v for (_, s), v in per_run.items() if s == stage]
        if seen:
            estimates[stage] = round(statistics.median(seen), 2)
    return estimates
