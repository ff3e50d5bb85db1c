"""The benchmark flow: one run of a suite against served models, as a Prefect flow run.

The flow run's id is the run's id everywhere: in the registry database (`BenchmarkStore`), under
`home/benchmarks/<id>/` and in the API's `/benchmarks/runs/{id}`. Its artifacts are a progress bar,
the Markdown summary (with the chart, served by the API) and a table of every level's figures.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core.bench.params import FLOW, BenchParams
from core.jobs.orchestrator import flow_run_id
from core.processes import die_with_parent
from core.settings import get_settings
from tasks.benchmark.run import BenchReport, benchmark_task


@flow(name=FLOW, log_prints=False, retries=0)
def benchmark_flow(params: BenchParams) -> BenchReport:
    """Benchmark `params.models` on `params.suite`; store, chart and summarise the run."""
    die_with_parent()
    settings = get_settings()
    run_id = str(flow_run_id())
    report = benchmark_task(params, settings, run_id)
    rows = [
        {
            "model": r.model,
            "scenario": r.scenario,
            "concurrency": r.concurrency,
            "output tok/s": round(r.output_throughput, 2),
            "req/s": round(r.request_throughput, 3),
            "ttft p50 ms": _round(r.ttft_ms.p50),
            "tpot p50 ms": _round(r.tpot_ms.p50),
            "e2e p95 ms": _round(r.e2e_ms.p95),
            "errors": r.errors,
            "timeouts": r.timeouts,
        }
        for r in report.results
    ]
    create_table_artifact(rows, key="benchmark-results", description=f"benchmark {report.status}")
    summary = (settings.home / "benchmarks" / run_id / "summary.md").read_text(encoding="utf-8")
    chart = f"{settings.api_url}/benchmarks/runs/{run_id}/chart.png"
    create_markdown_artifact(
        f"{summary}\n\n![chart]({chart})\n", key="benchmark-summary", description="summary"
    )
    return report


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
