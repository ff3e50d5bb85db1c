"""The job contract: status from Prefect's state, the training progress line, staging leftovers, pids."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from core.jobs.status import (
    describe_training,
    job_dir,
    parse_training,
    pause_variable,
    process_gone,
    record_process,
    status_of,
    sweep_staging,
)
from core.settings import Settings


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


def test_the_training_line_reads_back_what_it_wrote() -> None:
    line = describe_training(1.25, 7, 40, 2.3456, 812.4)
    got = parse_training(line + " · paused at step 7")
    assert got is not None and (got.epoch, got.step, got.total, got.loss) == (1.25, 7, 40, 2.3456)
    assert parse_training("training: starting") is None and parse_training(None) is None
    assert parse_training(describe_training(0.1, 1, 2, float("nan"), 1.0)).loss is None  # type: ignore[union-attr]


def test_a_job_dir_only_takes_a_uuid(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "ws", allowed_roots=[tmp_path])
    job = uuid4()
    assert job_dir(settings, job) == settings.home / "jobs" / str(job)
    with pytest.raises(ValueError):
        job_dir(settings, "../../etc")
    assert pause_variable(job) == f"forgeflow-pause-{job.hex}"


def test_sweep_removes_only_dot_named_staging_leftovers(tmp_path: Path) -> None:
    (tmp_path / "run" / ".adapter.x1y2z3").mkdir(parents=True)
    (tmp_path / "run" / ".adapter.x1y2z3" / "weights").write_text("half")
    (tmp_path / "run" / ".train.json.abc.tmp").write_text("{")
    (tmp_path / "run" / "train.json").write_text("{}")
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "train.jsonl").write_text("x\n")
    removed = sweep_staging(tmp_path)
    assert sorted(removed) == ["run/.adapter.x1y2z3", "run/.train.json.abc.tmp"]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "dataset",
        "dataset/train.jsonl",
        "run",
        "run/train.json",
    ]


def test_a_dead_process_is_gone_a_live_one_is_not(tmp_path: Path) -> None:
    record_process(tmp_path)
    assert not process_gone(tmp_path)  # this test's own process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (tmp_path / "pid").write_text(f"{socket.gethostname()} {child.pid}\n")
    assert process_gone(tmp_path)
    (tmp_path / "pid").write_text(f"another-host {os.getpid()}\n")
    assert not process_gone(tmp_path)  # another host's job is Prefect's heartbeats' to judge
    (tmp_path / "pid").unlink()
    assert not process_gone(tmp_path)  # nothing recorded yet: not started, not crashed
