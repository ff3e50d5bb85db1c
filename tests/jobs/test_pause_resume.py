"""Pause, resume, cancel and crash on the real stack: the run suspends, resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from core.jobs.directory import JobDir
from tests.helpers.stack import Stack
from tests.jobs.conftest import fine_tune

PAUSED_FOR_S = 305  # longer than 5 minutes: past Prefect's lease renewals and any heartbeat window


def _train_json(stack: Stack, job: str) -> dict:
    return json.loads((stack.home / "jobs" / job / "run" / "train.json").read_text())


@pytest.mark.slow
def test_a_job_paused_for_over_five_minutes_resumes_from_its_checkpoint(
    stack: Stack, job_dataset: Path
) -> None:
    job = fine_tune(stack, job_dataset, max_steps=80, promote=False).json()["job_id"]
    stack.wait_for(job, lambda s: s["status"] == "training" and (s["current_step"] or 0) >= 2)
    reply = httpx.post(f"{stack.api}/v1/retrain/{job}/pause", timeout=30)
    assert reply.status_code == 200, reply.text
    paused = stack.wait(job, until=("paused",), timeout=120)
    paused_at = time.monotonic()
    assert paused["state"] == "Suspended"
    step = paused["current_step"]
    assert step is not None and 2 <= step < 80
    # suspended, not blocked: the process is gone and its training slot is free for another job
    deadline = time.monotonic() + 60  # the state is set first, then the process exits
    while not JobDir(stack.home / "jobs" / job).process_gone():
        assert time.monotonic() < deadline, "the suspended job's process is still running"
        time.sleep(0.5)
    other = fine_tune(stack, job_dataset, promote=False).json()["job_id"]
    assert stack.wait(other)["status"] == "completed"
    time.sleep(max(0.0, PAUSED_FOR_S - (time.monotonic() - paused_at)))
    still = stack.status(job)
    assert still["status"] == "paused", still
    assert httpx.post(f"{stack.api}/v1/retrain/{job}/resume", timeout=30).status_code == 200
    done = stack.wait(job, timeout=600)
    assert done["status"] == "completed", done
    train = _train_json(stack, job)
    assert train["resumed_from_step"] == step and train["steps"] == 80


def test_cancel_stops_a_running_job_and_leaves_nothing_half_written(stack: Stack, job_dataset: Path) -> None:
    job = fine_tune(stack, job_dataset, max_steps=3000, promote=False).json()["job_id"]
    stack.wait_for(job, lambda s: s["status"] == "training" and (s["current_step"] or 0) >= 1)
    assert httpx.post(f"{stack.api}/v1/retrain/{job}/cancel", timeout=30).status_code == 200
    stack.wait_state(job, "Cancelled")
    folder = stack.home / "jobs" / job
    assert JobDir(folder).process_gone() or not (folder / "pid").exists()
    leftovers = [p for p in folder.rglob(".*")]
    assert leftovers == [], leftovers
    assert not (folder / "run" / "train.json").exists()  # never published: training did not finish
    again = httpx.post(f"{stack.api}/v1/retrain/{job}/cancel", timeout=30)
    assert again.status_code == 409


def test_a_queued_job_is_cancelled_at_once(stack: Stack, job_dataset: Path) -> None:
    blocker = fine_tune(stack, job_dataset, max_steps=3000, promote=False).json()["job_id"]
    # the blocker must hold the training slot first: created together, either may get it
    stack.wait_for(blocker, lambda s: s["status"] in ("preparing", "training"))
    queued = fine_tune(stack, job_dataset, promote=False).json()["job_id"]
    try:
        assert stack.status(queued)["status"] == "queued"
        reply = httpx.post(f"{stack.api}/v1/retrain/{queued}/cancel", timeout=30)
        assert reply.status_code == 200 and reply.json()["state"] == "Cancelled"
    finally:
        httpx.post(f"{stack.api}/v1/retrain/{blocker}/cancel", timeout=30)
        stack.wait_state(blocker, "Cancelled")


def test_a_killed_runner_gives_crashed_and_a_resume_continues(stack: Stack, job_dataset: Path) -> None:
    job = fine_tune(stack, job_dataset, max_steps=40, promote=False).json()["job_id"]
    # cpu-quick checkpoints every 10 steps: past step 12 there is one to continue from
    stack.wait_for(job, lambda s: s["status"] == "training" and (s["current_step"] or 0) >= 12)
    runner = stack.state()["parts"]["runner"]["pid"]
    os.kill(runner, signal.SIGKILL)
    crashed = stack.wait(job, until=("crashed",), timeout=120)
    assert "resume" in (crashed["error"] or "")
    # the supervisor restarts the runner; resuming reschedules the job onto it
    deadline = time.monotonic() + 120
    while (
        stack.state()["parts"]["runner"]["pid"] in (None, runner)
        or not stack.state()["parts"]["runner"]["ready"]
    ):
        assert time.monotonic() < deadline, stack.state()
        time.sleep(1)
    assert httpx.post(f"{stack.api}/v1/retrain/{job}/resume", timeout=30).status_code == 200
    done = stack.wait(job, timeout=600)
    assert done["status"] == "completed", done
    train = _train_json(stack, job)
    assert train["resumed_from_step"] is not None and train["resumed_from_step"] >= 10
    assert train["steps"] == 40
