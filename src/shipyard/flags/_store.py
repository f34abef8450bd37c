"""The flag store: flags and segments in the state store, versioned, audited, never a lost update.

Every change runs in one transaction that (1) bumps the flag set's version counter, which
serialises writers on every database, (2) updates the row only if its version is the one the
writer read (compare-and-set: a stale `If-Match` is a PreconditionFailedError, 412, not a silent overwrite),
(3) validates the whole flag set as it would be after the change (references, prerequisite
cycles), and (4) writes an audit record with the object before and after.

What a change does is planned by `FlagDocuments` (pure: the flag set as documents in, the
`FlagChange`s out, or the error the write would raise). The store plans against the rows it has
locked and then applies the plan; a dry run plans against a snapshot and stops there, so that a
preview and a write can never disagree about what is allowed.

Other processes learn of a change in two ways (`VersionProbe`, `FlagStore.listen`): a cheap check
of the committed version that a server makes before every read (so a read can never be older
than a write whose response has come back), and, on PostgreSQL, a NOTIFY on `CHANNEL` sent in the
writing transaction, which wakes every listening server at commit (streams need no read to start).
On SQLite the check before a read is a `SharedVersion` in memory every process maps, which each
write bumps after its commit.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import mmap
import os
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConflictError, InvalidObjectError, NotFoundError, PreconditionFailedError
from ..spec.flags import STORED, Flag, FlagSet, Segment
from ..state import AuditRow, Counter, FlagRow, SegmentRow, as_utc, utcnow

COUNTER = "flagset"
CHANNEL = "shipyard_flags"
"""The PostgreSQL NOTIFY channel a flag write signals on; the payload is the new version."""

log = logging.getLogger(__name__)

ChangeAction = Literal["create", "update", "delete"]
ObjectKind = Literal["flag", "segment"]


@dataclass(frozen=True)
class Stored:
    """A flag (or segment) as stored: its data and its version (the ETag)."""

    data: dict[str, Any]
    version: int


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True)
class FlagChange:
    """One object a write creates, updates or deletes, with its document before and after."""

    action: ChangeAction
    kind: ObjectKind
    target: str
    """The flag's key or the segment's name."""
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    return [
        (".".join(str(p) for p in e["loc"]), str(e["msg"]).removeprefix("Value error, "))
        for e in exc.errors()
    ]


def validate_flag(data: dict[str, Any]) -> Flag:
    """A Flag from its dict form, or InvalidObjectError naming each bad field."""
    try:
        return Flag.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
        raise InvalidObjectError("; ".join(f"{p}: {m}" if p else m for p, m in problems), problems) from None


def validate_segment(data: dict[str, Any]) -> Segment:
    try:
        return Segment.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
        raise InvalidObjectError("; ".join(f"{p}: {m}" if p else m for p, m in problems), problems) from None


def _dump(model: Flag | Segment) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_defaults=True)


def _replacement(key: str, definition: dict[str, Any]) -> dict[str, Any]:
    """The stored document of flag `key` replaced by `definition` (a PUT), validated alone."""
    if definition.get("key", key) != key:
        raise InvalidObjectError("key: a flag's key cannot change; create a new flag", [("key", "immutable")])
    return _dump(validate_flag({**definition, "key": key}))


@dataclass(frozen=True)
class FlagDocuments:
    """The flag set as stored documents (flags by key, segments by name): what changes are planned on.

    Each `plan_*` method returns the changes a write would make, or raises the error the write
    would raise (NotFoundError, PreconditionFailedError for a stale `if_match`, InvalidObjectError). It
    reads and writes nothing.
    """

    flags: Mapping[str, dict[str, Any]]
    segments: Mapping[str, dict[str, Any]]

    @classmethod
    def of(cls, flagset: FlagSet) -> FlagDocuments:
        """The documents of a snapshot (each object dumped as the store keeps it)."""
        return cls({f.key: _dump(f) for f in flagset.flags}, {s.name: _dump(s) for s in flagset.segments})

    def check(self, changes: Iterable[FlagChange]) -> None:
        """InvalidObjectError unless the flag set is valid after `changes` (references, cycles)."""
        flags, segments = dict(self.flags), dict(self.segments)
        for change in changes:
            target = flags if change.kind == "flag" else segments
            if change.after is None:
                target.pop(change.target, None)
            else:
                target[change.target] = change.after
        try:
            # Each changed document was validated strictly on its way in; the set is checked for
            # its references, with stored documents read as stored.
            FlagSet.model_validate(
                {"flags": list(flags.values()), "segments": list(segments.values())}, context=STORED
            )
        except ValidationError as exc:
            problems = _problems(exc)
            raise InvalidObjectError("; ".join(m for _, m in problems), problems) from None

    def _current(self, kind: ObjectKind, target: str) -> dict[str, Any]:
        document = (self.flags if kind == "flag" else self.segments).get(target)
        if document is None:
            raise NotFoundError(f"no {kind} {target!r}")
        return document

    def plan_create(self, data: dict[str, Any]) -> FlagChange:
        flag = validate_flag(data)
        if flag.key in self.flags:
            raise ConflictError(f"flag {flag.key!r} exists; change it with PUT or PATCH")
        change = FlagChange("create", "flag", flag.key, None, _dump(flag))
        self.check([change])
        return change

    def plan_update(
        self,
        key: str,
        version: int,
        *,
        definition: dict[str, Any] | None = None,
        merge_patch: dict[str, Any] | None = None,
        if_match: int | None = None,
    ) -> FlagChange:
        """Replace flag `key` (at `version`) with `definition`, or apply an RFC 7396 `merge_patch`."""
        if (definition is None) == (merge_patch is None):
            raise ValueError("give exactly one of definition and merge_patch")
        before = self._current("flag", key)
        if definition is not None:
            after = _replacement(key, definition)  # a bad body is refused before the version is looked at
            _match(version, if_match, f"flag {key!r}")
        else:
            _match(version, if_match, f"flag {key!r}")
            merged = apply_merge_patch(before, merge_patch)
            if merged.get("key", key) != key:
                raise InvalidObjectError("key: a flag's key cannot change", [("key", "immutable")])
            after = _dump(validate_flag({**merged, "key": key}))
        change = FlagChange("update", "flag", key, before, after)
        self.check([change])
        return change

    def plan_delete(self, key: str, version: int, if_match: int | None = None) -> FlagChange:
        before = self._current("flag", key)
        _match(version, if_match, f"flag {key!r}")
        change = FlagChange("delete", "flag", key, before, None)
        self.check([change])
        return change

    def plan_put_segment(
        self, name: str, data: dict[str, Any], version: int | None, if_match: int | None = None
    ) -> FlagChange:
        """Create segment `name` (`version` None) or replace it (at `version`)."""
        document = _dump(validate_segment({**data, "name": name}))
        before = None if version is None else self._current("segment", name)
        change = FlagChange("create" if before is None else "update", "segment", name, before, document)
        self.check([change])
        if version is None:
            if if_match is not None:
                raise PreconditionFailedError(f"segment {name!r} does not exist (If-Match was given)")
        else:
            _match(version, if_match, f"segment {name!r}")
        return change

    def plan_delete_segment(self, name: str, version: int, if_match: int | None = None) -> FlagChange:
        before = self._current("segment", name)
        _match(version, if_match, f"segment {name!r}")
        change = FlagChange("delete", "segment", name, before, None)
        self.check([change])
        return change

    def plan_import(self, flagset: FlagSet, *, replace_all: bool = False) -> list[FlagChange]:
        """Write every flag and segment of `flagset` (unchanged ones are left alone); with
        `replace_all`, delete the others. Segments come first, so that flags can use new ones."""
        changes: list[FlagChange] = []
        incoming: tuple[tuple[ObjectKind, Mapping[str, dict[str, Any]], dict[str, dict[str, Any]]], ...] = (
            ("segment", self.segments, {s.name: _dump(s) for s in flagset.segments}),
            ("flag", self.flags, {f.key: _dump(f) for f in flagset.flags}),
        )
        for kind, current, new in incoming:
            for target, document in new.items():
                before = current.get(target)
                if before is None:
                    changes.append(FlagChange("create", kind, target, None, document))
                elif before != document:
                    changes.append(FlagChange("update", kind, target, before, document))
            if replace_all:
                changes += [
                    FlagChange("delete", kind, target, before, None)
                    for target, before in current.items()
                    if target not in new
                ]
        self.check(changes)
        return changes


class FlagStore:
    """Flags and segments in the state store. Every method is one transaction."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._listeners: list[Callable[[int], object]] = []
        self._shared: SharedVersion | Literal[False] | None = None  # False: none can be made

    @property
    def engine(self) -> Engine:
        bind = self._sessions.kw.get("bind")
        assert isinstance(bind, Engine), "the flag store's sessions are bound to one engine"
        return bind

    def _sqlite_file(self) -> str | None:
        engine = self.engine
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            return str(engine.url.database)
        return None

    def _shared_version(self) -> SharedVersion | None:
        """The SQLite store's SharedVersion (None on other databases, or where it cannot be made)."""
        if self._shared is None and (path := self._sqlite_file()) is not None:
            self._shared = SharedVersion.beside(path)
        return self._shared or None

    def probe(self) -> VersionProbe:
        """A check of the committed version, cheap enough to make before every read."""
        engine = self.engine
        if (path := self._sqlite_file()) is not None:
            return SqliteProbe(path, self._shared_version())
        if engine.dialect.name == "postgresql":
            return PostgresProbe(engine)
        return VersionProbe(self)

    def listen(self, on_change: Callable[[int | None], object], stop: threading.Event) -> None:
        """Call `on_change(version)` on each NOTIFY until `stop` is set (PostgreSQL; run in a thread).

        `on_change(None)` after each (re)connection: what was committed while nobody listened.
        A lost connection is retried with backoff; the read-path probe keeps reads correct meanwhile.
        """
        delay = 0.1
        while not stop.is_set():
            try:
                connection = _autocommit(self.engine)
                try:
                    connection.execute(f"LISTEN {CHANNEL}")
                    on_change(None)
                    delay = 0.1
                    while not stop.is_set():
                        for note in connection.notifies(timeout=0.5):
                            on_change(int(note.payload) if note.payload.isdigit() else None)
                finally:
                    connection.close()
            except Exception as exc:  # the database restarting must not end the listener
                log.warning("flag change listener: %s; reconnecting in %.1f s", type(exc).__name__, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def subscribe(self, listener: Callable[[int], object]) -> None:
        """Call `listener(version)` after each committed change made through this store."""
        self._listeners.append(listener)

    # --- reading ------------------------------------------------------------------------------

    def version(self) -> int:
        with self._sessions() as session:
            return _counter(session)

    def snapshot(self) -> FlagSet:
        """The whole flag set at one version (read in one transaction)."""
        with self._sessions() as session:
            version = _counter(session)
            flags = [row.document for row in session.scalars(select(FlagRow).order_by(FlagRow.key))]
            segments = [row.document for row in session.scalars(select(SegmentRow).order_by(SegmentRow.name))]
        # Stored documents were validated on the way in; references were checked as a set.
        return FlagSet.model_validate(
            {"version": version, "flags": flags, "segments": segments}, context=STORED
        )

    def get(self, key: str) -> Stored:
        with self._sessions() as session:
            row = session.get(FlagRow, key)
            if row is None:
                raise NotFoundError(f"no flag {key!r}")
            return Stored(row.document, row.version)

    def get_segment(self, name: str) -> Stored:
        with self._sessions() as session:
            row = session.get(SegmentRow, name)
            if row is None:
                raise NotFoundError(f"no segment {name!r}")
            return Stored(row.document, row.version)

    def audit(self, target: str | None = None, kind: str = "flag", limit: int = 100) -> list[AuditEntry]:
        with self._sessions() as session:
            query = select(AuditRow).where(AuditRow.target_kind == kind)
            if target is not None:
                query = query.where(AuditRow.target == target)
            rows = session.scalars(query.order_by(AuditRow.id.desc()).limit(limit))
            return [
                AuditEntry(r.id, as_utc(r.at), r.actor, r.action, r.target, r.before, r.after) for r in rows
            ]

    # --- writing ------------------------------------------------------------------------------

    def create(self, data: dict[str, Any], actor: str) -> Stored:
        flag = validate_flag(data)  # a bad body costs no write transaction
        with self._write(actor) as (session, version):
            stored = _apply(session, _documents(session).plan_create(_dump(flag)), actor)
        self._changed(version)
        assert stored is not None  # a create writes a document
        return stored

    def replace(self, key: str, data: dict[str, Any], actor: str, if_match: int | None = None) -> Stored:
        _replacement(key, data)  # a bad body is a 422 even for a missing flag, as before any lock
        with self._write(actor) as (session, version):
            row = _locked(session, FlagRow, key)
            change = _documents(session).plan_update(key, row.version, definition=data, if_match=if_match)
            stored = _apply(session, change, actor, row.version)
        self._changed(version)
        assert stored is not None  # an update writes a document
        return stored

    def patch(self, key: str, merge_patch: dict[str, Any], actor: str, if_match: int | None = None) -> Stored:
        """Apply an RFC 7396 JSON merge patch to a flag."""
        with self._write(actor) as (session, version):
            row = _locked(session, FlagRow, key)
            change = _documents(session).plan_update(
                key, row.version, merge_patch=merge_patch, if_match=if_match
            )
            stored = _apply(session, change, actor, row.version)
        self._changed(version)
        assert stored is not None  # an update writes a document
        return stored

    def delete(self, key: str, actor: str, if_match: int | None = None) -> None:
        with self._write(actor) as (session, version):
            row = _locked(session, FlagRow, key)
            _apply(session, _documents(session).plan_delete(key, row.version, if_match), actor, row.version)
        self._changed(version)

    def put_segment(self, name: str, data: dict[str, Any], actor: str, if_match: int | None = None) -> Stored:
        validate_segment({**data, "name": name})  # a bad body costs no write transaction
        with self._write(actor) as (session, version):
            row = session.get(SegmentRow, name)
            row_version = None if row is None else row.version
            change = _documents(session).plan_put_segment(name, data, row_version, if_match)
            stored = _apply(session, change, actor, row_version)
        self._changed(version)
        assert stored is not None  # a create or an update writes a document
        return stored

    def delete_segment(self, name: str, actor: str, if_match: int | None = None) -> None:
        with self._write(actor) as (session, version):
            row = _locked(session, SegmentRow, name)
            change = _documents(session).plan_delete_segment(name, row.version, if_match)
            _apply(session, change, actor)
        self._changed(version)

    def import_set(self, flagset: FlagSet, actor: str, *, replace_all: bool = False) -> int:
        """Write every flag and segment of `flagset`; with `replace_all`, delete the others.

        One transaction: the import lands whole or not at all. Returns the new version.
        """
        with self._write(actor) as (session, version):
            flag_versions = {r.key: r.version for r in session.scalars(select(FlagRow))}
            segment_versions = {r.name: r.version for r in session.scalars(select(SegmentRow))}
            for change in _documents(session).plan_import(flagset, replace_all=replace_all):
                versions = flag_versions if change.kind == "flag" else segment_versions
                # Deletions are by key alone: the import replaces whatever is there now.
                row_version = versions.get(change.target) if change.action == "update" else None
                _apply(session, change, actor, row_version)
        self._changed(version)
        return version

    # --- internals ----------------------------------------------------------------------------

    @contextmanager
    def _write(self, actor: str) -> Iterator[tuple[Session, int]]:
        with self._sessions() as session, session.begin():
            # Bumping the counter first takes the write lock on every database (a row lock on
            # PostgreSQL, the database lock on SQLite), so concurrent writers queue here.
            version = _bump(session)
            if session.get_bind().dialect.name == "postgresql":
                # Delivered at commit, to every server listening (and never if this rolls back).
                session.execute(
                    text("SELECT pg_notify(:channel, :version)"),
                    {"channel": CHANNEL, "version": str(version)},
                )
            yield session, version
        # Committed: every reader's next check sees it (before this write's response leaves).
        if (shared := self._shared_version()) is not None:
            shared.bump()

    def _changed(self, version: int) -> None:
        for listener in self._listeners:
            listener(version)


class VersionProbe:
    """The flag set's committed version, read through the store (the fallback: one query)."""

    def __init__(self, store: FlagStore | None = None) -> None:
        self._store = store

    def version(self, *, thorough: bool = False) -> int:
        """The committed version; `thorough`: ask the database even where a cheaper check exists
        (the server's background follower does, so that nothing can hide a commit for long)."""
        assert self._store is not None
        return self._store.version()

    def close(self) -> None:
        """Release the probe's connection (if it has one of its own)."""


_U64 = struct.Struct("<Q")


class SharedVersion:
    """A counter in a small file beside a SQLite store, mapped into the memory of every process.

    Each flag write through a FlagStore adds one to it after its commit, under an exclusive
    `flock` (two writers never store the same number, which a reader would take for no change).
    A reader compares it with the value it last saw: tens of nanoseconds, where `PRAGMA
    data_version` costs microseconds, the largest part of an evaluation's cost. A writer killed
    between its commit and the bump leaves the counter behind; the server's follower asks the
    database itself every few milliseconds (`VersionProbe.version(thorough=True)`), so such a
    write is still seen within that.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._map = mmap.mmap(fd, _U64.size)

    @classmethod
    def beside(cls, database: str) -> SharedVersion | Literal[False]:
        """The counter of the store at `database` (made when missing); False where the file
        cannot be made or mapped (a read-only directory): the probe then asks the database."""
        try:
            fd = os.open(f"{database}.flags-version", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.info("no shared flag version beside %s (%s): reads ask the database", database, exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < _U64.size:
                    os.ftruncate(fd, _U64.size)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            return cls(fd)
        except (OSError, ValueError) as exc:
            os.close(fd)
            log.info("no shared flag version beside %s (%s): reads ask the database", database, exc)
            return False

    def value(self) -> int:
        value: int = _U64.unpack_from(self._map, 0)[0]
        return value

    def bump(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _U64.pack_into(self._map, 0, (self.value() + 1) % (1 << 64))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


class SqliteProbe(VersionProbe):
    """SQLite: the store's SharedVersion, then (when it moved, or when asked to be thorough)
    `PRAGMA data_version` on a connection of its own, then the counter only when that moved.

    The pragma's value changes whenever another connection (any process) has committed to the
    file since this connection last asked, and costs no table read, but still a few microseconds;
    the shared counter costs next to nothing, so a read that finds it unmoved asks nothing more.
    Unrelated writes (jobs, audit) move the pragma too; the counter then says whether the flag set
    changed.
    """

    def __init__(self, path: str, shared: SharedVersion | None = None) -> None:
        super().__init__()
        # Autocommit (isolation_level None): no statement may leave a read transaction open, or
        # this connection would keep seeing the snapshot it started with.
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._data_version: int | None = None
        self._version = 0
        self._shared = shared
        self._shared_seen: int | None = None

    def version(self, *, thorough: bool = False) -> int:
        shared = self._shared
        seen = None
        if shared is not None:
            seen = shared.value()
            if seen == self._shared_seen and not thorough:
                return self._version
        with self._lock:
            data_version = self._connection.execute("PRAGMA data_version").fetchall()[0][0]
            if data_version != self._data_version:
                # Read after the pragma: a commit in between moves the pragma again next time.
                rows = self._connection.execute(
                    "SELECT value FROM counters WHERE name = ?", (COUNTER,)
                ).fetchall()
                self._data_version, self._version = data_version, int(rows[0][0]) if rows else 0
            if seen is not None:
                # Read before the database: a bump made meanwhile makes the next read ask again.
                # Set after `_version`, which a read that finds `seen` unmoved returns unlocked.
                self._shared_seen = seen
            return self._version

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class PostgresProbe(VersionProbe):
    """PostgreSQL: the counter's row by primary key, on a connection of its own (one round trip).

    Servers on other hosts share nothing but the database, so the database is asked: a NOTIFY
    arrives after the commit, not before the writer's response, and may be lost with a connection.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine
        self._lock = threading.Lock()
        self._connection: Any = None

    def version(self, *, thorough: bool = False) -> int:
        with self._lock:
            for attempt in (1, 2):  # a connection the server dropped is replaced once at once
                try:
                    if self._connection is None or self._connection.closed:
                        self._connection = _autocommit(self._engine)
                    row = self._connection.execute(
                        "SELECT value FROM counters WHERE name = %s", (COUNTER,), prepare=True
                    ).fetchone()
                    return int(row[0]) if row else 0
                except Exception:
                    if self._connection is not None:
                        self._connection.close()
                    self._connection = None
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _autocommit(engine: Engine) -> Any:
    """A psycopg connection of the engine's (its connect arguments, its events), out of its pool."""
    proxy = engine.raw_connection()
    connection = proxy.driver_connection  # read before detaching: the proxy forgets it then
    assert connection is not None
    proxy.detach()
    connection.rollback()
    connection.autocommit = True
    return connection


def _counter(session: Session) -> int:
    value = session.scalar(select(Counter.value).where(Counter.name == COUNTER))
    return int(value or 0)


def _bump(session: Session) -> int:
    result = session.execute(update(Counter).where(Counter.name == COUNTER).values(value=Counter.value + 1))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.add(Counter(name=COUNTER, value=1))
        session.flush()
    return _counter(session)


def _documents(session: Session) -> FlagDocuments:
    """The flag set's documents as this transaction sees them."""
    return FlagDocuments(
        {r.key: r.document for r in session.scalars(select(FlagRow))},
        {r.name: r.document for r in session.scalars(select(SegmentRow))},
    )


def _match(current: int, if_match: int | None, what: str) -> None:
    if if_match is not None and if_match != current:
        raise PreconditionFailedError(
            f"{what} is at version {current}, not {if_match}: read it again and retry"
        )


def _locked(session: Session, model: Any, key: str) -> Any:
    row = session.get(model, key, with_for_update=True)
    if row is None:
        raise NotFoundError(f"no {'flag' if model is FlagRow else 'segment'} {key!r}")
    return row


def _apply(session: Session, change: FlagChange, actor: str, version: int | None = None) -> Stored | None:
    """Write one planned change and its audit record; `version` is the row's, for compare-and-set.

    Returns the object as stored now (None once deleted).
    """
    model: Any = FlagRow if change.kind == "flag" else SegmentRow
    column = model.key if model is FlagRow else model.name
    if change.action == "create":
        assert change.after is not None
        session.add(model(**{column.key: change.target}, version=1, document=change.after))
        stored = Stored(change.after, 1)
    elif change.action == "update":
        assert change.after is not None
        assert version is not None
        stored = _cas(session, model, column, change.target, version, change.after)
    else:
        condition = column == change.target
        if version is not None:
            condition &= model.version == version
        session.execute(delete(model).where(condition))
        stored = None
    _audit(session, actor, change.action, change.kind, change.target, change.before, change.after)
    return stored


def _cas(
    session: Session, model: Any, column: Any, key: str, version: int, document: dict[str, Any]
) -> Stored:
    result = session.execute(
        update(model)
        .where(column == key, model.version == version)
        .values(version=version + 1, document=document, updated_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError(f"{key!r} changed while it was being written; read it again and retry")
    return Stored(document, version + 1)


def _audit(
    session: Session,
    actor: str,
    action: str,
    kind: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    session.add(
        AuditRow(actor=actor, action=action, target_kind=kind, target=target, before=before, after=after)
    )


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, null removes a member, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
