"""The model registry: versions of models with lineage, aliases, serving state and usage stats.

Rows live in SQLite by default (WAL and a busy timeout, so the API and CLI processes share it) or
any SQLAlchemy URL (FORGEFLOW_DATABASE_URL); artifacts live in a content-addressed store (see
`core.registry.store`). Only pydantic snapshots (`ModelInfo`) leave this module, never ORM rows.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import InputError
from core.registry.db import WRITE, open_engine
from core.registry.errors import AlreadyExists, ModelNotFound
from core.registry.queries import aliases_of, find_row, not_found, point_alias, store_entries
from core.registry.snapshots import (
    LATEST,
    RESERVOIR,
    STATES,
    ModelInfo,
    Page,
    check_alias,
    check_fields,
    next_version,
    to_info,
)
from core.registry.sources import EMBEDDED, allowed_path, embedded_source, exported_sha256s, inspect_source
from core.registry.store import ModelStore, Staged, describe_in_place
from core.registry.tables import Alias, Flag, ModelVersion, utcnow
from core.settings import Settings

_ACTIVE = "active_version_id"
EMBEDDED_VERSION = "1.0.0"


class Registry:
    """Model versions, aliases and stats in a database; artifacts copied into `store_dir`."""

    def __init__(self, url: str, *, store_dir: Path, allowed_roots: list[Path]) -> None:
        self.store = ModelStore(store_dir)
        self.allowed_roots = list(allowed_roots)
        self._engine = open_engine(url)
        self._read = sessionmaker(self._engine, expire_on_commit=False)
        self._write = sessionmaker(self._engine.execution_options(**WRITE), expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The registry of this workspace: `settings.registry_url`, artifacts in `home/models`."""
        return cls(
            settings.registry_url, store_dir=settings.home / "models", allowed_roots=settings.allowed_roots
        )

    def close(self) -> None:
        """Release the database connections (the object is unusable after)."""
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registering ---------------------------------------------------------------------------

    def register(
        self,
        path: Path,
        *,
        name: str | None = None,
        task: str = "text-generation",
        device: str = "cpu",
        version: str | None = None,
        base_model: str | None = None,
        source_repo: str | None = None,
        source_commit: str | None = None,
        dataset_hash: str | None = None,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> ModelInfo:
        """Check and copy a GGUF, an export directory's best GGUF, or an HF model directory; add a version.

        Nothing is written (database or store) unless every check passes.

        Raises:
            PathNotAllowed: `path` resolves outside the allowed roots.
            CorruptGGUF: the GGUF is malformed or llama.cpp refuses to load it.
            AlreadyExists: `name:version` is registered.
            InputError: a bad name, version, task or device, or nothing registrable at `path`.
        """
        check_fields(name, version, task, device)
        source = inspect_source(allowed_path(path, self.allowed_roots), task, self.allowed_roots)
        name = name or source.default_name
        check_fields(name, version, task, device)
        if version is not None:
            self._refuse_existing(name, version)
        given: dict[str, Any] = {"base_model": base_model, "source_repo": source_repo}
        given |= {"source_commit": source_commit, "dataset_hash": dataset_hash}
        lineage = source.lineage | {k: v for k, v in given.items() if v is not None}
        for key, extra in (("config", config), ("metrics", metrics)):  # given keys win over found ones
            lineage[key] = {**source.lineage.get(key, {}), **(extra or {})}
        staged = self.store.stage(source.path)
        if source.expected_sha256 and staged.sha256 != source.expected_sha256:
            self.store.discard(staged)
            raise InputError(
                f"{source.path.name} does not match the sha256 in its export.json: export the model again"
            )
        return self._add(name, version, task, device, lineage, source.role, staged=staged)

    def register_export(self, export_dir: Path, *, name: str, source_repo: str | None = None) -> ModelInfo:
        """Register an export directory as a new version of `name`, once.

        A version of `name` that already holds one of the export's GGUFs (a retried or resumed flow,
        a deploy after the promote step) is returned instead of a duplicate version.
        """
        exported = exported_sha256s(allowed_path(export_dir, self.allowed_roots))
        with self._read() as s:
            rows = s.scalars(
                select(ModelVersion).where(ModelVersion.name == name).order_by(ModelVersion.id.desc())
            )
            for row in rows:
                if (row.artifacts.get("gguf") or {}).get("sha256") in exported:
                    return self._info(s, row)
        return self.register(export_dir, name=name, source_repo=source_repo)

    def ensure_embedded(self, name: str) -> ModelInfo:
        """The embedded model `name` (version 1.0.0), registered on first use from its package, in place."""
        if name not in EMBEDDED:
            raise ModelNotFound(f"no embedded model '{name}': embedded ones are {', '.join(EMBEDDED)}")
        try:
            return self.resolve(f"{name}:{EMBEDDED_VERSION}")
        except ModelNotFound:
            pass
        # trusted files inside site-packages: referenced where they are, not copied or reloaded
        source = embedded_source(name)
        found, task = describe_in_place(source.path), EMBEDDED[name]
        try:
            return self._add(name, EMBEDDED_VERSION, task, "cpu", source.lineage, source.role, artifact=found)
        except AlreadyExists:  # another process registered it just now
            return self.resolve(f"{name}:{EMBEDDED_VERSION}")

    def ensure_alias_to_base(
        self, name: str, alias: str, gguf: Path, *, base_model: str, source_repo: str | None, trusted: bool
    ) -> ModelInfo:
        """`name:alias`, pointed at a version that is the base model's GGUF itself when it is not set.

        A project has a champion to ask before any tuned model won: its base, answering from the
        project's index (`source_repo`). `trusted` (an embedded model inside its package) is
        referenced in place; any other GGUF is checked and copied like every registration.
        """
        check_alias(alias)
        current = self.find(f"{name}:{alias}")
        if current is not None:
            return current
        config = {"base": True}
        if trusted:
            lineage = {"base_model": base_model, "source_repo": source_repo, "config": config}
            info = self._add(
                name, None, "text-generation", "cpu", lineage, "gguf", artifact=describe_in_place(gguf)
            )
        else:
            info = self.register(
                gguf, name=name, base_model=base_model, source_repo=source_repo, config=config
            )
        return self.set_alias(name, alias, info.version)

    def _add(
        self,
        name: str,
        version: str | None,
        task: str,
        device: str,
        lineage: dict[str, Any],
        role: str,
        *,
        staged: Staged | None = None,
        artifact: dict[str, Any] | None = None,
    ) -> ModelInfo:
        """Insert a version (and move `latest` to it), publishing `staged` in the same transaction."""
        published = False
        try:
            with self._writing() as s:
                existing = s.scalars(select(ModelVersion.version).where(ModelVersion.name == name)).all()
                version = version or next_version(existing)
                if version in existing:
                    raise AlreadyExists(f"{name}:{version} is already registered: pass another --version")
                if staged is not None:
                    published = self.store.publish(staged)
                    artifact = {"path": staged.entry, "sha256": staged.sha256, "size": staged.size}
                now = utcnow()
                row = ModelVersion(
                    name=name, version=version, task=task, device=device, state="registered",
                    base_model=lineage.get("base_model"), source_repo=lineage.get("source_repo"),
                    source_commit=lineage.get("source_commit"), dataset_hash=lineage.get("dataset_hash"),
                    config=lineage.get("config") or {}, metrics=lineage.get("metrics") or {},
                    artifacts={role: artifact}, created_at=now, updated_at=now,
                )  # fmt: skip
                s.add(row)
                s.flush()
                point_alias(s, name, LATEST, row.id)
                return self._info(s, row)
        except BaseException as exc:
            if staged is not None:
                self.store.discard(staged)
                if published:
                    self.store.remove(staged.entry)
            if isinstance(exc, IntegrityError):  # a concurrent writer took this name:version
                raise AlreadyExists(
                    f"{name}:{version} is already registered: pass another --version"
                ) from None
            raise

    def _refuse_existing(self, name: str, version: str) -> None:
        with self._read() as s:
            if s.scalar(
                select(ModelVersion.id).where(ModelVersion.name == name, ModelVersion.version == version)
            ):
                raise AlreadyExists(f"{name}:{version} is already registered: pass another --version")

    # -- reading -------------------------------------------------------------------------------

    def list(
        self, *, name: str | None = None, task: str | None = None, device: str | None = None, page: int = 1,
        limit: int = 20,
    ) -> Page:  # fmt: skip
        """One entry per version: names in order, newest registration first within a name."""
        if not 1 <= limit <= 100:
            raise InputError(f"limit must be 1 to 100, not {limit}")
        if page < 1:
            raise InputError(f"page must be 1 or more, not {page}")
        query = select(ModelVersion)
        for column, value in (
            (ModelVersion.name, name),
            (ModelVersion.task, task),
            (ModelVersion.device, device),
        ):
            if value is not None:
                query = query.where(column == value)
        with self._read() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.order_by(ModelVersion.name, ModelVersion.id.desc())
                .offset((page - 1) * limit)
                .limit(limit)
            ).all()
            aliases = aliases_of(s, [r.id for r in rows])
            models = [self._info(s, r, aliases.get(r.id, [])) for r in rows]
        return Page(models=models, total=total, page=page, pages=math.ceil(total / limit))

    def resolve(self, ref: str) -> ModelInfo:
        """`name` (its newest registration), `name:1.2.0`, or `name:alias` (`champion`, `latest`...)."""
        with self._read() as s:
            return self._info(s, find_row(s, ref))

    def find(self, ref: str) -> ModelInfo | None:
        """`resolve(ref)`, or None when nothing answers to `ref`."""
        try:
            return self.resolve(ref)
        except ModelNotFound:
            return None

    def alias_target(self, name: str, alias: str) -> str | None:
        """The version `name:alias` points at now, or None when that alias is not set."""
        info = self.find(f"{name}:{alias}")
        return info.version if info is not None else None

    def active(self) -> ModelInfo | None:
        """The model marked active (`set_active`), or None."""
        with self._read() as s:
            flag = s.get(Flag, _ACTIVE)
            row = s.get(ModelVersion, int(flag.value)) if flag and flag.value else None
            return self._info(s, row) if row else None

    # -- changing ------------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: str) -> ModelInfo:
        """Point `name:alias` at `version`, creating or moving it (moving `champion` back is a rollback)."""
        check_alias(alias)
        with self._writing() as s:
            row = find_row(s, f"{name}:{version}")
            point_alias(s, name, alias, row.id)
            return self._info(s, row)

    def remove_alias(self, name: str, alias: str) -> None:
        """Drop `name:alias` (never `latest`, which follows the newest registration)."""
        check_alias(alias)
        with self._writing() as s:
            found = s.scalar(select(Alias).where(Alias.name == name, Alias.alias == alias))
            if found is None:
                raise not_found(s, f"{name}:{alias}")
            s.delete(found)

    def delete(self, name: str, version: str | None = None) -> builtins.list[ModelInfo]:
        """Delete one version (or all of `name`), their aliases, and store files no longer referenced."""
        aside: builtins.list[tuple[Path, str]] = []
        try:
            with self._writing() as s:
                if version is None:
                    rows = list(s.scalars(select(ModelVersion).where(ModelVersion.name == name)).all())
                    if not rows:
                        raise not_found(s, name)
                else:
                    rows = [find_row(s, f"{name}:{version}")]
                ids = [r.id for r in rows]
                aliases = aliases_of(s, ids)
                deleted = [self._info(s, r, aliases.get(r.id, [])) for r in rows]
                for alias in s.scalars(select(Alias).where(Alias.version_id.in_(ids))):
                    s.delete(alias)
                flag = s.get(Flag, _ACTIVE)
                if flag is not None and flag.value in {str(i) for i in ids}:
                    s.delete(flag)
                for row in rows:
                    s.delete(row)
                s.flush()
                newest = s.scalar(select(ModelVersion.id).where(ModelVersion.name == name).order_by(
                    ModelVersion.id.desc()).limit(1))  # fmt: skip
                if newest is not None:
                    point_alias(s, name, LATEST, newest)
                kept = {e for r in s.scalars(select(ModelVersion.artifacts)) for e in store_entries(r)}
                for entry in {e for r in rows for e in store_entries(r.artifacts)} - kept:
                    moved = self.store.set_aside(entry)
                    if moved is not None:
                        aside.append((moved, entry))
        except BaseException:
            for moved, entry in aside:  # the rows are still there: so are their files
                self.store.restore(moved, entry)
            raise
        for moved, _ in aside:
            self.store.purge(moved)
        return deleted

    def set_state(self, key: str, state: str, backend: str | None = None) -> None:
        """Record a serving state (and the backend holding it) for the version `key` names."""
        if state not in STATES:
            raise InputError(f"state must be one of {', '.join(STATES)}, not '{state}'")
        with self._writing() as s:
            row = find_row(s, key)
            row.state, row.updated_at = state, utcnow()
            if backend is not None:
                row.backend = backend

    def set_active(self, key: str | None) -> None:
        """Mark the version `key` names as the active model (None: no active model)."""
        with self._writing() as s:
            flag = s.get(Flag, _ACTIVE)
            if key is None:
                if flag is not None:
                    s.delete(flag)
                return
            row_id = str(find_row(s, key).id)
            if flag is None:
                s.add(Flag(key=_ACTIVE, value=row_id))
            else:
                flag.value = row_id

    def record_stats(
        self, key: str, *, requests: int, failed: int, latencies_ms: builtins.list[float], prompt_tokens: int,
        completion_tokens: int,
    ) -> None:  # fmt: skip
        """Add a batch of usage to the version's counters; the last 1000 latencies are kept for p95."""
        if min(requests, failed, prompt_tokens, completion_tokens) < 0 or failed > requests:
            raise InputError("stats must be non-negative counts, with failed <= requests")
        with self._writing() as s:
            row = find_row(s, key, for_update=True)
            row.requests_total += requests
            row.requests_failed += failed
            row.prompt_tokens += prompt_tokens
            row.completion_tokens += completion_tokens
            row.latency_count += len(latencies_ms)
            row.latency_sum_ms += float(sum(latencies_ms))
            row.recent_latencies_ms = [*row.recent_latencies_ms, *map(float, latencies_ms)][-RESERVOIR:]
            row.updated_at = utcnow()

    def merge_metrics(self, key: str, metrics: dict[str, Any]) -> ModelInfo:
        """Add (or replace) top-level keys of the version's metrics, e.g. its latest `benchmark`."""
        with self._writing() as s:
            row = find_row(s, key, for_update=True)
            row.metrics = {**row.metrics, **metrics}
            row.updated_at = utcnow()
        return self.resolve(key)

    # -- internals -----------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: writers queue instead of failing busy)."""
        with self._write() as session, session.begin():
            yield session

    def _info(self, s: Session, row: ModelVersion, aliases: builtins.list[str] | None = None) -> ModelInfo:
        if aliases is None:
            aliases = aliases_of(s, [row.id]).get(row.id, [])
        return to_info(row, aliases, self.store.root)
