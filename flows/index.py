"""The `index-repo` flow: bring a project's repo index to its HEAD, and say whether to retrain.

Run by the `index-repo/refresh` deployment for every commit the git hooks report (through
`POST /v1/retrain`), so each commit leaves a visible run: the refresh, and the monitor's verdict.
`forgeflow index build` runs the same task without Prefect.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from core.jobs.params import IndexParams
from core.jobs.status import INDEX_FLOW
from core.reports import IndexReport
from core.settings import get_settings
from tasks.extract.index import index_task
from tasks.monitor.run import check_repo_task, resolve_repo_task


class IndexRunReport(BaseModel):
    """What one `index-repo` run did."""

    repo: str
    index: IndexReport
    should_retrain: bool | None = None
    reason: str | None = None


@flow(name=INDEX_FLOW, log_prints=False)
def index_repo(params: IndexParams) -> IndexRunReport:
    """Refresh the repo's index (incrementally) and, with `check_retrain`, record the monitor's verdict."""
    repo, trigger = params.repo, params.trigger
    settings = get_settings()
    logger = get_run_logger()
    handle = resolve_repo_task(repo, settings)
    report = index_task(str(handle.path), handle.project_id, settings, handle.display)
    logger.info(
        "%s (%s): index %s at %s, %d files changed, %.2fs",
        *(handle.display, trigger, report.mode, report.commit[:12]),
        *(report.changed_files, report.elapsed_seconds),
    )
    result = IndexRunReport(repo=handle.display, index=report)
    if params.check_retrain:
        verdict = check_repo_task(handle, settings)
        result.should_retrain, result.reason = verdict.should_retrain, verdict.reason
        logger.info("retrain: %s (%s)", "yes" if verdict.should_retrain else "no", verdict.reason)
    create_markdown_artifact(
        key="index-repo",
        markdown=(
            f"**{handle.display}** at `{report.commit[:12]}` ({trigger}): index {report.mode}, "
            f"{report.entries} entries in {report.files} files, {report.changed_files} changed, "
            f"{report.elapsed_seconds:.2f} s."
            + (
                ""
                if result.reason is None
                else f"\n\nRetrain: **{'yes' if result.should_retrain else 'no'}**, {result.reason}."
            )
        ),
        description="the repo index refresh and the retrain verdict",
    )
    return result
