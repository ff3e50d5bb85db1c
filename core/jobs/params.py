"""A job's parameters: the retrain flow's `RetrainParams`, and the field types the API's bodies share.

`POST /v1/fine-tune` and `POST /v1/retrain` build their bodies from these definitions instead of
copying them, so a default or a rule cannot differ between what the API accepts and what the flow
runs (`tests/core/jobs/test_params.py` holds them to that).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.config import Method

# every way a job can be started; the API, the hooks and the schedule name theirs
Trigger = Literal["api", "fine-tune", "post-commit", "post-merge", "post-receive", "schedule", "cli"]
# a local path or a git URL: no whitespace anywhere, and no leading '-' git could read as an option
REPO_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f-][^\s\x00-\x1f\x7f-\x9f]*$"
# A new champion is served at once: a job that wins the gate but leaves the old model loaded would
# surprise everyone who asked for it. `auto_deploy: false` only moves the alias (loaded on first use).
AUTO_DEPLOY = True

ProjectName = Annotated[
    str | None,
    Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="registry name; default: the repo's name"),
]
BaseModelRef = Annotated[
    str | None,
    Field(min_length=1, max_length=1024, description="HF id, local path or GGUF; default: settings"),
]
Profile = Annotated[
    str | None,
    Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="configs/train/<name>; default: jobs.profile"),
]
Epochs = Annotated[float | None, Field(gt=0, le=100)]
MaxSteps = Annotated[int | None, Field(ge=1, le=10_000_000)]
LearningRate = Annotated[float | None, Field(gt=0, le=1)]
Rank = Annotated[int | None, Field(ge=1, le=1024)]
Promote = Annotated[bool, Field(description="register the model; make it the champion when it wins the gate")]
AutoDeploy = Annotated[
    bool, Field(description="load the new champion on the running API at once (else on first use)")
]


class TrainingChoices(BaseModel):
    """How to train and what to do with the result: the same fields for the flow and the API."""

    model_config = ConfigDict(extra="forbid")

    project_name: ProjectName = None
    base_model: BaseModelRef = None
    profile: Profile = None
    method: Method | None = None
    epochs: Epochs = None
    max_steps: MaxSteps = None
    learning_rate: LearningRate = None
    rank: Rank = None
    promote: Promote = True
    auto_deploy: AutoDeploy = AUTO_DEPLOY


class RetrainParams(TrainingChoices):
    """One job: which repo (or prepared dataset), which base model, and how to train it."""

    repo: str | None = Field(None, min_length=1, max_length=2048, description="local path or git URL")
    dataset: str | None = Field(None, min_length=1, max_length=1024, description="a prepared dataset dir")
    force: bool = Field(False, description="train even when the monitor says nothing changed")
    trigger: Trigger = "api"

    @model_validator(mode="after")
    def _one_source(self) -> RetrainParams:
        if (self.repo is None) == (self.dataset is None):
            raise ValueError("give exactly one of repo and dataset")
        return self

    def flow_parameters(self) -> dict[str, Any]:
        """The `params` of a flow run: only what was set, so the flow's defaults stay the defaults."""
        return self.model_dump(mode="json", exclude_none=True)


class IndexParams(BaseModel):
    """The parameters of an `index-repo` run: which repo, why, and whether to ask the monitor too."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(
        min_length=1, max_length=4096, pattern=REPO_PATTERN, description="a local path or a git URL"
    )
    trigger: Trigger = Field("cli", description="what asked: post-commit, post-merge, schedule, ...")
    check_retrain: bool = Field(True, description="record the monitor's verdict on retraining as well")

    def flow_parameters(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
