"""What a benchmark measures, as data: one request's record, a distribution, one scenario's result.

Definitions (the same as AIPerf's and `vllm bench serve`'s, so numbers compare):
- TTFT: the request sent -> its first chunk carrying content.
- e2e latency: the request sent -> the stream's end (`[DONE]`).
- output tokens: the server's `usage.completion_tokens`, never stream chunks nor a re-tokenization.
- TPOT: (e2e - TTFT) / (output tokens - 1), for requests with more than one output token.
- ITL: every gap between two consecutive content chunks (one distribution over all of them).
- output tokens/s of a request: output tokens / e2e.
Aggregates are over per-request values, never over averages of averages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

PERCENTILES = (50, 90, 95, 99)


class RequestRecord(BaseModel):
    """One measured request. Times are seconds; `sent_at` is relative to the level's start."""

    model: str
    scenario: str
    concurrency: int
    index: int
    ok: bool
    error: str | None = None  # one line; None when ok
    timed_out: bool = False  # counted as a timeout, not an error
    sent_at: float = 0.0
    ttft_s: float | None = None
    e2e_s: float | None = None
    output_tokens: int | None = None  # usage.completion_tokens; None: the server sent no usage
    prompt_tokens: int | None = None
    chunks: int = 0  # content chunks seen (for the ITL count; never used as a token count)
    itl_s: list[float] = Field(default_factory=list)
    server_timings: dict[str, Any] | None = None  # llama.cpp `timings` / Ollama eval_count+eval_duration

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.e2e_s is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def tokens_per_s(self) -> float | None:
        if not self.e2e_s or self.output_tokens is None:
            return None
        return self.output_tokens / self.e2e_s


class Dist(BaseModel):
    """A distribution of per-request values: mean and percentiles.

    A percentile needs enough samples to differ from the max: p90 needs 10, p95 20, p99 100 (and
    p50 two). With fewer, the percentile is None and named in `insufficient`.
    """

    n: int
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    insufficient: list[str] = Field(default_factory=list)  # e.g. ["p99"]: too few samples


class Targets(BaseModel):
    """Goodput: a request counts when it succeeded and met every target that is set (milliseconds)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None


class CrossCheck(BaseModel):
    """The client's figures against the backend's own timings, where the backend reports them."""

    requests: int  # requests whose reply carried server timings
    server_decode_tps_mean: float | None = None  # backend: predicted tokens / decode time
    client_decode_tps_mean: float | None = None  # client: 1 / TPOT over the same requests
    decode_tps_diff_pct: float | None = None  # (client - server) / server * 100
    server_tokens_match: int | None = None  # requests whose server token count equals usage


class ScenarioResult(BaseModel):
    """One (model, scenario, concurrency) level of a run: counts, distributions, throughput."""

    model: str
    scenario: str
    concurrency: int
    rate: float | None = None  # requests/s (Poisson) or None: as fast as `concurrency` allows
    max_tokens: int
    requests: int  # sent (warm-up excluded)
    completed: int
    errors: int
    timeouts: int
    error_rate: float
    timeout_rate: float
    usage_missing: int  # successful requests whose server sent no usage
    wall_s: float
    request_throughput: float  # completed / wall
    output_throughput: float  # output tokens of completed requests / wall
    goodput: float | None = None  # requests/s meeting every target; None: no target set
    goodput_fraction: float | None = None
    ttft_ms: Dist
    tpot_ms: Dist
    itl_ms: Dist
    e2e_ms: Dist
    tokens_per_s: Dist  # per request
    output_tokens: Dist
    cross_check: CrossCheck | None = None
    cpu_avg: float | None = None  # percent of one core, the serving processes summed
    cpu_max: float | None = None
    ram_avg_mb: float | None = None
    ram_max_mb: float | None = None
    gpu_avg: float | None = None  # percent utilisation; None: no GPU
    partial: bool = False  # the time bound or a dead backend cut this level short
    notes: list[str] = Field(default_factory=list)


class ColdStart(BaseModel):
    """The first request a model got in a run, and whether it had to be loaded for it."""

    loaded_before: bool | None  # None: the server does not say
    ok: bool
    ttft_ms: float | None
    e2e_ms: float | None
    error: str | None = None


class BenchReport(BaseModel):
    """A finished run: its status, the results per level, where its files are (results.json)."""

    run_id: str
    status: Literal["completed", "partial", "failed"]
    suite: str
    models: list[str]
    endpoint: str
    results: list[ScenarioResult]
    cold: dict[str, ColdStart] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    out_dir: str

    def per_model(self) -> dict[str, dict[str, Any] | None]:
        """Per model: best output tokens/s, and tokens/s, TTFT and e2e p50 at concurrency 1."""
        per: dict[str, dict[str, Any] | None] = {}
        for model in self.models:
            mine = [r for r in self.results if r.model == model and r.completed]
            if not mine:
                per[model] = None
                continue
            c1 = [r for r in mine if r.concurrency == 1] or mine
            per[model] = {
                "tps": max(r.output_throughput for r in mine),
                "tps_c1": _mean([r.output_throughput for r in c1]),
                "ttft_p50_ms": _mean([r.ttft_ms.p50 for r in c1 if r.ttft_ms.p50 is not None]),
                "latency_p50_ms": _mean([r.e2e_ms.p50 for r in c1 if r.e2e_ms.p50 is not None]),
                "error_rate": _mean([r.error_rate for r in mine]),
            }
        return per


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
