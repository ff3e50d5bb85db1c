"""Bodies of the jobs routes (seed 001: fine-tune, status, deploy, validate, retrain)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.jobs.params import (
    AUTO_DEPLOY,
    REPO_PATTERN,
    AutoDeploy,
    ProjectName,
    RetrainParams,
    TrainingChoices,
    Trigger,
)
from core.jobs.status import JobStatus
from core.paths import display
from core.reports import EvalReport


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


class FineTuneRequest(TrainingChoices):
    """Train on a repo (extracted first) or a prepared dataset directory."""

    # the training fields and their defaults are the retrain flow's own (TrainingChoices)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one("repo", "dataset"),
            # use_pissa: true means method pissa; with another method it contradicts itself
            "if": {"required": ["use_pissa"], "properties": {"use_pissa": {"const": True}}},
            "then": {"properties": {"method": {"enum": ["pissa", None]}}},
        },
    )

    repo: str | None = Field(
        None, min_length=1, max_length=2048, pattern=REPO_PATTERN, description="local path or git URL"
    )
    dataset: str | None = Field(None, min_length=1, max_length=1024, description="dataset dir (train.jsonl)")
    use_pissa: bool | None = Field(None, description="same as method=pissa")

    @model_validator(mode="after")
    def _one_source(self) -> FineTuneRequest:
        if (self.repo is None) == (self.dataset is None):
            raise ValueError("give exactly one of repo and dataset")
        if self.use_pissa and self.method not in (None, "pissa"):
            raise ValueError("use_pissa contradicts method")
        return self

    def params(self) -> RetrainParams:
        """The job this request asks for: always trained (a fine-tune is not the monitor's to skip)."""
        fields = self.model_dump(exclude={"use_pissa"}, exclude_none=True)
        fields["method"] = "pissa" if self.use_pissa else self.method
        return RetrainParams(**fields, force=True, trigger="fine-tune")


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

    @classmethod
    def from_report(cls, job_id: str, report: EvalReport, run_dir: Path) -> ValidateReply:
        """The reply for a job whose run directory holds `report` (its `eval.json`)."""
        markdown = run_dir / report.report_path  # eval.md, next to eval.json
        return cls(
            job_id=job_id,
            passed=report.passed,
            metrics=report.metrics.model_dump(),
            base=report.base.model_dump(),
            delta=report.delta,
            report_path=display(markdown, fallback=markdown.name),
        )


class RetrainRequest(_Body):
    """Retrain a project when its monitor says so (or always, with `force`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=exactly_one("project_path", "repo_url"))

    project_path: str | None = Field(
        None, min_length=1, max_length=4096, pattern=REPO_PATTERN, description="a local repository"
    )
    repo_url: str | None = Field(
        None, min_length=1, max_length=2048, pattern=REPO_PATTERN, description="or a git URL"
    )
    project_name: ProjectName = None
    auto_deploy: AutoDeploy = AUTO_DEPLOY
    force: bool = False
    trigger: Trigger = "api"

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
    index_run_id: str | None = Field(
        None,
        description="when no job started: the `index-repo` flow run that brings the repo's index to "
        "HEAD and records this verdict (None: no runner serves it)",
    )
