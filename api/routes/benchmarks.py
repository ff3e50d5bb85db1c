"""Benchmarks (seed 004): suites, runs as Prefect flow runs, results, exports, logs, system stats.

`POST /benchmarks/run` checks everything (suite, models, base URL, dataset) and then creates a flow
run of `benchmark/benchmark`; the runner measures, and the flow writes the results to the registry
database and the run's files (results.json, results.csv, summary.md, chart.png), which the routes
here read back. A run's status comes from the database while the flow owns it, and from Prefect
when the flow run ended without saying (cancelled, crashed).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import ValidationError

from api.deps import StateDep
from api.errors import RESPONSES
from api.routes.jobs import IdempotencyKey
from api.schemas.benchmarks import (
    BenchmarkResult,
    BenchmarkRun,
    LogEntry,
    LogList,
    ResultList,
    RunDetail,
    RunPage,
    RunRequest,
    RunStarted,
    ScenarioInfo,
    SuiteInfo,
    SuiteList,
    SystemStats,
)
from core.bench.params import DEPLOYMENT_PATH, TAG, BenchParams, prepare
from core.bench.records import BenchReport
from core.bench.store import BenchmarkResultInfo, BenchmarkRunInfo, BenchmarkRunNotFound, BenchmarkStore
from core.bench.suites import load_suite, suite_names
from core.errors import ForgeflowError, InputError
from core.jobs import orchestrator
from core.settings import Settings

router = APIRouter(tags=["benchmarks"], responses=RESPONSES)
TERMINAL = {"completed", "partial", "failed", "cancelled"}
PREFECT_ENDED = {"CANCELLED": "cancelled", "CRASHED": "failed", "FAILED": "failed"}
Files = dict[int | str, dict[str, Any]]
CSV: Files = {
    200: {
        "description": "RFC 4180 CSV, one row per level",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
}
PNG: Files = {
    200: {
        "description": "the run's chart",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}
JSON_FILE: Files = {
    200: {"description": "the whole run: every level's figures, cold starts, machine", "model": BenchReport}
}
MARKDOWN: Files = {
    200: {"description": "the run's summary", "content": {"text/markdown": {"schema": {"type": "string"}}}}
}


class RunNotFinished(ForgeflowError, status=409, code="BENCHMARK_NOT_FINISHED"):
    """The run has no results file yet (it is still scheduled or running, or it failed)."""


@router.get("/benchmarks/suites", operation_id="list_benchmark_suites")
def list_suites() -> SuiteList:
    """The suites in configs/benchmarks/ and their scenarios."""
    suites = []
    for name in suite_names():
        try:
            suite = load_suite(name)
        except InputError:
            continue  # a broken file is reported when it is run, not by hiding the others
        scenarios = [
            ScenarioInfo.model_validate(
                s.model_dump() | {"prompts": len(s.prompts) if s.source == "prompts" else s.samples}
            )
            for s in suite.scenarios
        ]
        suites.append(
            SuiteInfo(
                name=suite.name, description=suite.description, warmup=suite.warmup, scenarios=scenarios
            )
        )
    return SuiteList(suites=suites)


@router.post("/benchmarks/run", status_code=202, operation_id="run_benchmark")
async def run_benchmark(body: RunRequest, state: StateDep, key: IdempotencyKey = None) -> RunStarted:
    """Check the request, then start a `benchmark` flow run; follow it at `/benchmarks/runs/{id}`."""
    settings = state.settings
    params = _params(body)
    suite, models = await asyncio.to_thread(prepare, params, settings)
    run = await orchestrator.create_flow_run(
        DEPLOYMENT_PATH, params.model_dump(mode="json", exclude_none=True), tags=[TAG], idempotency_key=key
    )
    run_id = str(run.id)
    await asyncio.to_thread(_create_row, settings, run_id, suite.name, models, params)
    return RunStarted(
        success=True,
        message=f"benchmark {run.name} started: {suite.name} on {', '.join(models)}",
        run_id=run_id,
        status="scheduled",
    )


def _params(body: RunRequest) -> BenchParams:
    c = body.config
    if not c.streaming:
        raise InputError("config.streaming must be true: TTFT and inter-token latency need a stream")
    concurrency = [c.concurrency] if isinstance(c.concurrency, int) else c.concurrency
    try:
        return _checked(c, body, concurrency)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise InputError(f"config: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


def _checked(c: Any, body: RunRequest, concurrency: list[int] | None) -> BenchParams:
    same = {"base_url", "allow_remote", "max_tokens", "temperature", "rate", "warmup", "scenarios", "dataset"}
    return BenchParams(
        **c.model_dump(include=same | {"ignore_eos"}),
        models=body.modelIds, suite=body.suiteName, concurrency=concurrency, requests=c.iterations,
        request_timeout_s=None if c.timeout is None else c.timeout / 1000, source="api",
    )  # fmt: skip


def _create_row(settings: Settings, run_id: str, suite: str, models: list[str], params: BenchParams) -> None:
    with BenchmarkStore.from_settings(settings) as store:
        store.create_run(
            run_id, suite=suite, models=models, config=params.model_dump(mode="json"), source="api"
        )


@router.get("/benchmarks/runs", operation_id="list_benchmark_runs")
async def list_runs(
    state: StateDep,
    status: Annotated[
        Literal["scheduled", "running", "completed", "partial", "failed", "cancelled"] | None, Query()
    ] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RunPage:
    """Benchmark runs, newest first."""
    runs, total = await asyncio.to_thread(_list, state.settings, page, limit, status)
    runs = [await _reconciled(state.settings, r) for r in runs]
    return RunPage(
        runs=[BenchmarkRun.from_info(r) for r in runs],
        total=total,
        page=page,
        pages=max(1, math.ceil(total / limit)),
    )


def _list(
    settings: Settings, page: int, limit: int, status: str | None
) -> tuple[list[BenchmarkRunInfo], int]:
    with BenchmarkStore.from_settings(settings) as store:
        return store.list_runs(page=page, limit=limit, status=status)


@router.get("/benchmarks/runs/{run_id}", operation_id="get_benchmark_run")
async def get_run(run_id: uuid.UUID, state: StateDep) -> RunDetail:
    """One run and its results (one per model, scenario and concurrency level)."""
    run = await _reconciled(state.settings, await asyncio.to_thread(_get, state.settings, run_id))
    results = await asyncio.to_thread(_results, state.settings, str(run_id), None)
    return RunDetail(run=BenchmarkRun.from_info(run), results=[BenchmarkResult.from_info(r) for r in results])


@router.get("/benchmarks/results", operation_id="list_benchmark_results")
async def list_results(
    state: StateDep,
    runId: Annotated[uuid.UUID | None, Query()] = None,  # noqa: N803  (seed 004's names)
    modelId: Annotated[str | None, Query(min_length=1, max_length=200)] = None,  # noqa: N803
) -> ResultList:
    """Every stored result, or those of one run and/or one model."""
    if runId is not None:
        await asyncio.to_thread(_get, state.settings, runId)  # 404 for an unknown run
    found = await asyncio.to_thread(_results, state.settings, str(runId) if runId else None, modelId)
    return ResultList(results=[BenchmarkResult.from_info(r) for r in found])


@dataclass(frozen=True)
class RunFile:
    """A file a benchmark run leaves, served as it is (a download unless `inline`)."""

    path: str
    operation_id: str
    name: str  # the route's name: its summary in the OpenAPI document
    file: str
    media: str
    responses: dict[int | str, dict[str, Any]]
    description: str
    inline: bool = False


RUN_FILES = (
    RunFile("/benchmarks/runs/{run_id}/export/json", "export_benchmark_json", "export_json", "results.json",
            "application/json", JSON_FILE,
            "results.json: the run with every level's full figures, the cold starts and the machine."),
    RunFile("/benchmarks/runs/{run_id}/export/csv", "export_benchmark_csv", "export_csv", "results.csv",
            "text/csv; charset=utf-8", CSV,
            "results.csv (RFC 4180): one row per model, scenario and concurrency level."),
    RunFile("/benchmarks/runs/{run_id}/chart.png", "benchmark_chart", "chart", "chart.png", "image/png", PNG,
            "Latency distribution per model, and output tokens/s against concurrency.", inline=True),
    RunFile("/benchmarks/runs/{run_id}/summary.md", "benchmark_summary", "summary", "summary.md",
            "text/markdown; charset=utf-8", MARKDOWN,
            "The Markdown summary comparing the run's models side by side.", inline=True),
)  # fmt: skip


def _serve_file(spec: RunFile) -> None:
    async def endpoint(run_id: uuid.UUID, state: StateDep) -> Response:
        return await _file(state.settings, run_id, spec.file, spec.media, attachment=not spec.inline)

    router.add_api_route(
        spec.path, endpoint, methods=["GET"], name=spec.name, operation_id=spec.operation_id,
        response_class=Response, responses=spec.responses, description=spec.description,
    )  # fmt: skip


for _spec in RUN_FILES:
    _serve_file(_spec)


@router.get("/benchmarks/runs/{run_id}/logs", operation_id="benchmark_logs")
async def logs(
    run_id: uuid.UUID, state: StateDep, limit: Annotated[int, Query(ge=1, le=200)] = 100
) -> LogList:
    """The flow run's log lines, oldest first (from Prefect, as the UI shows them)."""
    await asyncio.to_thread(_get, state.settings, run_id)
    orchestrator.client()  # 503 without a Prefect server
    try:
        found = await orchestrator.post(
            "/logs/filter",
            {"logs": {"flow_run_id": orchestrator.any_of([run_id])}, "sort": "TIMESTAMP_ASC", "limit": limit},
        )
    except httpx.HTTPError as exc:
        raise orchestrator.NoRunner(f"the Prefect server does not answer ({type(exc).__name__})") from None
    return LogList(
        logs=[
            LogEntry(
                timestamp=str(e.get("timestamp")),
                level=_level(e.get("level")),
                message=str(e.get("message", "")),
                task_run_id=e.get("task_run_id"),
            )
            for e in found
        ]
    )


