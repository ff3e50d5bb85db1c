"""distribution and summarize on hand-made records: percentile rules, counts, throughput, goodput."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from core.bench.records import RequestRecord, ScenarioResult, Targets
from tasks.benchmark.stats import ResourceSamples, distribution, summarize


def _ok(index: int, ttft: float = 0.1, e2e: float = 1.1, tokens: int | None = 11, **kw: Any) -> RequestRecord:
    return RequestRecord(
        model="m",
        scenario="s",
        concurrency=1,
        index=index,
        ok=True,
        ttft_s=ttft,
        e2e_s=e2e,
        output_tokens=tokens,
        **kw,
    )


def _failed(index: int, timed_out: bool) -> RequestRecord:
    return RequestRecord(
        model="m", scenario="s", concurrency=1, index=index, ok=False, error="boom", timed_out=timed_out
    )


def _summary(records: list[RequestRecord], wall_s: float = 2.0, **kw: Any) -> ScenarioResult:
    return summarize(records, model="m", scenario="s", concurrency=1, max_tokens=64, wall_s=wall_s, **kw)


def test_p95_is_insufficient_with_19_samples_and_present_with_20() -> None:
    nineteen = distribution([float(i) for i in range(19)])
    assert nineteen.p95 is None and "p95" in nineteen.insufficient
    assert nineteen.p90 is not None and "p99" in nineteen.insufficient
    twenty = distribution([float(i) for i in range(20)])
    assert twenty.p95 is not None and "p95" not in twenty.insufficient
    assert twenty.p95 < twenty.max  # type: ignore[operator]


def test_p99_needs_exactly_100_samples() -> None:
    assert distribution([1.0] * 99).p99 is None
    assert distribution([1.0] * 100).p99 == 1.0


def test_empty_input_has_nothing_and_every_percentile_insufficient() -> None:
    dist = distribution([])
    assert dist.n == 0 and dist.mean is None and dist.min is None and dist.max is None
    assert dist.insufficient == ["p50", "p90", "p95", "p99"]


def test_percentiles_are_ordered_and_equal_numpy_linear_interpolation() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(0, 1) for _ in range(200)]
    dist = distribution(values)
    assert dist.n == 200 and dist.insufficient == []
    assert dist.min <= dist.p50 <= dist.p90 <= dist.p95 <= dist.p99 <= dist.max  # type: ignore[operator]
    for q in (50, 90, 95, 99):
        assert getattr(dist, f"p{q}") == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    assert dist.mean == pytest.approx(sum(values) / 200)


def test_tpot_is_decode_time_over_tokens_after_the_first() -> None:
    result = _summary([_ok(0, ttft=0.2, e2e=1.2, tokens=11)])
    assert result.tpot_ms.mean == pytest.approx(100.0)  # (1.2 - 0.2) / (11 - 1) s
    assert result.ttft_ms.mean == pytest.approx(200.0)
    assert result.e2e_ms.mean == pytest.approx(1200.0)
    assert result.tokens_per_s.mean == pytest.approx(11 / 1.2)


def test_errors_and_timeouts_are_each_counted_once() -> None:
    records = [_ok(0), _failed(1, timed_out=True), _failed(2, timed_out=False), _failed(3, timed_out=True)]
    result = _summary(records)
    assert (result.requests, result.completed, result.errors, result.timeouts) == (4, 1, 1, 2)
    assert result.error_rate == pytest.approx(0.25) and result.timeout_rate == pytest.approx(0.5)
    assert result.request_throughput == pytest.approx(0.5)  # 1 completed / 2 s


def test_requests_without_usage_add_nothing_to_token_figures() -> None:
    records = [_ok(0, tokens=11), _ok(1, tokens=None), _ok(2, tokens=21, e2e=2.1)]
    result = _summary(records, wall_s=4.0)
    assert result.usage_missing == 1 and result.completed == 3
    assert result.output_throughput == pytest.approx(32 / 4.0)
    assert result.tpot_ms.n == 2 and result.tokens_per_s.n == 2 and result.output_tokens.n == 2
    assert result.e2e_ms.n == 3  # latency is still measured


def test_itl_pools_every_gap_of_completed_requests_only() -> None:
    failed = _failed(2, timed_out=False).model_copy(update={"itl_s": [9.0]})
    records = [_ok(0, itl_s=[0.01, 0.02]), _ok(1, itl_s=[0.03]), failed]
    result = _summary(records)
    assert result.itl_ms.n == 3 and result.itl_ms.mean == pytest.approx(20.0)


def test_goodput_counts_completed_requests_meeting_every_target() -> None:
    records = [
        _ok(0, ttft=0.1, e2e=1.1, tokens=11),  # ttft 100 ms, tpot 100 ms: meets both
        _ok(1, ttft=0.5, e2e=1.5, tokens=11),  # ttft 500 ms: misses
        _ok(2, ttft=0.1, e2e=3.1, tokens=11),  # tpot 300 ms: misses
        _ok(3, ttft=0.1, e2e=0.2, tokens=1),  # one token: no tpot, so it misses the tpot target
        _failed(4, timed_out=True),
    ]
    result = _summary(records, wall_s=2.0, targets=Targets(ttft_ms=200, tpot_ms=150))
    assert result.goodput == pytest.approx(0.5) and result.goodput_fraction == pytest.approx(1 / 5)
    assert _summary(records).goodput is None
    assert _summary(records, targets=Targets()).goodput_fraction is None


def test_cross_check_compares_client_decode_speed_with_llama_cpp_timings() -> None:
    records = [
        # client: 1 / ((1.1 - 0.1) / 10) = 10 tok/s; server: 11 / 0.88 s = 12.5 tok/s
        _ok(0, server_timings={"predicted_n": 11, "predicted_ms": 880.0, "predicted_per_second": 12.5}),
        # client 10 tok/s; server: Ollama style, 10 tokens in 1e9 ns = 10 tok/s; count differs from usage
        _ok(1, server_timings={"eval_count": 10, "eval_duration": 1_000_000_000}),
        _ok(2),  # no timings: not part of the check
    ]
    check = _summary(records).cross_check
    assert check is not None and check.requests == 2
    assert check.server_decode_tps_mean == pytest.approx((12.5 + 10.0) / 2)
    assert check.client_decode_tps_mean == pytest.approx(10.0)
    assert check.decode_tps_diff_pct == pytest.approx((10.0 - 11.25) / 11.25 * 100)
    assert check.server_tokens_match == 1
    assert _summary([_ok(0)]).cross_check is None


def test_resource_figures_are_copied_from_the_samples() -> None:
    samples = ResourceSamples(cpu_avg=150.0, cpu_max=190.0, ram_avg_mb=512.0, ram_max_mb=600.0, n=8)
    result = _summary([_ok(0)], samples=samples, partial=True, notes=["cut short"])
    assert (result.cpu_avg, result.cpu_max, result.ram_avg_mb, result.ram_max_mb) == (
        150.0,
        190.0,
        512.0,
        600.0,
    )
    assert result.gpu_avg is None and result.partial and result.notes == ["cut short"]
