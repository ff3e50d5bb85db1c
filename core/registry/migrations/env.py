"""Alembic environment: migrations run on the connection the Registry hands over, never from an ini file."""

from __future__ import annotations

from alembic import context

from core.registry.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the registry migrations through core.registry.migrations.upgrade(connection)")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