@router.get("/system/stats", operation_id="system_stats")
async def system_stats(state: StateDep) -> SystemStats:
    """Dashboard figures: models, models being served, runs, the last run, the fastest models."""
    stats = await asyncio.to_thread(_stats, state.settings)
    total_models = (await asyncio.to_thread(state.registry.list, page=1, limit=1)).total
    serving = len(await state.hub.loaded())
    last = stats["lastRun"]
    return SystemStats(
        totalModels=total_models,
        runningServices=serving,
        totalRuns=stats["totalRuns"],
        lastRun=BenchmarkRun.from_info(BenchmarkRunInfo.model_validate(last)) if last else None,
        bestTpsModel=_best(stats["bestTpsModel"], "tps"),
        bestLatencyModel=_best(stats["bestLatencyModel"], "latency_p50_ms"),
    )


def _best(found: dict[str, Any] | None, figure: str) -> dict[str, Any] | None:
    if not found:
        return None
    return {"modelId": found.get("model"), figure.removesuffix("_ms"): found.get(figure), **found}


def _stats(settings: Settings) -> dict[str, Any]:
    with BenchmarkStore.from_settings(settings) as store:
        return store.system_stats()


# --- reading the store ---


def _get(settings: Settings, run_id: uuid.UUID) -> BenchmarkRunInfo:
    with BenchmarkStore.from_settings(settings) as store:
        run = store.get_run(str(run_id))
    if run is None:
        raise BenchmarkRunNotFound(f"benchmark run {run_id} does not exist")
    return run


