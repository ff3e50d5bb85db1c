"""The registry's tables (SQLAlchemy 2, typed): model versions, their aliases, registry flags, and
benchmark runs with their results.

Only generic column types (JSON, not JSONB), so the same schema runs on SQLite and PostgreSQL.
Alembic's migrations in `core.registry.migrations` create this schema; a test checks they agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, MetaData, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# stable constraint names: migrations can then refer to (and drop) them on every database
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ModelVersion(Base):
    """One registered version of a model, its lineage, artifacts, serving state and usage counters."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    device: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    base_model: Mapped[str | None] = mapped_column(String(1024))
    backend: Mapped[str | None] = mapped_column(String(64))
    source_repo: Mapped[str | None] = mapped_column(String(1024))
    source_commit: Mapped[str | None] = mapped_column(String(64))
    dataset_hash: Mapped[str | None] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSON)  # {role: {path, sha256, size}}
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    requests_total: Mapped[int] = mapped_column(Integer, default=0)
    requests_failed: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_count: Mapped[int] = mapped_column(Integer, default=0)  # requests with a measured latency
    latency_sum_ms: Mapped[float] = mapped_column(Float, default=0.0)
    recent_latencies_ms: Mapped[list[float]] = mapped_column(
        JSON, default=list
    )  # the last RESERVOIR, for p95


class Alias(Base):
    """A movable name for one version of a model (`champion`, `latest`, user-defined)."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("name", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(32))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)


class Flag(Base):
    """A registry-wide key/value (the active model's version id)."""

    __tablename__ = "registry_flags"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(String(256))


class BenchmarkRun(Base):
    """One benchmark run (its id is the Prefect flow run's): what it measures, its state, its facts."""

    __tablename__ = "benchmark_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID
    suite: Mapped[str] = mapped_column(String(64))
    models: Mapped[list[str]] = mapped_column(JSON)  # model refs, as given
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))  # api, cli, retrain
    error: Mapped[str | None] = mapped_column(String(1024))
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # hardware and software facts
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BenchmarkResult(Base):
    """One (model, scenario, concurrency) level of a run: its headline figures, and the whole result."""

    __tablename__ = "benchmark_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("benchmark_runs.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    scenario: Mapped[str] = mapped_column(String(64))
    concurrency: Mapped[int] = mapped_column(Integer)
    rate: Mapped[float | None] = mapped_column(Float)
    tps: Mapped[float] = mapped_column(Float)  # output tokens/s over the wall time
    ttft_p50_ms: Mapped[float | None] = mapped_column(Float)
    ttft_p95_ms: Mapped[float | None] = mapped_column(Float)
    latency_p50_ms: Mapped[float | None] = mapped_column(Float)  # end to end
    latency_p95_ms: Mapped[float | None] = mapped_column(Float)
    latency_p99_ms: Mapped[float | None] = mapped_column(Float)
    tpot_p50_ms: Mapped[float | None] = mapped_column(Float)
    itl_p50_ms: Mapped[float | None] = mapped_column(Float)
    error_rate: Mapped[float] = mapped_column(Float)
    timeout_rate: Mapped[float] = mapped_column(Float)
    cpu_avg: Mapped[float | None] = mapped_column(Float)
    ram_avg_mb: Mapped[float | None] = mapped_column(Float)
    gpu_avg: Mapped[float | None] = mapped_column(Float)
    partial: Mapped[bool] = mapped_column(Boolean)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)  # the whole ScenarioResult, as JSON
