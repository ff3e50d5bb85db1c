"""Queries over the registry's tables that several operations share: finding a version, its aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.registry.errors import ModelNotFound
from core.registry.snapshots import SEMVER
from core.registry.sources import EMBEDDED
from core.registry.tables import Alias, ModelVersion


def find_row(s: Session, ref: str, *, for_update: bool = False) -> ModelVersion:
    """The row `ref` names: `name` (newest registration), `name:1.2.0` or `name:alias`."""
    name, _, tag = ref.partition(":")
    query = select(ModelVersion).where(ModelVersion.name == name)
    if not tag:
        query = query.order_by(ModelVersion.id.desc()).limit(1)
    elif SEMVER.match(tag):
        query = query.where(ModelVersion.version == tag)
    else:
        query = query.join(Alias, Alias.version_id == ModelVersion.id).where(Alias.alias == tag)
    row = s.scalar(query.with_for_update() if for_update else query)
    if row is None:
        raise not_found(s, ref)
    return row


def not_found(s: Session, ref: str) -> ModelNotFound:
    """The error for an unknown `ref`, naming what does exist."""
    name, _, tag = ref.partition(":")
    versions = s.scalars(select(ModelVersion.version).where(ModelVersion.name == name)).all()
    if versions and tag:
        kind = "version" if SEMVER.match(tag) else "alias"
        tags = list(versions) if kind == "version" else alias_names(s, name)
        return ModelNotFound(f"model '{name}' has no {kind} '{tag}'; it has {', '.join(tags[:8]) or 'none'}")
    names = s.scalars(select(ModelVersion.name).distinct().order_by(ModelVersion.name).limit(6)).all()
    known = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    hint = f"known: {known}" if names else "the registry is empty"
    return ModelNotFound(
        f"model '{ref}' not found; {hint} (register one with `forgeflow models register PATH`; "
        f"embedded: {', '.join(EMBEDDED)})"
    )


def point_alias(s: Session, name: str, alias: str, version_id: int) -> None:
    """Create `name:alias`, or move it to `version_id`."""
    found = s.scalar(select(Alias).where(Alias.name == name, Alias.alias == alias))
    if found is None:
        s.add(Alias(name=name, alias=alias, version_id=version_id))
    else:
        found.version_id = version_id


def aliases_of(s: Session, ids: list[int]) -> dict[int, list[str]]:
    """Version id -> its aliases, sorted."""
    result: dict[int, list[str]] = {}
    if ids:
        for version_id, alias in s.execute(
            select(Alias.version_id, Alias.alias).where(Alias.version_id.in_(ids)).order_by(Alias.alias)
        ):
            result.setdefault(version_id, []).append(alias)
    return result


def alias_names(s: Session, name: str) -> list[str]:
    return list(s.scalars(select(Alias.alias).where(Alias.name == name).order_by(Alias.alias)).all())


def store_entries(artifacts: dict[str, Any]) -> set[str]:
    """Artifact paths that are store entries (relative); embedded models' absolute paths are not."""
    return {a["path"] for a in artifacts.values() if not Path(a["path"]).is_absolute()}
