"""The scheduled monitor: check each watched repo; start a training job where the monitor says so."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from core.jobs.params import RetrainParams
from core.jobs.status import DEPLOYMENT_PATH
from core.settings import get_settings
from tasks.monitor.run import monitor_repo_task


@flow(name="monitor", log_prints=False)
def monitor_repos() -> dict[str, str]:
    """For every `jobs.watched_repos` entry: the monitor's decision, and the job it started if any."""
    settings = get_settings()
    logger = get_run_logger()
    started: dict[str, str] = {}
    for repo in settings.jobs.watched_repos:
        report = monitor_repo_task(repo, settings)
        if not report.should_retrain:
            logger.info("%s: %s", repo, report.reason)
            continue
        run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: a FlowRun
            DEPLOYMENT_PATH,
            parameters={"params": RetrainParams(repo=repo, trigger="schedule").flow_parameters()},
            timeout=0,
            as_subflow=False,
        )
        started[repo] = str(run.id)
        logger.info("%s: %s → job %s", repo, report.reason, run.id)
    return started
