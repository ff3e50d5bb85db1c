"""The prepare-data flow: monitor → extract → validate, with progress and the report in the Prefect UI."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import BaseModel, ConfigDict, Field

from core.reports import PrepareDataReport
from core.settings import get_settings
from tasks.extract.run import extract_task
from tasks.monitor.run import check_repo_task, resolve_repo_task
from tasks.validate.run import validate_task

PROGRESS_KEY = "prepare-data-progress"


class PrepareDataParams(BaseModel):
    """What to prepare, and whether to do it at all."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(".", min_length=1, max_length=2048, description="local path or git URL")
    out_dir: str = Field("data/dataset", min_length=1, max_length=1024)
    only_if_changed: bool = Field(False, description="stop after monitoring unless it says retrain")
    dry_run: bool = Field(False, description="monitor only; write nothing")


def _stage_progress(artifact: UUID, start: float, span: float) -> Callable[[str, int, int], None]:
    def report(stage: str, done: int, total: int) -> None:
        update_progress_artifact(artifact, start + span * done / max(total, 1))

    return report


@flow(name="prepare-data", log_prints=False)
def prepare_data(params: PrepareDataParams | None = None) -> PrepareDataReport:
    """Decide, extract and validate a repository's dataset; stops with the failed expectations named."""
    params = params or PrepareDataParams()
    settings = get_settings()
    logger = get_run_logger()
    # sync context: create_progress_artifact returns the id, not a coroutine
    artifact = cast(
        UUID, create_progress_artifact(0.0, key=PROGRESS_KEY, description="monitor → extract → validate")
    )
    handle = resolve_repo_task(params.repo, settings)
    report = check_repo_task(handle, settings)
    logger.info("monitor: %s", report.reason)
    update_progress_artifact(artifact, 10.0)
    result = PrepareDataReport(monitor=report)
    if params.dry_run or (params.only_if_changed and not report.should_retrain):
        update_progress_artifact(artifact, 100.0)
        return result
    result.extract = extract_task(
        str(handle.path),
        params.out_dir,
        settings,
        handle.display,
        progress=_stage_progress(artifact, 10.0, 70.0),
    )
    update_progress_artifact(artifact, 80.0)
    result.validation = validate_task(params.out_dir, settings)
    update_progress_artifact(artifact, 100.0)
    return result
