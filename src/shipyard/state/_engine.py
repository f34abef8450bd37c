"""Connecting to the state store: SQLite by default, PostgreSQL by URL; migrations on open.

A store is created (and migrated) only by `open_engine`, which the verbs that record something use;
`open_existing` is for the verbs that only read, and refuses to make an empty store that would answer
"nothing yet" for a store that is somewhere else. A store that cannot be reached raises
StateStoreUnavailable, one line naming it and its address, wherever the connection fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StateStoreMissing, StateStoreUnavailable
from ..host import STATE_DIR_ENV, state_dir


def default_url() -> str:
    """`$SHIPYARD_DATABASE_URL`, else a SQLite file in `$SHIPYARD_STATE_DIR` (default `.shipyard/`)."""
    url = os.environ.get("SHIPYARD_DATABASE_URL")
    if url:
        return url
    # No mkdir here: a read must leave no directory behind (open_engine makes it for a new store).
    return f"sqlite:///{state_dir() / 'state.db'}"


def open_engine(url: str | None = None, *, migrate: bool = True) -> Engine:
    """An engine on the state store, its schema brought up to date when `migrate` (which creates
    the store, and a SQLite file's directory, when there is none)."""
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
    event.listen(engine, "handle_error", _unreachable)
    if migrate:
        database = _sqlite_file(engine.url)
        if database is not None:
            try:
                database.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateStoreUnavailable(
                    f"state store unreachable at {database}: cannot make {database.parent}"
                    f" ({exc.strerror}); check the path and that this user may write there"
                ) from None
        upgrade(engine)
    return engine


def open_existing(url: str | None = None) -> Engine:
    """An engine on a state store that exists already (migrated when behind), for verbs that only
    read: StateStoreMissing, naming where it looked, instead of creating one."""
    engine = open_engine(url, migrate=False)
    database = _sqlite_file(engine.url)
    # A SQLite file is looked for before any connection (connecting would create it); a database
    # server's store is one that holds Alembic's version table (an empty database is no store).
    found = database.is_file() if database is not None else inspect(engine).has_table("alembic_version")
    if not found:
        engine.dispose()
        raise StateStoreMissing(_missing_message(engine.url, database))
    upgrade(engine)  # a store an older shipyard left is brought to head before it is read
    return engine


def _sqlite_file(url: URL) -> Path | None:
    """The SQLite file a URL names; None for another database or an in-memory one."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).resolve()


def _missing_message(url: URL, database: Path | None) -> str:
    where = f"at {database}" if database is not None else f"in {redacted(url)} (no alembic_version table)"
    return (
        f"no state store {where}; this command only reads, and creates none. Run it where the store"
        " is (the directory holding .shipyard/), or point --database-url, $SHIPYARD_DATABASE_URL or"
        f" ${STATE_DIR_ENV} at it; a command that records something (deploy, backup, flags create,"
        " serve) creates one"
    )


def redacted(url: URL | str) -> str:
    """`url` as it may be shown: its password masked, the driver's name left out, the port said."""
    parsed = make_url(url) if isinstance(url, str) else url
    parsed = parsed.set(drivername=parsed.get_backend_name())
    if parsed.get_backend_name() == "postgresql" and parsed.host and parsed.port is None:
        parsed = parsed.set(port=5432)
    return parsed.render_as_string(hide_password=True)


def _unreachable(context: ExceptionContext) -> None:
    """Turn a failure to connect, or a connection lost under a query, into StateStoreUnavailable.

    A SQLAlchemy listener may raise an exception of its own instead of SQLAlchemy's; only a
    connection's failures are turned (a bad query stays a bug with its traceback), and a
    pre-ping's failure is left to the pool, which reconnects (and a failed reconnect comes here).
    """
    if context.is_pre_ping or not (context.connection is None or context.is_disconnect):
        return
    url = context.engine.url if context.engine is not None else None
    where = redacted(url) if url is not None else "the state store"
    reason = next(iter(str(context.original_exception).strip().splitlines()), "")  # one line
    if url is not None and url.password:
        reason = reason.replace(str(url.password), "***")
    database = _sqlite_file(url) if url is not None else None
    check = (
        f"check that {database.parent} exists and this user may write to it"
        if database is not None
        else "check that the database server runs and accepts connections there, and the URL"
        " (--database-url / $SHIPYARD_DATABASE_URL)"
    )
    raise StateStoreUnavailable(
        f"state store unreachable at {where}: {reason or type(context.original_exception).__name__}; {check}"
    ) from context.original_exception


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the API) run while a writer commits; the busy timeout makes a second
    # process wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


HEAD_REVISION = "0011"
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
    with "table ... already exists". The second waits, then finds the store at head. A new SQLite
    file is not even connected to before the lock: each connection switches it to WAL, and two
    doing so at once get "database is locked" without waiting.
    """
    if revision == "head" and not _new_sqlite_file(engine) and _at_head(engine):
        return
    with _sqlite_file_lock(engine):
        if revision == "head" and _at_head(engine):  # another process got there first
            return
        from alembic import command  # noqa: PLC0415 (see HEAD_REVISION)
        from alembic.config import Config  # noqa: PLC0415

        config = Config()
        config.set_main_option("script_location", "shipyard.state:migrations")
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":  # held until this transaction ends
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)  # at head already if another server got there first


def _new_sqlite_file(engine: Engine) -> bool:
    database = _sqlite_file(engine.url)
    return database is not None and (not database.is_file() or database.stat().st_size == 0)


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive flock on `<database>.migrate.lock` beside a SQLite file store."""
    database = _sqlite_file(engine.url)
    if database is None:
        yield
        return
    with database.with_name(database.name + ".migrate.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
