"""The registry's database engine: SQLite set up for several processes, or any SQLAlchemy URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from core.registry import migrations

BUSY_MS = 30_000  # how long a SQLite writer waits for another process's transaction
WRITE = {"registry_write": True}  # execution options of a write transaction


def open_engine(url: str) -> Engine:
    """An engine for `url`, its schema migrated to the newest revision."""
    engine = _make_engine(url)
    with engine.execution_options(**WRITE).begin() as conn:  # serialised: a fresh DB is migrated once
        migrations.upgrade(conn)
    return engine


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_MS / 1000})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy's BEGIN below, not pysqlite's: transactional DDL
        cursor = dbapi_conn.cursor()
        for pragma in (
            f"busy_timeout={BUSY_MS}",
            "journal_mode=WAL",
            "foreign_keys=ON",
            "synchronous=NORMAL",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # a writer takes the write lock up front: a deferred transaction that reads, then writes,
        # fails at once with SQLITE_BUSY when another process wrote in between, busy_timeout or not
        conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get("registry_write") else "BEGIN"
        )

    return engine