def _results(settings: Settings, run_id: str | None, model: str | None) -> list[BenchmarkResultInfo]:
    with BenchmarkStore.from_settings(settings) as store:
        return store.results(run_id=run_id, model=model)


async def _reconciled(settings: Settings, run: BenchmarkRunInfo) -> BenchmarkRunInfo:
    """A run the database still calls scheduled/running, checked against its flow run in Prefect."""
    if run.status in TERMINAL or not orchestrator.api_url():
        return run
    try:
        flow_run = await orchestrator.get(f"/flow_runs/{run.id}")
    except httpx.HTTPError:
        return run
    state_type = ((flow_run or {}).get("state") or {}).get("type")
    ended = PREFECT_ENDED.get(str(state_type))
    if ended is None:
        return run
    message = ((flow_run or {}).get("state") or {}).get("message") or f"the flow run ended {state_type}"

    def mark() -> BenchmarkRunInfo:
        with BenchmarkStore.from_settings(settings) as store:
            current = store.get_run(run.id)
            if current is not None and current.status in TERMINAL:
                return current  # the flow wrote its own end meanwhile
            return store.set_status(run.id, ended, error=str(message)[:1000])

    return await asyncio.to_thread(mark)


async def _file(
    settings: Settings, run_id: uuid.UUID, name: str, media: str, attachment: bool = True
) -> Response:
    """One of a run's files; the registry lookup and the read run off the event loop, as every route's do."""
    return await asyncio.to_thread(_read_file, settings, run_id, name, media, attachment)


def _read_file(settings: Settings, run_id: uuid.UUID, name: str, media: str, attachment: bool) -> Response:
    run = _get(settings, run_id)
    path: Path = settings.home / "benchmarks" / str(run_id) / name
    if not path.is_file():
        raise RunNotFinished(f"benchmark run {run_id} has no {name} yet (status {run.status})")
    headers = (
        {"Content-Disposition": f'attachment; filename="benchmark-{run_id}-{name}"'} if attachment else {}
    )
    return Response(path.read_bytes(), media_type=media, headers=headers)


def _level(value: Any) -> str:
    names = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
    return names.get(int(value), str(value)) if isinstance(value, int | float) else str(value)
