"""The flag store: flags and segments in the state store, versioned, audited, never a lost update.

Every change runs in one transaction that (1) bumps the flag set's version counter, which
serialises writers on every database, (2) updates the row only if its version is the one the
writer read (compare-and-set: a stale `If-Match` is a ConflictError, not a silent overwrite),
(3) validates the whole flag set as it would be after the change (references, prerequisite
cycles), and (4) writes an audit record with the object before and after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConflictError, InvalidObjectError, NotFoundError
from ..state import AuditRow, Counter, FlagRow, SegmentRow, as_utc, utcnow
from ._model import Flag, FlagSet, Segment

COUNTER = "flagset"


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


class FlagStore:
    """Flags and segments in the state store. Every method is one transaction."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._listeners: list[Callable[[int], object]] = []

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
        return FlagSet.model_validate({"version": version, "flags": flags, "segments": segments})

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
        flag = validate_flag(data)
        with self._write(actor) as (session, version):
            if session.get(FlagRow, flag.key) is not None:
                raise ConflictError(f"flag {flag.key!r} exists; change it with PUT or PATCH")
            document = _dump(flag)
            _check_set(session, flags={flag.key: document})
            session.add(FlagRow(key=flag.key, version=1, document=document))
            _audit(session, actor, "create", "flag", flag.key, None, document)
        self._changed(version)
        return Stored(document, 1)

    def replace(self, key: str, data: dict[str, Any], actor: str, if_match: int | None = None) -> Stored:
        if data.get("key", key) != key:
            raise InvalidObjectError(
                "key: a flag's key cannot change; create a new flag", [("key", "immutable")]
            )
        flag = validate_flag({**data, "key": key})
        with self._write(actor) as (session, version):
            row = _locked(session, FlagRow, key, if_match)
            stored = _update_flag(session, row, _dump(flag), actor)
        self._changed(version)
        return stored

    def patch(self, key: str, merge_patch: dict[str, Any], actor: str, if_match: int | None = None) -> Stored:
        """Apply an RFC 7396 JSON merge patch to a flag."""
        with self._write(actor) as (session, version):
            row = _locked(session, FlagRow, key, if_match)
            merged = apply_merge_patch(row.document, merge_patch)
            if merged.get("key", key) != key:
                raise InvalidObjectError("key: a flag's key cannot change", [("key", "immutable")])
            stored = _update_flag(session, row, _dump(validate_flag({**merged, "key": key})), actor)
        self._changed(version)
        return stored

    def delete(self, key: str, actor: str, if_match: int | None = None) -> None:
        with self._write(actor) as (session, version):
            row = _locked(session, FlagRow, key, if_match)
            _check_set(session, flags={key: None})
            before = row.document
            session.execute(delete(FlagRow).where(FlagRow.key == key, FlagRow.version == row.version))
            _audit(session, actor, "delete", "flag", key, before, None)
        self._changed(version)

    def put_segment(self, name: str, data: dict[str, Any], actor: str, if_match: int | None = None) -> Stored:
        segment = validate_segment({**data, "name": name})
        document = _dump(segment)
        with self._write(actor) as (session, version):
            row = session.get(SegmentRow, name)
            _check_set(session, segments={name: document})
            if row is None:
                if if_match is not None:
                    raise ConflictError(f"segment {name!r} does not exist (If-Match was given)")
                session.add(SegmentRow(name=name, version=1, document=document))
                stored = Stored(document, 1)
                _audit(session, actor, "create", "segment", name, None, document)
            else:
                _match(row.version, if_match, f"segment {name!r}")
                before = row.document
                stored = _cas(session, SegmentRow, SegmentRow.name, name, row.version, document)
                _audit(session, actor, "update", "segment", name, before, document)
        self._changed(version)
        return stored

    def delete_segment(self, name: str, actor: str, if_match: int | None = None) -> None:
        with self._write(actor) as (session, version):
            row = _locked(session, SegmentRow, name, if_match)
            _check_set(session, segments={name: None})
            session.execute(delete(SegmentRow).where(SegmentRow.name == name))
            _audit(session, actor, "delete", "segment", name, row.document, None)
        self._changed(version)

    def import_set(self, flagset: FlagSet, actor: str, *, replace_all: bool = False) -> int:
        """Write every flag and segment of `flagset`; with `replace_all`, delete the others.

        One transaction: the import lands whole or not at all. Returns the new version.
        """
        flags: dict[str, dict[str, Any] | None] = {f.key: _dump(f) for f in flagset.flags}
        segments: dict[str, dict[str, Any] | None] = {s.name: _dump(s) for s in flagset.segments}
        with self._write(actor) as (session, version):
            existing_flags = {r.key: r for r in session.scalars(select(FlagRow))}
            existing_segments = {r.name: r for r in session.scalars(select(SegmentRow))}
            if replace_all:
                flags.update(dict.fromkeys(k for k in existing_flags if k not in flags))
                segments.update(dict.fromkeys(n for n in existing_segments if n not in segments))
            _check_set(session, flags=flags, segments=segments)
            for name, document in segments.items():
                _upsert(session, SegmentRow, "segment", name, existing_segments.get(name), document, actor)
            for key, document in flags.items():
                _upsert(session, FlagRow, "flag", key, existing_flags.get(key), document, actor)
        self._changed(version)
        return version

    # --- internals ----------------------------------------------------------------------------

    @contextmanager
    def _write(self, actor: str) -> Iterator[tuple[Session, int]]:
        with self._sessions() as session, session.begin():
            # Bumping the counter first takes the write lock on every database (a row lock on
            # PostgreSQL, the database lock on SQLite), so concurrent writers queue here.
            version = _bump(session)
            yield session, version

    def _changed(self, version: int) -> None:
        for listener in self._listeners:
            listener(version)


