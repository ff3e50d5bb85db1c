"""Benchmark runs and their results, kept in the registry's database beside the model versions.

A run's id is its Prefect flow run's id; a run has one result per (model, scenario, concurrency)
level: the headline figures as columns, to filter and rank on, and the whole result as JSON. Only
pydantic snapshots (`BenchmarkRunInfo`, `BenchmarkResultInfo`) leave this module, never ORM rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.bench.records import ScenarioResult
from core.errors import InputError
from core.registry.db import WRITE, open_engine
from core.registry.snapshots import aware
from core.registry.tables import BenchmarkResult, BenchmarkRun, utcnow
from core.settings import Settings

RunStatus = Literal["scheduled", "running", "completed", "partial", "failed", "cancelled"]
RunSource = Literal["api", "cli", "retrain"]
STATUSES: tuple[str, ...] = get_args(RunStatus)
SOURCES: tuple[str, ...] = get_args(RunSource)
TERMINAL: tuple[str, ...] = ("completed", "partial", "failed", "cancelled")
RANKED: tuple[str, ...] = ("completed", "partial")  # runs whose results count for the best figures
ERROR_CHARS = 1024  # the width of the error column
MAX_LIMIT = 200  # runs per page: what GET /benchmarks/runs accepts
UtcDatetime = Annotated[datetime, AfterValidator(aware)]


class BenchmarkRunNotFound(InputError, status=404, code="BENCHMARK_RUN_NOT_FOUND"):
    """No benchmark run by that id."""


class BenchmarkRunInfo(BaseModel):
    id: str
    suite: str
    models: list[str]
    config: dict[str, Any]
    status: RunStatus
    source: RunSource
    error: str | None
    info: dict[str, Any]  # hardware and software facts
    summary: dict[str, Any]
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    results: int  # result rows recorded


class BenchmarkResultInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: str
    model: str
    scenario: str
    concurrency: int
    rate: float | None
    tps: float  # output tokens/s over the wall time
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    latency_p50_ms: float | None  # end to end
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    tpot_p50_ms: float | None
    itl_p50_ms: float | None
    error_rate: float
    timeout_rate: float
    cpu_avg: float | None
    ram_avg_mb: float | None
    gpu_avg: float | None
    partial: bool
    metrics: dict[str, Any]  # the whole ScenarioResult, as JSON


class BenchmarkStore:
    """Benchmark runs and their results in the registry's database (`url`: any SQLAlchemy URL)."""

    def __init__(self, url: str) -> None:
        self._engine = open_engine(url)
        self._read = sessionmaker(self._engine, expire_on_commit=False)
        self._write = sessionmaker(self._engine.execution_options(**WRITE), expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> BenchmarkStore:
        """The store of this workspace: the registry's database, `settings.registry_url`."""
        return cls(settings.registry_url)

    def close(self) -> None:
        """Release the database connections (the object is unusable after)."""
        self._engine.dispose()

    def __enter__(self) -> BenchmarkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------------

    def create_run(
        self, run_id: str, *, suite: str, models: list[str], config: dict[str, Any], source: str,
        status: str = "scheduled",
    ) -> BenchmarkRunInfo:  # fmt: skip
        """Record a new run; an id already recorded answers with that run, unchanged (a retried task).

        Raises:
            InputError: `run_id` is not a UUID, or a bad suite, source or status.
        """
        key = _key(run_id)
        if key is None:
            raise InputError(f"benchmark run id '{run_id[:40]}' is not a UUID: pass the Prefect flow run id")
        if not 1 <= len(suite) <= 64:
            raise InputError(f"suite must be 1 to 64 characters, not {len(suite)}")
        _check("source", source, SOURCES)
        _check("status", status, STATUSES)
        try:
            with self._writing() as s:
                row = s.get(BenchmarkRun, key)
                if row is None:
                    now = utcnow()
                    row = BenchmarkRun(
                        id=key, suite=suite, models=list(models), config=dict(config), status=status,
                        source=source, error=None, info={}, summary={}, created_at=now,
                        started_at=now if status == "running" else None,
                        finished_at=now if status in TERMINAL else None,
                    )  # fmt: skip
                    s.add(row)
                    s.flush()
                return self._infos(s, [row])[0]
        except IntegrityError:  # another process recorded this id just now
            found = self.get_run(key)
            if found is None:
                raise
            return found

    def set_status(
        self, run_id: str, status: str, *, error: str | None = None, info: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
    ) -> BenchmarkRunInfo:  # fmt: skip
        """Move a run to `status`, stamping when it first runs and when it ends.

        A terminal status (completed, partial, failed, cancelled) sets `finished_at`; going back to
        scheduled or running (a retried flow run) clears it, and `started_at` keeps the first start.
        `error`, `info` and `summary`, when given, replace the stored ones (`error` cut to 1024).

        Raises:
            InputError: an unknown status.
            BenchmarkRunNotFound: no run by that id.
        """
        _check("status", status, STATUSES)
        with self._writing() as s:
            row = _find(s, run_id, for_update=True)
            now = utcnow()
            if status == "running" and row.started_at is None:
                row.started_at = now
            if status not in TERMINAL:
                row.finished_at = None
            elif row.status not in TERMINAL or row.finished_at is None:
                row.finished_at = now
            row.status = status
            if error is not None:
                row.error = error[:ERROR_CHARS]
            if info is not None:
                row.info = dict(info)
            if summary is not None:
                row.summary = dict(summary)
            return self._infos(s, [row])[0]

    def delete_run(self, run_id: str) -> BenchmarkRunInfo:
        """Delete a run and (by the foreign key's cascade) its results; answers with the run as it was."""
        with self._writing() as s:
            row = _find(s, run_id, for_update=True)
            deleted = self._infos(s, [row])[0]
            s.delete(row)
        return deleted

    def get_run(self, run_id: str) -> BenchmarkRunInfo | None:
        """The run with that id, or None."""
        key = _key(run_id)
        with self._read() as s:
            row = s.get(BenchmarkRun, key) if key else None
            return self._infos(s, [row])[0] if row else None

    def list_runs(
        self, *, page: int = 1, limit: int = 50, status: str | None = None
    ) -> tuple[list[BenchmarkRunInfo], int]:
        """One page of runs, newest first, and how many runs there are (of `status`, when given)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InputError(f"limit must be 1 to {MAX_LIMIT}, not {limit}")
        if page < 1:
            raise InputError(f"page must be 1 or more, not {page}")
        query = select(BenchmarkRun)
        if status is not None:
            _check("status", status, STATUSES)
            query = query.where(BenchmarkRun.status == status)
        with self._read() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.order_by(BenchmarkRun.created_at.desc(), BenchmarkRun.id.desc())
                .offset((page - 1) * limit)
                .limit(limit)
            ).all()
            return self._infos(s, rows), total

    # -- results -------------------------------------------------------------------------------

    def add_results(self, run_id: str, results: Sequence[ScenarioResult]) -> list[BenchmarkResultInfo]:
        """Record a run's results, all or none (one transaction).

        Raises:
            BenchmarkRunNotFound: no run by that id.
            InputError: a model ref over 200 or a scenario name over 64 characters.
        """
        with self._writing() as s:
            run = _find(s, run_id, for_update=True)
            rows = [_result_row(run.id, r) for r in results]
            s.add_all(rows)
            s.flush()
            return [BenchmarkResultInfo.model_validate(r) for r in rows]

    def results(self, *, run_id: str | None = None, model: str | None = None) -> list[BenchmarkResultInfo]:
        """Results (of one run, of one model), oldest run first, then by model, scenario, concurrency."""
        query = select(BenchmarkResult).join(BenchmarkRun, BenchmarkRun.id == BenchmarkResult.run_id)
        if run_id is not None:
            query = query.where(BenchmarkResult.run_id == (_key(run_id) or ""))
        if model is not None:
            query = query.where(BenchmarkResult.model == model)
        query = query.order_by(
            BenchmarkRun.created_at, BenchmarkRun.id, BenchmarkResult.model, BenchmarkResult.scenario,
            BenchmarkResult.concurrency, BenchmarkResult.id,
        )  # fmt: skip
        with self._read() as s:
            return [BenchmarkResultInfo.model_validate(r) for r in s.scalars(query)]

    def system_stats(self) -> dict[str, Any]:
        """The dashboard's figures: runs recorded, the newest run, the fastest and the quickest result.

        Only results of completed and partial runs are ranked; JSON keys are camelCase, as the UI's.
        """
        ranked = (
            select(BenchmarkResult)
            .join(BenchmarkRun, BenchmarkRun.id == BenchmarkResult.run_id)
            .where(BenchmarkRun.status.in_(RANKED))
        )
        p50 = BenchmarkResult.latency_p50_ms
        with self._read() as s:
            total = s.scalar(select(func.count()).select_from(BenchmarkRun)) or 0
            newest = s.scalar(
                select(BenchmarkRun).order_by(BenchmarkRun.created_at.desc(), BenchmarkRun.id.desc()).limit(1)
            )
            fastest = s.scalar(ranked.order_by(BenchmarkResult.tps.desc(), BenchmarkResult.id).limit(1))
            quickest = s.scalar(ranked.where(p50.is_not(None)).order_by(p50, BenchmarkResult.id).limit(1))
            last = self._infos(s, [newest])[0].model_dump(mode="json") if newest else None
        return {
            "totalRuns": total,
            "lastRun": last,
            "bestTpsModel": _best(fastest, "tps"),
            "bestLatencyModel": _best(quickest, "latency_p50_ms"),
        }

    # -- internals -----------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: writers queue instead of failing busy)."""
        with self._write() as session, session.begin():
            yield session

    @staticmethod
    def _infos(s: Session, rows: Sequence[BenchmarkRun]) -> list[BenchmarkRunInfo]:
        """Snapshots of runs, each with its count of results."""
        query = (
            select(BenchmarkResult.run_id, func.count())
            .where(BenchmarkResult.run_id.in_([r.id for r in rows]))
            .group_by(BenchmarkResult.run_id)
        )
        counts = {run_id: n for run_id, n in s.execute(query)}
        columns = [a.key for a in inspect(BenchmarkRun).column_attrs]
        return [
            BenchmarkRunInfo.model_validate(
                {**{c: getattr(r, c) for c in columns}, "results": counts.get(r.id, 0)}
            )
            for r in rows
        ]


def _key(run_id: str) -> str | None:
    """The canonical form of a UUID run id (lowercase, hyphenated), or None when it is not one."""
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return None


def _check(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{field} must be one of {', '.join(allowed)}, not '{value}'")


def _find(s: Session, run_id: str, *, for_update: bool = False) -> BenchmarkRun:
    """The run with that id, or BenchmarkRunNotFound naming the newest ones recorded."""
    key = _key(run_id)
    row = s.get(BenchmarkRun, key, with_for_update=for_update) if key else None
    if row is None:
        newest = s.scalars(select(BenchmarkRun.id).order_by(BenchmarkRun.created_at.desc()).limit(3)).all()
        hint = f"the newest are {', '.join(newest)}" if newest else "no benchmark run is recorded"
        raise BenchmarkRunNotFound(f"benchmark run '{run_id[:40]}' not found; {hint}")
    return row


def _result_row(run_id: str, r: ScenarioResult) -> BenchmarkResult:
    if len(r.model) > 200 or len(r.scenario) > 64:
        raise InputError(
            f"result of '{r.model[:40]}' / '{r.scenario[:40]}': model refs are at most 200 characters, "
            "scenario names 64"
        )
    return BenchmarkResult(
        run_id=run_id, model=r.model, scenario=r.scenario, concurrency=r.concurrency, rate=r.rate,
        tps=r.output_throughput, ttft_p50_ms=r.ttft_ms.p50, ttft_p95_ms=r.ttft_ms.p95,
        latency_p50_ms=r.e2e_ms.p50, latency_p95_ms=r.e2e_ms.p95, latency_p99_ms=r.e2e_ms.p99,
        tpot_p50_ms=r.tpot_ms.p50, itl_p50_ms=r.itl_ms.p50, error_rate=r.error_rate,
        timeout_rate=r.timeout_rate, cpu_avg=r.cpu_avg, ram_avg_mb=r.ram_avg_mb, gpu_avg=r.gpu_avg,
        partial=r.partial, metrics=r.model_dump(mode="json"),
    )  # fmt: skip


def _best(row: BenchmarkResult | None, figure: str) -> dict[str, Any] | None:
    """Which model, run, scenario and concurrency a best figure (`tps`, `latency_p50_ms`) came from."""
    if row is None:
        return None
    return {
        "model": row.model,
        figure: getattr(row, figure),
        "run_id": row.run_id,
        "scenario": row.scenario,
        "concurrency": row.concurrency,
    }
