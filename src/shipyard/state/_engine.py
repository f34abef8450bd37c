"""Connecting to the state store: SQLite by default, PostgreSQL by URL; migrations on open."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ..host import state_dir


def default_url() -> str:
    """`$SHIPYARD_DATABASE_URL`, else a SQLite file in `$SHIPYARD_STATE_DIR` (default `.shipyard/`)."""
    url = os.environ.get("SHIPYARD_DATABASE_URL")
    if url:
        return url
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'state.db'}"


def open_engine(url: str | None = None, *, migrate: bool = True) -> Engine:
    """An engine on the state store, its schema brought up to date when `migrate`."""
    url = url or default_url()
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    if migrate:
        upgrade(engine)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the API) run while a writer commits; the busy timeout makes a second
    # process wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


HEAD_REVISION = "0008"
"""The newest migration (a test checks it against Alembic's head): a store already there is opened
without loading Alembic, which costs every CLI command a quarter of a second."""


def _at_head(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            current = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:  # a new store: no version table yet
        return False
    return bool(current == HEAD_REVISION)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the Alembic migrations shipped in this package."""
    if revision == "head" and _at_head(engine):
        return
    from alembic import command  # noqa: PLC0415 (see HEAD_REVISION)
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", "shipyard.state:migrations")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
