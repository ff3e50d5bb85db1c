"""Prometheus metrics (one CollectorRegistry per app) and per-model stats batched into the registry.

The request path only appends to memory; a background task writes the batch to the registry every
few seconds (and on shutdown), so serving never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from core.registry import Registry

log = logging.getLogger(__name__)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


# (llama-server's name, ours, help, kind): llama.cpp's own view of each model's server
_SERVER_SERIES = (
    ("slots", "forgeflow_llamacpp_slots", "Parallel slots of the model's llama-server", "gauge"),
    ("requests_processing", "forgeflow_llamacpp_busy_slots", "Slots decoding a request now", "gauge"),
    ("requests_deferred", "forgeflow_llamacpp_deferred_requests", "Requests waiting for a slot", "gauge"),
    ("in_flight", "forgeflow_llamacpp_requests_in_flight", "Requests forgeflow has at the server", "gauge"),
    ("tokens_predicted_total", "forgeflow_llamacpp_tokens_predicted", "Tokens generated", "counter"),
    (
        "prompt_tokens_total",
        "forgeflow_llamacpp_prompt_tokens",
        "Prompt tokens evaluated (not cached)",
        "counter",
    ),
)


class ServerSeries:
    """A collector of the serving processes' own series, labelled by model, as of the last scrape
    (`GET /metrics` scrapes every llama-server first, so a scrape shows them as they are now)."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, float]] = {}

    def collect(self) -> list[Metric]:
        families: list[Metric] = []
        for source, name, doc, kind in _SERVER_SERIES:
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(name, doc, labels=["model"])
            for model, series in sorted(self.latest.items()):
                if source in series:
                    family.add_metric([model], series[source])
            families.append(family)
        return families


class Metrics:
    """The API's Prometheus series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "forgeflow_requests", "Inference requests", ["route", "model", "status"], registry=r
        )
        self.errors = Counter(
            "forgeflow_request_errors", "Failed requests", ["route", "model", "code"], registry=r
        )
        self.latency = Histogram(
            "forgeflow_request_latency_seconds", "Request latency", ["route", "model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "forgeflow_time_to_first_token_seconds", "Time to first streamed token", ["model"],
            buckets=_TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter("forgeflow_tokens", "Tokens processed", ["model", "kind"], registry=r)
        self.cancelled = Counter(
            "forgeflow_streams_cancelled", "Streams the client left before the end", ["model"], registry=r
        )
        self.models_loaded = Gauge("forgeflow_models_loaded", "Model versions loaded", registry=r)
        self.in_flight = Gauge("forgeflow_requests_in_flight", "Requests being served", registry=r)
        self.servers = ServerSeries()
        r.register(self.servers)  # type: ignore[arg-type]


@dataclass
class _Batch:
    requests: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class StatsBook:
    """Per-version request stats kept in memory and flushed to the registry in batches."""

    def __init__(self, registry: Registry, metrics: Metrics, interval_s: float = 5.0) -> None:
        self.registry = registry
        self.metrics = metrics
        self.interval_s = interval_s
        self._pending: dict[str, _Batch] = defaultdict(_Batch)
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        key: str,
        route: str,
        *,
        seconds: float,
        code: str | None = None,
        status: int = 200,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """One finished request (code is set when it failed)."""
        batch = self._pending[key]
        batch.requests += 1
        self.metrics.requests.labels(route, key, str(status)).inc()
        if code is not None:
            batch.failed += 1
            self.metrics.errors.labels(route, key, code).inc()
        else:
            batch.latencies_ms.append(seconds * 1000)
            self.metrics.latency.labels(route, key).observe(seconds)
        batch.prompt_tokens += prompt_tokens
        batch.completion_tokens += completion_tokens
        if prompt_tokens:
            self.metrics.tokens.labels(key, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.metrics.tokens.labels(key, "completion").inc(completion_tokens)

    def flush(self) -> None:
        """Write pending stats to the registry (models deleted meanwhile are skipped)."""
        pending, self._pending = self._pending, defaultdict(_Batch)
        for key, b in pending.items():
            try:
                self.registry.record_stats(
                    key,
                    requests=b.requests,
                    failed=b.failed,
                    latencies_ms=b.latencies_ms,
                    prompt_tokens=b.prompt_tokens,
                    completion_tokens=b.completion_tokens,
                )
            except Exception as exc:  # a removed version, a locked database: stats are not worth a crash
                log.warning("stats for %s not saved: %s", key, exc)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.flush)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.flush)
