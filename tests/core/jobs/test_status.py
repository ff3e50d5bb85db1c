"""A job's status follows its flow run's Prefect state (and, while running, its running task)."""

from __future__ import annotations

import pytest

from core.jobs.status import status_of


@pytest.mark.parametrize(
    ("state_type", "name", "tasks", "status"),
    [
        ("SCHEDULED", "AwaitingConcurrencySlot", [], "queued"),
        ("PENDING", "Submitting", [], "queued"),
        ("RUNNING", "Running", ["extract-data-1a2"], "preparing"),
        ("RUNNING", "Running", ["train-adapter-60f"], "training"),
        ("PAUSED", "Suspended", [], "paused"),
        ("COMPLETED", "Completed", [], "completed"),
        ("FAILED", "Failed", [], "failed"),
        ("CRASHED", "Crashed", [], "crashed"),
        ("CANCELLING", "Cancelling", [], "cancelled"),
        ("CANCELLED", "Cancelled", [], "cancelled"),
        (None, None, [], "queued"),
    ],
)
def test_a_job_status_follows_the_prefect_state(state_type, name, tasks, status) -> None:  # type: ignore[no-untyped-def]
    assert status_of(state_type, name, tasks) == status
