"""Alembic environment: run on the connection shipyard hands over (see `_engine.upgrade`)."""

from __future__ import annotations

from alembic import context

from shipyard.state._models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
