"""forgeflow's Prefect deployments and the runner process that serves them (`forgeflow runner`).

- `retrain/training`: every training job (fine-tune, retrain, hooks, the schedule). Its
  concurrency limit (`jobs.max_training_runs`, ENQUEUE) is the one place that decides how many
  train at once; the rest wait as `AwaitingConcurrencySlot`, which the API reports as `queued`.
- `benchmark/benchmark`: benchmark runs (`POST /benchmarks/run`), one at a time (ENQUEUE).
- `monitor/scheduled`: checks `jobs.watched_repos` every `jobs.monitor_interval_minutes` and starts
  a training job for each repo the monitor says to retrain (only when the interval is > 0).

Scale-out is configuration: point PREFECT_API_URL at a shared server and start `forgeflow runner`
on each host (or register the same flows to a work pool for workers).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType

from core.bench.params import DEPLOYMENT as BENCHMARK_DEPLOYMENT
from core.bench.params import TAG as BENCHMARK_TAG
from core.jobs.status import INDEX_DEPLOYMENT, JOB_TAG, MONITOR_DEPLOYMENT, TRAINING_DEPLOYMENT
from core.settings import Settings
from flows.benchmark import benchmark_flow
from flows.index import index_repo
from flows.monitor import monitor_repos
from flows.retrain import retrain


def deployments(settings: Settings) -> list[Any]:
    """The runner deployments, configured from settings."""
    # flow runs import their flow by module name, like every forgeflow process: never a file path
    # relative to the runner's directory (the workspace), and never the user's same-named package
    by_module = EntrypointType.MODULE_PATH
    training = retrain.to_deployment(
        name=TRAINING_DEPLOYMENT,
        entrypoint_type=by_module,
        tags=[JOB_TAG],
        description="every forgeflow training job; its concurrency limit is how many train at once",
        concurrency_limit=_queued(settings.jobs.max_training_runs),
    )
    bench = benchmark_flow.to_deployment(
        name=BENCHMARK_DEPLOYMENT,
        entrypoint_type=by_module,
        tags=[BENCHMARK_TAG],
        description="benchmark runs (`POST /benchmarks/run`): one at a time, models one after another",
        # two runs at once would measure each other on shared cores: the rest wait their turn
        concurrency_limit=_queued(1),
    )
    index = index_repo.to_deployment(
        name=INDEX_DEPLOYMENT,
        entrypoint_type=by_module,
        description="a repo's index brought to its HEAD, and the retrain verdict (each commit hooks report)",
    )
    found = [training, bench, index]
    minutes = settings.jobs.monitor_interval_minutes
    if minutes > 0:
        found.append(
            monitor_repos.to_deployment(
                name=MONITOR_DEPLOYMENT,
                entrypoint_type=by_module,
                interval=timedelta(minutes=minutes),
                description="check the watched repos; start a training job where the monitor says so",
            )
        )
    return found


def _queued(limit: int) -> ConcurrencyLimitConfig:
    """At most `limit` runs at once; the others wait in Scheduled (AwaitingConcurrencySlot)."""
    return ConcurrencyLimitConfig(limit=limit, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def serve_deployments(settings: Settings) -> None:
    """Block serving the deployments; runs in the foreground until SIGTERM."""
    serve(*deployments(settings), pause_on_shutdown=False, print_starting_message=False)
