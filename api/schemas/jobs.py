"""Bodies of the jobs routes (seed 001: fine-tune, status, deploy, validate, retrain)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.config import Method
from core.jobs.status import JobStatus

ProjectName = Field(None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="registry name of the model")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def exactly_one(a: str, b: str) -> dict[str, Any]:
    """JSON Schema for "one of a and b, as a string, and not the other": `required` alone lets null in."""
    return {
        "anyOf": [
            {"required": [x], "properties": {x: {"type": "string"}, y: {"type": "null"}}}
            for x, y in ((a, b), (b, a))
        ]
    }


# a local path or a git URL: no whitespace anywhere, and no leading '-' git could read as an option
REPO_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f-][^\s\x00-\x1f\x7f-\x9f]*$"


class FineTuneRequest(_Body):
    """Train on a repo (extracted first) or a prepared dataset directory."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one("repo", "dataset"),
            # use_pissa: true means method pissa; with another method it contradicts itself
            "if": {"required": ["use_pissa"], "properties": {"use_pissa": {"const": True}}},
            "then": {"properties": {"method": {"enum": ["pissa", None]}}},
        },
    )

    project_name: str | None = ProjectName
    repo: str | None = Field(
        None, min_length=1, max_length=2048, pattern=REPO_PATTERN, description="local path or git URL"
    )
    dataset: str | None = Field(None, min_length=1, max_length=1024, description="dataset dir (train.jsonl)")
    base_model: str | None = Field(None, min_length=1, max_length=1024, description="default: settings")
    profile: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="configs/train/<name>"
    )
    method: Method | None = None
    use_pissa: bool | None = Field(None, description="seed 001: same as method=pissa")
    epochs: float | None = Field(None, gt=0, le=100)
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    learning_rate: float | None = Field(None, gt=0, le=1)
    rank: int | None = Field(None, ge=1, le=1024)
    promote: bool = Field(True, description="register it; make it the champion when it wins the gate")
    auto_deploy: bool = Field(False, description="serve the new champion on this API when it wins")

    @model_validator(mode="after")
    def _one_source(self) -> FineTuneRequest:
        if (self.repo is None) == (self.dataset is None):
            raise ValueError("give exactly one of repo and dataset")
        if self.use_pissa and self.method not in (None, "pissa"):
            raise ValueError("use_pissa contradicts method")
        return self


class JobCreated(BaseModel):
    job_id: str
    status: JobStatus
    message: str


class JobStatusReply(BaseModel):
    job_id: str
    name: str
    status: JobStatus
    state: str | None = Field(description="the Prefect state's name")
    stage: str | None
    progress: float = Field(ge=0, le=100)
    current_epoch: float | None
    current_step: int | None
    total_steps: int | None
    loss: float | None
    created_at: datetime | None
    updated_at: datetime | None
    error: str | None
    message: str | None
    queue_position: int | None = Field(description="1 = next to start; only while queued")
    parameters: dict[str, Any]


class JobPage(BaseModel):
    jobs: list[JobStatusReply]
    total: int
    page: int
    pages: int


class DeployReply(BaseModel):
    job_id: str
    success: bool
    model_name: str
    gguf_path: str


class ValidateReply(BaseModel):
    job_id: str
    passed: bool
    metrics: dict[str, float]
    base: dict[str, Any]
    delta: dict[str, float | None]
    report_path: str


class RetrainRequest(_Body):
    """Retrain a project when its monitor says so (or always, with `force`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=exactly_one("project_path", "repo_url"))

    project_path: str | None = Field(
        None, min_length=1, max_length=4096, pattern=REPO_PATTERN, description="a local repository"
    )
    repo_url: str | None = Field(
        None, min_length=1, max_length=2048, pattern=REPO_PATTERN, description="or a git URL"
    )
    project_name: str | None = ProjectName
    auto_deploy: bool = True
    force: bool = False
    trigger: Literal["api", "post-commit", "post-merge", "post-receive", "schedule", "cli"] = "api"

    @model_validator(mode="after")
    def _one_source(self) -> RetrainRequest:
        if (self.project_path is None) == (self.repo_url is None):
            raise ValueError("give exactly one of project_path and repo_url")
        return self


class PlanStep(BaseModel):
    id: str
    name: str
    estimated_minutes: float


class Plan(BaseModel):
    plan: list[PlanStep]
    estimated_duration_minutes: float


class RetrainReply(BaseModel):
    triggered: bool
    reason: str
    plan: Plan
    job_id: str | None
