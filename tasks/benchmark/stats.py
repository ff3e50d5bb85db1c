"""From request records to a scenario's result: counts, distributions, throughput, goodput, cross-check.

The definitions are those of `records.py` (the same as AIPerf's and `vllm bench serve`'s). Every
aggregate is computed over per-request values; percentiles use numpy's linear interpolation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from core.bench.records import PERCENTILES, CrossCheck, Dist, RequestRecord, ScenarioResult, Targets


class ResourceSamples(BaseModel):
    """What the serving processes used while a level ran; all None (and n=0) when nothing was sampled."""

    cpu_avg: float | None = None  # percent of one core, summed over the sampled processes
    cpu_max: float | None = None
    ram_avg_mb: float | None = None  # resident set size, MiB, summed over the sampled processes
    ram_max_mb: float | None = None
    gpu_avg: float | None = None  # percent utilisation; None: no GPU or nvidia-smi failed
    n: int = 0  # samples taken


def min_samples(q: int) -> int:
    """The fewest samples for percentile `q` to differ from the max: ceil(1 / (1 - q/100)).

    Integer arithmetic on purpose: in floats 1 / (1 - 0.99) is 100.00000000000009, whose ceiling is 101.
    """
    return -(-100 // (100 - q))


def distribution(values: Sequence[float]) -> Dist:
    """Mean, min, max and the percentiles of `values`; a percentile with too few samples is None.

    Returns:
        A Dist whose `insufficient` names ("p99", ...) the percentiles left out for lack of samples.
    """
    if not values:
        return Dist(n=0, insufficient=[f"p{q}" for q in PERCENTILES])
    arr = np.asarray(values, dtype=float)
    pct: dict[int, float | None] = {
        q: float(np.percentile(arr, q)) if len(arr) >= min_samples(q) else None for q in PERCENTILES
    }
    return Dist(
        n=len(arr),
        mean=float(arr.mean()),
        min=float(arr.min()),
        max=float(arr.max()),
        p50=pct[50],
        p90=pct[90],
        p95=pct[95],
        p99=pct[99],
        insufficient=[f"p{q}" for q, v in pct.items() if v is None],
    )


def summarize(
    records: Sequence[RequestRecord],
    *,
    model: str,
    scenario: str,
    concurrency: int,
    max_tokens: int,
    wall_s: float,
    rate: float | None = None,
    targets: Targets | None = None,
    partial: bool = False,
    samples: ResourceSamples | None = None,
    notes: Iterable[str] = (),
) -> ScenarioResult:
    """One level's result from its records (warm-up excluded): each record counts once.

    A record is completed when `ok`, else a timeout when `timed_out`, else an error. Latencies are
    milliseconds over completed requests; throughputs are over `wall_s` (0 when `wall_s` <= 0).
    """
    completed = [r for r in records if r.ok]
    timeouts = sum(1 for r in records if not r.ok and r.timed_out)
    errors = len(records) - len(completed) - timeouts
    sent = len(records)
    tokens = sum(r.output_tokens for r in completed if r.output_tokens is not None)
    good = _goodput_count(completed, targets)
    res = samples or ResourceSamples()
    return ScenarioResult(
        model=model,
        scenario=scenario,
        concurrency=concurrency,
        rate=rate,
        max_tokens=max_tokens,
        requests=sent,
        completed=len(completed),
        errors=errors,
        timeouts=timeouts,
        error_rate=errors / sent if sent else 0.0,
        timeout_rate=timeouts / sent if sent else 0.0,
        usage_missing=sum(1 for r in completed if r.output_tokens is None),
        wall_s=wall_s,
        request_throughput=_per_s(len(completed), wall_s),
        output_throughput=_per_s(tokens, wall_s),
        goodput=None if good is None else _per_s(good, wall_s),
        goodput_fraction=None if good is None else (good / sent if sent else 0.0),
        ttft_ms=distribution(_ms(r.ttft_s for r in completed)),
        tpot_ms=distribution(_ms(r.tpot_s for r in completed)),
        itl_ms=distribution(_ms(gap for r in completed for gap in r.itl_s)),
        e2e_ms=distribution(_ms(r.e2e_s for r in completed)),
        tokens_per_s=distribution([v for r in completed if (v := r.tokens_per_s) is not None]),
        output_tokens=distribution(
            [float(r.output_tokens) for r in completed if r.output_tokens is not None]
        ),
        cross_check=cross_check(completed),
        cpu_avg=res.cpu_avg,
        cpu_max=res.cpu_max,
        ram_avg_mb=res.ram_avg_mb,
        ram_max_mb=res.ram_max_mb,
        gpu_avg=res.gpu_avg,
        partial=partial,
        notes=list(notes),
    )


def meets_targets(record: RequestRecord, targets: Targets) -> bool:
    """Whether a completed request met every target that is set; a missing value misses its target."""
    measured = {"ttft_ms": record.ttft_s, "tpot_ms": record.tpot_s, "e2e_ms": record.e2e_s}
    for name, seconds in measured.items():
        limit = getattr(targets, name)
        if limit is not None and (seconds is None or seconds * 1000.0 > limit):
            return False
    return True


def server_decode_tps(timings: Mapping[str, Any] | None) -> tuple[float, int] | None:
    """(decode tokens/s, predicted tokens) from a backend's own timings, or None when it gave none.

    llama.cpp: `predicted_n` over `predicted_ms` (milliseconds); Ollama: `eval_count` over
    `eval_duration` (nanoseconds).
    """
    if not timings:
        return None
    for count_key, duration_key, per_s in (
        ("predicted_n", "predicted_ms", 1e3),
        ("eval_count", "eval_duration", 1e9),
    ):
        count, duration = _number(timings.get(count_key)), _number(timings.get(duration_key))
        if count is not None and duration is not None and duration > 0:
            return count / (duration / per_s), int(count)
    return None


def cross_check(completed: Sequence[RequestRecord]) -> CrossCheck | None:
    """The client's decode speed (1 / TPOT) against the backend's, over requests carrying timings.

    The means and their difference are over the requests that have both figures; when none has a
    client figure, the server mean is over all requests with timings and the rest is None.
    """
    timed = [(r, t) for r in completed if (t := server_decode_tps(r.server_timings)) is not None]
    if not timed:
        return None
    pairs = [(tps, 1.0 / r.tpot_s) for r, (tps, _) in timed if r.tpot_s]
    if pairs:
        server = float(np.mean([s for s, _ in pairs]))
        client: float | None = float(np.mean([c for _, c in pairs]))
    else:
        server, client = float(np.mean([tps for _, (tps, _) in timed])), None
    return CrossCheck(
        requests=len(timed),
        server_decode_tps_mean=server,
        client_decode_tps_mean=client,
        decode_tps_diff_pct=None if client is None or server == 0 else (client - server) / server * 100.0,
        server_tokens_match=sum(1 for r, (_, n) in timed if n == r.output_tokens),
    )


def _goodput_count(completed: Sequence[RequestRecord], targets: Targets | None) -> int | None:
    if targets is None or all(v is None for v in (targets.ttft_ms, targets.tpot_ms, targets.e2e_ms)):
        return None
    return sum(1 for r in completed if meets_targets(r, targets))


def _ms(seconds: Iterable[float | None]) -> list[float]:
    return [s * 1000.0 for s in seconds if s is not None]


def _per_s(count: float, wall_s: float) -> float:
    return count / wall_s if wall_s > 0 else 0.0


def _number(value: Any) -> float | None:
    """`value` as a float when it is a JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
