"""Alembic migrations of the registry schema, run programmatically when a Registry opens.

`upgrade(connection)` brings a database (empty, or at any earlier revision) to head; this package's
directory is the Alembic script location, so no alembic.ini is needed.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = Path(__file__).parent


def alembic_config(connection: Connection) -> Config:
    """An Alembic config for this package that runs on `connection` (env.py reads it from attributes)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection) -> None:
    """Migrate the database behind `connection` to the newest revision (a no-op when it is there)."""
    command.upgrade(alembic_config(connection), "head")
