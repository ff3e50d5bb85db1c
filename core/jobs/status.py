"""What a forgeflow job is in Prefect's terms; shared by the retrain flow, the stack and the API.

A job is a flow run of the `retrain/training` deployment (`forgeflow up`'s runner serves it); the
job id is the flow run's id. Its files live in `<home>/jobs/<job id>/` (dataset, run, reports).
Its status is read from Prefect alone: the flow run's state, its running task, and the progress
artifacts its tasks update, so the API and the Prefect UI always agree, and an API restart loses
nothing. A pause request is a Prefect variable the flow reads at each task boundary and each
training step; nothing about a job lives in the API's memory.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from uuid import UUID

from core.settings import Settings

FLOW = "retrain"
TRAINING_DEPLOYMENT = "training"  # one deployment for every training entry point: one concurrency limit
MONITOR_DEPLOYMENT = "monitor"
DEPLOYMENT_PATH = f"{FLOW}/{TRAINING_DEPLOYMENT}"
JOB_TAG = "forgeflow-job"
PROGRESS_KEY = "job-progress"  # the flow's overall progress artifact; training has its own
PID_FILE = "pid"

JobStatus = Literal[
    "queued", "preparing", "training", "paused", "completed", "failed", "cancelled", "crashed"
]

# share of the whole job each stage takes, for `progress` (%); training dominates on a CPU
STAGES: dict[str, tuple[float, float]] = {
    "monitor": (0, 2),
    "extract": (2, 12),
    "validate": (12, 15),
    "train": (15, 75),
    "evaluate": (75, 85),
    "export": (85, 96),
    "promote": (96, 100),
}


def job_dir(settings: Settings, job_id: UUID | str) -> Path:
    """The job's own directory; the id is a UUID, so it never escapes `<home>/jobs/`."""
    return settings.home / "jobs" / str(UUID(str(job_id)))


def pause_variable(job_id: UUID | str) -> str:
    """The Prefect variable whose presence asks the job to pause."""
    return f"forgeflow-pause-{UUID(str(job_id)).hex}"


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


def describe_training(epoch: float, step: int, total: int, loss: float, tokens_per_second: float) -> str:
    """The training progress artifact's description: read back by `parse_training`."""
    return f"epoch {epoch:.2f} · step {step}/{total} · loss {loss:.4f} · {tokens_per_second:.0f} tokens/s"


_TRAINING = re.compile(
    r"epoch (?P<epoch>[\d.]+) · step (?P<step>\d+)/(?P<total>\d+) · loss (?P<loss>[\d.eE+-]+|nan)"
)


@dataclass(frozen=True, slots=True)
class TrainingProgress:
    epoch: float
    step: int
    total: int
    loss: float | None


def parse_training(description: str | None) -> TrainingProgress | None:
    match = _TRAINING.search(description or "")
    if match is None:
        return None
    loss = float(match["loss"])
    return TrainingProgress(
        float(match["epoch"]), int(match["step"]), int(match["total"]), loss if loss == loss else None
    )


def record_process(job: Path) -> None:
    """Write `host pid` of the process running the job: the watchdog checks that it is alive."""
    job.mkdir(parents=True, exist_ok=True)
    (job / PID_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")


def process_gone(job: Path) -> bool:
    """True when the job's recorded process ran on this host and is no longer alive."""
    try:
        host, pid = (job / PID_FILE).read_text().split()
    except (OSError, ValueError):
        return False
    if host != socket.gethostname():
        return False  # another host's worker: Prefect's heartbeats are the judge there
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] == "Z"


def sweep_staging(root: Path) -> list[str]:
    """Remove what an interrupted atomic write left under `root`: every dot-named entry.

    forgeflow stages files and directories under dot names (`core.atomic`) and never publishes one,
    so a dot name inside a job directory is always a leftover. Returns what was removed.
    """
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for path in sorted(root.rglob(".*"), key=lambda p: len(p.parts)):
        if not path.exists() and not path.is_symlink():
            continue  # inside a directory removed just before
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(str(path.relative_to(root)))
    return removed


def stage_progress(stage: str, fraction: float = 0.0) -> float:
    start, end = STAGES[stage]
    return round(start + (end - start) * min(max(fraction, 0.0), 1.0), 1)


def estimate_defaults() -> dict[str, float]:
    """Minutes per stage before any history, measured on a 2-core CPU with SmolLM2 and cpu-quick."""
    return {
        "monitor": 0.1,
        "extract": 1.0,
        "validate": 0.3,
        "train": 6.0,
        "evaluate": 1.5,
        "export": 2.5,
        "promote": 0.3,
    }
