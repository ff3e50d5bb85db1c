"""The retrain loop (seed 001): trigger, monitor, and pause / resume / cancel a job.

Git hooks and the schedule call `POST /v1/retrain`; it asks the monitor first (a cheap, read-only
look at the repo) and starts a job only when the monitor says so, or when `force` is set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import StateDep
from api.errors import RESPONSES
from api.routes.jobs import IdempotencyKey
from api.schemas.jobs import JobStatusReply, Plan, PlanStep, RetrainReply, RetrainRequest
from core.jobs import runs
from core.jobs.orchestrator import NoRunner
from core.jobs.params import IndexParams, RetrainParams
from core.reports import MonitorReport
from core.repos.spec import parse_repo_spec

log = logging.getLogger(__name__)
router = APIRouter(tags=["retrain"], responses=RESPONSES)
STEP_NAMES = {
    "monitor": "monitor the repository",
    "extract": "extract instruction data",
    "validate": "validate the dataset",
    "train": "fine-tune the adapter",
    "evaluate": "evaluate against the base",
    "export": "export GGUF and check parity",
    "promote": "promote and deploy",
}


def _monitor(state: StateDep, spec: str) -> MonitorReport:
    if state.monitor is None:
        raise NoRunner("this API was started without the monitor: start it with `forgeflow serve`")
    return state.monitor(spec, state.settings)


@router.post("/v1/retrain", operation_id="retrain")
async def retrain(body: RetrainRequest, state: StateDep, key: IdempotencyKey = None) -> RetrainReply:
    """Start a training job for the project when its monitor says so (or always, with `force`)."""
    settings = state.settings
    spec = body.project_path or body.repo_url
    assert spec is not None
    await asyncio.to_thread(parse_repo_spec, spec, settings)  # 4xx before anything else
    estimates = await runs.estimate_minutes()
    plan = Plan(
        plan=[PlanStep(id=s, name=STEP_NAMES[s], estimated_minutes=m) for s, m in estimates.items()],
        estimated_duration_minutes=round(sum(estimates.values()), 2),
    )
    if body.project_path is not None and not body.force:
        decision = await asyncio.to_thread(_monitor, state, spec)
        if not decision.should_retrain:  # the index still follows the commit, in a run the UI shows
            index_run = await _index_run(IndexParams(repo=spec, trigger=body.trigger))
            return RetrainReply(
                triggered=False, reason=decision.reason, plan=plan, job_id=None, index_run_id=index_run
            )
        reason = decision.reason
    else:
        reason = "forced" if body.force else "a remote repository: the job's monitor decides"
    params = RetrainParams(
        repo=spec,
        project_name=body.project_name,
        force=True if body.project_path is not None else body.force,  # decided above for local repos
        auto_deploy=body.auto_deploy,
        trigger=body.trigger,
    )
    run = await runs.create_job(params, idempotency_key=key)
    return RetrainReply(triggered=True, reason=reason, plan=plan, job_id=str(run.id))


async def _index_run(params: IndexParams) -> str | None:
    """Start an `index-repo` run; None when no runner serves it (the answer to the hook stays the same)."""
    try:
        run = await runs.create_index_run(params)
    except NoRunner as exc:
        log.info("no index-repo run for %s: %s", params.repo, exc)
        return None
    return str(run.id)


@router.get("/v1/retrain/monitor", operation_id="retrain_monitor")
async def retrain_monitor(
    project_path: Annotated[str, Query(min_length=1, max_length=4096)], state: StateDep
) -> MonitorReport:
    """The monitor's decision for a local repository, without starting anything."""
    return await asyncio.to_thread(_monitor, state, project_path)


@router.post("/v1/retrain/{job_id}/pause", operation_id="pause_job")
async def pause(job_id: UUID) -> JobStatusReply:
    """Pause at the next task boundary (in training: the next step, after saving a checkpoint)."""
    return JobStatusReply(**await runs.pause_job(job_id))


@router.post("/v1/retrain/{job_id}/resume", operation_id="resume_job")
async def resume(job_id: UUID) -> JobStatusReply:
    """Resume a paused job, or a crashed one: training continues from its last checkpoint."""
    return JobStatusReply(**await runs.resume_job(job_id))


@router.post("/v1/retrain/{job_id}/cancel", operation_id="cancel_job")
async def cancel(job_id: UUID) -> JobStatusReply:
    """Stop the job; nothing half-written is left (outputs are published atomically, leftovers swept)."""
    return JobStatusReply(**await runs.cancel_job(job_id))
