"""What a job is in Prefect's terms: the names of its flow, deployment and tag, and its status.

A job is a flow run of the `retrain/training` deployment (`forgeflow up`'s runner serves it); the
job id is the flow run's id. Its status is read from Prefect alone: the flow run's state, its running
task, and the progress artifacts its tasks update (`core.jobs.progress`), so the API and the Prefect
UI always agree, and an API restart loses nothing.
"""

from __future__ import annotations

from typing import Literal

FLOW = "retrain"
TRAINING_DEPLOYMENT = "training"  # one deployment for every training entry point: one concurrency limit
MONITOR_DEPLOYMENT = "monitor"
DEPLOYMENT_PATH = f"{FLOW}/{TRAINING_DEPLOYMENT}"
JOB_TAG = "forgeflow-job"
INDEX_FLOW = "index-repo"
INDEX_DEPLOYMENT = "refresh"
INDEX_DEPLOYMENT_PATH = f"{INDEX_FLOW}/{INDEX_DEPLOYMENT}"

JobStatus = Literal[
    "queued", "preparing", "training", "paused", "completed", "failed", "cancelled", "crashed"
]


def status_of(state_type: str | None, state_name: str | None, running_tasks: list[str]) -> JobStatus:
    """The job's status from its flow run's state and the names of its running task runs."""
    kind = (state_type or "SCHEDULED").upper()
    if kind in ("SCHEDULED", "PENDING"):
        return "queued"
    if kind == "PAUSED":
        return "paused"
    if kind in ("COMPLETED", "FAILED", "CRASHED"):
        return kind.lower()  # type: ignore[return-value]
    if kind in ("CANCELLED", "CANCELLING"):
        return "cancelled"
    return "training" if any(name.startswith("train-adapter") for name in running_tasks) else "preparing"
