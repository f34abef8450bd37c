"""Connecting to the state store: SQLite by default, PostgreSQL by URL; migrations on open."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
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


_MIGRATION_LOCK = 0x5348_4950_4D49  # "SHIPMI": PostgreSQL's advisory lock key for migrations


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the Alembic migrations shipped in this package.

    One process at a time: two commands that open a new store at once would both find no schema
    and both create it, and SQLite runs DDL outside the transaction, so the second would fail
    with "table ... already exists". The second waits, then finds the store at head.
    """
    if revision == "head" and _at_head(engine):
        return
    from alembic import command  # noqa: PLC0415 (see HEAD_REVISION)
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", "shipyard.state:migrations")
    with _sqlite_file_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # held until this transaction ends
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)  # at head already when another process got there first


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive flock on `<database>.migrate.lock` beside a SQLite file store."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
