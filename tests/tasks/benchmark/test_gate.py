"""The retrain flow's speed gate: a candidate much slower than the champion is not promoted."""

from __future__ import annotations

from core.bench.records import BenchReport, Dist, ScenarioResult
from tasks.benchmark.gate import speed_gate


def _level(
    model: str, tps: float, ttft_ms: float, concurrency: int = 1, completed: int = 8
) -> ScenarioResult:
    empty = Dist(n=0)
    return ScenarioResult(
        model=model,
        scenario="eval-questions",
        concurrency=concurrency,
        max_tokens=16,
        requests=8,
        completed=completed,
        errors=8 - completed,
        timeouts=0,
        error_rate=(8 - completed) / 8,
        timeout_rate=0,
        usage_missing=0,
        wall_s=1.0,
        request_throughput=completed,
        output_throughput=tps,
        ttft_ms=Dist(n=8, p50=ttft_ms),
        tpot_ms=empty,
        itl_ms=empty,
        e2e_ms=Dist(n=8, p50=ttft_ms * 3),
        tokens_per_s=empty,
        output_tokens=empty,
    )


def _report(*levels: ScenarioResult) -> BenchReport:
    models = list(dict.fromkeys(r.model for r in levels))
    return BenchReport(
        run_id="r",
        status="completed",
        suite="repo",
        models=models,
        endpoint="x",
        results=list(levels),
        out_dir="x",
    )


def test_a_candidate_within_the_margin_passes() -> None:
    gate = speed_gate(_report(_level("m:2", 95, 105), _level("m:1", 100, 100)), "m:2", "m:1", 0.25)
    assert gate.passed and gate.candidate and gate.champion


def test_fewer_tokens_per_second_beyond_the_margin_blocks() -> None:
    gate = speed_gate(_report(_level("m:2", 60, 100), _level("m:1", 100, 100)), "m:2", "m:1", 0.25)
    assert not gate.passed and "tokens/s" in gate.reason and "-40%" in gate.reason


def test_a_slower_first_token_beyond_the_margin_blocks() -> None:
    gate = speed_gate(_report(_level("m:2", 100, 200), _level("m:1", 100, 100)), "m:2", "m:1", 0.25)
    assert not gate.passed and "TTFT" in gate.reason


def test_concurrency_one_is_what_is_compared() -> None:
    levels = (
        _level("m:2", 100, 100),
        _level("m:2", 50, 400, concurrency=4),
        _level("m:1", 100, 100),
        _level("m:1", 300, 100, concurrency=4),
    )
    assert speed_gate(_report(*levels), "m:2", "m:1", 0.25).passed


def test_no_champion_passes_and_a_candidate_that_answered_nothing_fails() -> None:
    assert speed_gate(_report(_level("m:2", 10, 100)), "m:2", None, 0.25).passed
    dead = speed_gate(
        _report(_level("m:2", 0, 100, completed=0), _level("m:1", 100, 100)), "m:2", "m:1", 0.25
    )
    assert not dead.passed and "answered no" in dead.reason
