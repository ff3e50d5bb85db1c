"""Bodies of the benchmarks and system routes (seed 004 shapes, measured as the README defines)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from core.bench.params import ModelRef
from core.bench.store import BenchmarkResultInfo, BenchmarkRunInfo

Level = Annotated[int, Field(ge=1, le=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunConfig(_Body):
    """A run's overrides of its suite (seed 004's `config`, plus what the suite file can say)."""

    iterations: int | None = Field(None, ge=1, le=100_000, description="measured requests per level")
    concurrency: Level | list[Level] | None = Field(
        None, description="one level or a sweep, e.g. [1, 2, 4, 8]"
    )
    timeout: float | None = Field(None, ge=1, le=3_600_000, description="per-request timeout, milliseconds")
    temperature: float | None = Field(None, ge=0, le=2, description="sent as given: 0 is greedy")
    streaming: bool = Field(True, description="always streamed: TTFT and ITL need a stream")
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    rate: float | None = Field(None, gt=0, le=10_000, description="Poisson arrivals per second")
    warmup: int | None = Field(None, ge=0, le=100)
    scenarios: list[Annotated[str, Field(max_length=64)]] | None = Field(None, min_length=1, max_length=64)
    base_url: str | None = Field(None, max_length=2048, description="another OpenAI-compatible server")
    allow_remote: bool = Field(False, description="required for a non-loopback base_url")
    dataset: str | None = Field(None, min_length=1, max_length=1024, description="for the repo suite")
    ignore_eos: bool = Field(True, description="generate exactly max_tokens where the server supports it")


class RunRequest(_Body):
    modelIds: list[ModelRef] = Field(min_length=1, max_length=16, description="registry refs (or names)")  # noqa: N815
    suiteName: str | None = Field(None, max_length=64, description="default: bench.suite")  # noqa: N815
    config: RunConfig = Field(default_factory=RunConfig)


class RunStarted(BaseModel):
    success: bool
    message: str
    run_id: str
    status: str


class ScenarioInfo(BaseModel):
    name: str
    description: str
    source: str
    max_tokens: int
    temperature: float
    requests: int
    concurrency: list[int]
    rate: float | None
    prompts: int


class SuiteInfo(BaseModel):
    name: str
    description: str
    warmup: int
    scenarios: list[ScenarioInfo]


class SuiteList(BaseModel):
    suites: list[SuiteInfo]


class BenchmarkRun(BaseModel):
    id: str
    suite_name: str
    model_ids: list[str]
    config: dict[str, Any]
    hardware_info: dict[str, Any]
    status: str
    source: str
    error: str | None
    summary: dict[str, Any]
    results: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_info(cls, run: BenchmarkRunInfo) -> BenchmarkRun:
        """A stored run under the names of the benchmark API (suite_name, model_ids, ...)."""
        renamed = {"suite_name": run.suite, "model_ids": run.models, "hardware_info": run.info}
        return cls.model_validate(run.model_dump() | renamed | {"completed_at": run.finished_at})


class BenchmarkResult(BaseModel):
    id: int
    run_id: str
    model_id: str
    scenario: str
    concurrency: int
    rate: float | None
    tps: float = Field(description="output tokens/s over the level's wall time")
    ttft: float | None = Field(description="TTFT p50, ms")
    ttft_p95: float | None
    latency_p50: float | None = Field(description="end-to-end latency, ms")
    latency_p95: float | None
    latency_p99: float | None
    tpot_p50: float | None
    itl_p50: float | None
    error_rate: float
    timeout_rate: float
    cpu_avg: float | None = Field(description="percent of one core, serving processes summed")
    ram_avg: float | None = Field(description="MB resident, serving processes summed")
    gpu_avg: float | None
    partial: bool
    metrics: dict[str, Any] = Field(description="everything measured: distributions, goodput, cross-check")

    @classmethod
    def from_info(cls, result: BenchmarkResultInfo) -> BenchmarkResult:
        """A stored result under the names of the benchmark API (model_id, ttft, latency_p50, ...)."""
        stored = result.model_dump()
        renamed = {k.removesuffix("_ms"): v for k, v in stored.items() if k.endswith("_ms")}  # the unit goes
        renamed["ttft"] = renamed.pop("ttft_p50")
        extra = {"model_id": result.model, "ram_avg": result.ram_avg_mb}
        return cls.model_validate(stored | renamed | extra)


class RunPage(BaseModel):
    runs: list[BenchmarkRun]
    total: int
    page: int
    pages: int


class RunDetail(BaseModel):
    run: BenchmarkRun
    results: list[BenchmarkResult]


class ResultList(BaseModel):
    results: list[BenchmarkResult]


class LogEntry(BaseModel):
    timestamp: str
    level: str
    message: str
    task_run_id: str | None


class LogList(BaseModel):
    logs: list[LogEntry]


class SystemStats(BaseModel):
    totalModels: int  # noqa: N815
    runningServices: int  # noqa: N815
    totalRuns: int  # noqa: N815
    lastRun: BenchmarkRun | None  # noqa: N815
    bestTpsModel: dict[str, Any] | None  # noqa: N815
    bestLatencyModel: dict[str, Any] | None  # noqa: N815
