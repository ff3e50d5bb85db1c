"""A job's progress, as structured data from the task that measures it to `GET /status/{job_id}`.

Two Prefect progress artifacts carry it, so the Prefect UI shows the same bar the API reports:
the job's own (`job-progress`: the stage and the percent of the whole job) and training's
(`training-progress`: percent of the steps). Each artifact's description is the human line the UI
shows; the figures themselves travel in its metadata, one key per field, and are read back with
the same pydantic model that wrote them. Nothing is parsed out of a sentence.
"""

from __future__ import annotations

from typing import TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)
JOB_PROGRESS_KEY = "job-progress"
TRAINING_PROGRESS_KEY = "training-progress"

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


class JobStage(BaseModel):
    """Where the job is: its stage and what that stage is doing."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    doing: str

    def describe(self) -> str:
        return f"{self.stage}: {self.doing}"


class TrainingProgress(BaseModel):
    """Training's figures at its last logged step."""

    model_config = ConfigDict(extra="forbid")

    epoch: float
    step: int
    total: int
    loss: float | None = None  # None until the first loss is logged (and for a NaN loss)
    tokens_per_second: float | None = None
    ended: str | None = None  # how training ended, once it has: completed, paused, cached

    def describe(self) -> str:
        loss = "-" if self.loss is None else f"{self.loss:.4f}"
        line = f"epoch {self.epoch:.2f} · step {self.step}/{self.total} · loss {loss}"
        line += f" · {self.tokens_per_second:.0f} tokens/s" if self.tokens_per_second is not None else ""
        return line + (f" · {self.ended} at step {self.step}" if self.ended else "")

    @property
    def percent(self) -> float:
        return min(100.0, 100.0 * self.step / max(self.total, 1))


def stage_progress(stage: str, fraction: float = 0.0) -> float:
    """Percent of the whole job when `stage` is `fraction` done."""
    start, end = STAGES[stage]
    return round(start + (end - start) * min(max(fraction, 0.0), 1.0), 1)


def to_metadata(record: BaseModel) -> dict[str, str]:
    """A record as a Prefect artifact's metadata (a string per field; None fields left out)."""
    return {k: str(v) for k, v in record.model_dump(mode="json").items() if v is not None}


def from_metadata(kind: type[M], metadata: dict[str, str] | None) -> M | None:
    """The record of `kind` an artifact's metadata holds; None when it holds none (not started yet)."""
    if not metadata:
        return None
    try:
        return kind.model_validate(metadata)
    except ValidationError:
        return None


def publish(artifact_id: UUID, percent: float, record: JobStage | TrainingProgress) -> None:
    """Update a progress artifact: the bar, the UI's line, and the record it was drawn from."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactUpdate

    update = ArtifactUpdate(data=float(percent), description=record.describe(), metadata_=to_metadata(record))
    with get_client(sync_client=True) as client:
        client.update_artifact(artifact_id=artifact_id, artifact=update)


def create(key: str, record: JobStage | TrainingProgress | None = None) -> UUID:
    """A new progress artifact of the running flow or task, at 0 %."""
    from prefect.artifacts import create_progress_artifact

    description = record.describe() if record is not None else f"{key}: starting"
    artifact = create_progress_artifact(0.0, key=key, description=description)
    return UUID(str(artifact))


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
