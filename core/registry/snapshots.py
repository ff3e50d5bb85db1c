"""The registry's vocabulary: the snapshots it returns, and the rules for names, versions and aliases."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, computed_field

from core.errors import InputError

if TYPE_CHECKING:
    from core.registry.tables import ModelVersion

Task = Literal["text-generation", "text-embedding"]
State = Literal["registered", "loading", "loaded", "failed", "unloaded"]
TASKS: tuple[str, ...] = ("text-generation", "text-embedding")
STATES: tuple[str, ...] = ("registered", "loading", "loaded", "failed", "unloaded")
# The OpenAPI document states these patterns too, so they must mean the same in Python, JSON Schema
# (ECMA-262) and pydantic (Rust): [0-9], since \d takes any Unicode digit in Python and Rust; fullmatch,
# since Python's $ also matches before a trailing newline.
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # a valid Ollama model name
SEMVER = re.compile(r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$")
ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")  # starts with a letter: never mistaken for a version
DEVICE = re.compile(r"^[a-z][a-z0-9:_-]{0,31}$")  # cpu, cuda, cuda:1, mps
LATEST = "latest"
CHAMPION = "champion"  # the alias a project serves: its promoted model, or its base until one wins
RESERVOIR = 1000  # latencies kept for the p95


class ArtifactRef(BaseModel):
    path: str  # absolute: the store copy (or, for an embedded model, the file inside its package)
    sha256: str
    size: int


class Stats(BaseModel):
    requests_total: int
    requests_failed: int
    avg_latency_ms: float | None
    p95_latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int


class ModelInfo(BaseModel):
    name: str
    version: str
    task: Task
    device: str
    state: State
    base_model: str | None
    backend: str | None
    source_repo: str | None
    source_commit: str | None
    dataset_hash: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    artifacts: dict[str, ArtifactRef]
    aliases: list[str]
    created_at: datetime
    updated_at: datetime
    stats: Stats

    @computed_field  # type: ignore[prop-decorator]
    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


class Page(BaseModel):
    models: list[ModelInfo]
    total: int
    page: int
    pages: int


def check_fields(name: str | None, version: str | None, task: str, device: str) -> None:
    if name is not None and not NAME.fullmatch(name):
        raise InputError(
            f"invalid model name '{name}': use 1-64 of a-z 0-9 . _ - starting with a letter or digit"
        )
    if version is not None and not SEMVER.fullmatch(version):
        raise InputError(f"invalid version '{version}': use MAJOR.MINOR.PATCH, e.g. 1.2.0")
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, not '{task}'")
    if not DEVICE.fullmatch(device):
        raise InputError(f"invalid device '{device}': e.g. cpu, cuda, cuda:1, mps")


def check_alias(alias: str) -> None:
    if alias == LATEST:
        raise InputError(
            "the alias 'latest' always follows the newest registration: it cannot be set or removed"
        )
    if not ALIAS.fullmatch(alias):
        raise InputError(f"invalid alias '{alias}': use 1-32 of a-z 0-9 _ - starting with a letter")


def next_version(existing: Iterable[str]) -> str:
    """1.0.0 first, then the highest version with its minor bumped (1.1.0, 1.2.0...)."""
    parsed = [tuple(int(p) for p in v.split(".")) for v in existing if SEMVER.match(v)]
    if not parsed:
        return "1.0.0"
    major, minor, _ = max(parsed)
    return f"{major}.{minor + 1}.0"


def to_info(row: ModelVersion, aliases: list[str], store_root: Path) -> ModelInfo:
    """A snapshot of a row: artifact paths made absolute, stats derived from the counters."""
    recent = sorted(row.recent_latencies_ms)
    stats = Stats(
        requests_total=row.requests_total,
        requests_failed=row.requests_failed,
        avg_latency_ms=row.latency_sum_ms / row.latency_count if row.latency_count else None,
        p95_latency_ms=recent[math.ceil(0.95 * len(recent)) - 1] if recent else None,  # nearest rank
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
    )
    artifacts = {  # a store entry is relative to the store; an embedded model's path is absolute
        role: ArtifactRef(path=str(store_root / a["path"]), sha256=a["sha256"], size=a["size"])
        for role, a in row.artifacts.items()
    }
    return ModelInfo(
        name=row.name, version=row.version, task=row.task, device=row.device,  # type: ignore[arg-type]
        state=row.state, base_model=row.base_model, backend=row.backend,  # type: ignore[arg-type]
        source_repo=row.source_repo, source_commit=row.source_commit, dataset_hash=row.dataset_hash,
        config=row.config, metrics=row.metrics, artifacts=artifacts, aliases=aliases,
        created_at=aware(row.created_at), updated_at=aware(row.updated_at), stats=stats,
    )  # fmt: skip


def aware(when: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)
