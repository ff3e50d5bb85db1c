"""The Alembic migrations: a fresh database reaches head, a migrated one is left as it is, and the
migrated schema is exactly the ORM's."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from core.registry import Registry
from core.registry.migrations import SCRIPT_LOCATION, alembic_config
from core.registry.tables import Base


def _open(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'r.db'}", store_dir=tmp_path / "store", allowed_roots=[tmp_path])


def test_a_fresh_database_is_migrated_to_head_and_matches_the_orm(tmp_path: Path) -> None:
    _open(tmp_path).close()
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        head = ScriptDirectory.from_config(alembic_config(conn)).get_current_head()
        assert context.get_current_revision() == head == "0002"
        assert compare_metadata(context, Base.metadata) == []
        tables = {"model_versions", "aliases", "registry_flags", "benchmark_runs", "benchmark_results"}
        assert tables <= set(inspect(conn).get_table_names())
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_reopening_a_migrated_database_keeps_its_rows(tmp_path: Path) -> None:
    registry = _open(tmp_path)
    registry.ensure_embedded("smollm2-135m")
    registry.close()
    again = _open(tmp_path)
    assert [m.key for m in again.list().models] == ["smollm2-135m:1.0.0"]
    again.close()


def test_the_migrations_ship_with_the_package(tmp_path: Path) -> None:
    assert (SCRIPT_LOCATION / "env.py").is_file() and (SCRIPT_LOCATION / "script.py.mako").is_file()
    shipped = sorted(p.name for p in (SCRIPT_LOCATION / "versions").glob("*.py"))
    assert shipped == ["0001_initial.py", "0002_benchmarks.py"]