def _counter(session: Session) -> int:
    value = session.scalar(select(Counter.value).where(Counter.name == COUNTER))
    return int(value or 0)


def _bump(session: Session) -> int:
    result = session.execute(update(Counter).where(Counter.name == COUNTER).values(value=Counter.value + 1))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.add(Counter(name=COUNTER, value=1))
        session.flush()
    return _counter(session)


def _match(current: int, if_match: int | None, what: str) -> None:
    if if_match is not None and if_match != current:
        raise ConflictError(f"{what} is at version {current}, not {if_match}: read it again and retry")


def _locked(session: Session, model: Any, key: str, if_match: int | None) -> Any:
    row = session.get(model, key, with_for_update=True)
    what = "flag" if model is FlagRow else "segment"
    if row is None:
        raise NotFoundError(f"no {what} {key!r}")
    _match(row.version, if_match, f"{what} {key!r}")
    return row


def _update_flag(session: Session, row: FlagRow, document: dict[str, Any], actor: str) -> Stored:
    """Write a changed flag: check the set as it will be, compare-and-set, audit."""
    _check_set(session, flags={row.key: document})
    before = row.document
    stored = _cas(session, FlagRow, FlagRow.key, row.key, row.version, document)
    _audit(session, actor, "update", "flag", row.key, before, document)
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


def _upsert(
    session: Session, model: Any, kind: str, key: str, row: Any, document: dict[str, Any] | None, actor: str
) -> None:
    column = model.key if model is FlagRow else model.name
    if document is None:
        session.execute(delete(model).where(column == key))
        _audit(session, actor, "delete", kind, key, row.document, None)
    elif row is None:
        session.add(model(**{"key" if model is FlagRow else "name": key}, version=1, document=document))
        _audit(session, actor, "create", kind, key, None, document)
    elif row.document != document:
        _cas(session, model, column, key, row.version, document)
        _audit(session, actor, "update", kind, key, row.document, document)


def _check_set(
    session: Session,
    flags: Mapping[str, dict[str, Any] | None] | None = None,
    segments: Mapping[str, dict[str, Any] | None] | None = None,
) -> None:
    """Validate the flag set as it will be after the change (None removes an object)."""
    all_flags = {r.key: r.document for r in session.scalars(select(FlagRow))}
    all_segments = {r.name: r.document for r in session.scalars(select(SegmentRow))}
    for target, changes in ((all_flags, flags or {}), (all_segments, segments or {})):
        for key, document in changes.items():
            if document is None:
                target.pop(key, None)
            else:
                target[key] = document
    try:
        FlagSet.model_validate({"flags": list(all_flags.values()), "segments": list(all_segments.values())})
    except ValidationError as exc:
        problems = _problems(exc)
        raise InvalidObjectError("; ".join(m for _, m in problems), problems) from None


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
