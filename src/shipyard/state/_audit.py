"""The audit log: writing one entry, reading it back, and pruning it by the spec's retention.

An entry is written in a transaction of its own, so it stands even if the work then fails.
Retention (seed 001): entries older than `retention` go, except those whose action starts with
one of `compliance_actions`, which are kept for `compliance_retention`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, false, func, not_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from ._models import AuditRow, as_utc

MAX_LIMIT = 10_000
_SINCE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def record_audit(
    sessions: sessionmaker[Session],
    *,
    actor: str,
    action: str,
    target_kind: str,
    target: str,
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> None:
    """Append who did what to which object; `outcome` is e.g. started, ok or failed."""
    with sessions() as session, session.begin():
        session.add(
            AuditRow(
                actor=actor[:128],
                action=action[:64],
                target_kind=target_kind[:64],
                target=target[:256],
                before=before,
                after=after,
                outcome=outcome[:32],
            )
        )


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target_kind: str
    target: str
    outcome: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """`7d`, `12h`, `30m`, `90s`, `2w` before `now`, or an ISO 8601 moment (UTC when it names no zone)."""
    match = _SINCE.match(text)
    # An age older than the calendar, or a moment whose UTC falls off one of its ends (year 1 at
    # +01:00), is that end of time rather than an OverflowError (a 500 from the API).
    if match:
        try:
            return now - dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
        except OverflowError:
            return dt.datetime.min.replace(tzinfo=dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(
            f"--since {text[:40]!r}: give an age like 7d, 12h, 30m or a moment like 2026-12-01T06:00:00Z"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        return (dt.datetime.min if moment.year == 1 else dt.datetime.max).replace(tzinfo=dt.UTC)


def query_audit(
    sessions: sessionmaker[Session],
    *,
    since: dt.datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
    target: str | None = None,
    until: dt.datetime | None = None,
    older_than: int | None = None,
    newer_than: int | None = None,
) -> list[AuditEntry]:
    """Entries newest first: at or after `since` and before `until`, by `actor` (exact), whose
    action starts with `action` and whose target with `target`.

    Paging by keyset: `older_than`/`newer_than` an entry's id gives the `limit` entries right after
    or right before it in that order (the newest first either way)."""
    newest_first = (AuditRow.at.desc(), AuditRow.id.desc())
    query = select(AuditRow).order_by(*newest_first)
    if since is not None:
        query = query.where(AuditRow.at >= since.astimezone(dt.UTC))
    if until is not None:
        query = query.where(AuditRow.at < until.astimezone(dt.UTC))
    if actor:
        query = query.where(AuditRow.actor == actor)
    if action:
        query = query.where(AuditRow.action.startswith(action, autoescape=True))
    if target:
        query = query.where(AuditRow.target.startswith(target, autoescape=True))
    if older_than is not None:
        at = select(AuditRow.at).where(AuditRow.id == older_than).scalar_subquery()
        query = query.where(or_(AuditRow.at < at, and_(AuditRow.at == at, AuditRow.id < older_than)))
    if newer_than is not None:
        at = select(AuditRow.at).where(AuditRow.id == newer_than).scalar_subquery()
        query = query.where(or_(AuditRow.at > at, and_(AuditRow.at == at, AuditRow.id > newer_than)))
        # The ones right before the cursor: the oldest of the newer ones, shown newest first.
        query = query.order_by(None).order_by(AuditRow.at.asc(), AuditRow.id.asc())
    query = query.limit(max(1, min(limit, MAX_LIMIT)))
    with sessions() as session:
        rows = list(session.scalars(query))
        if newer_than is not None:
            rows.reverse()
        return [
            AuditEntry(
                id=row.id,
                at=as_utc(row.at),
                actor=row.actor,
                action=row.action,
                target_kind=row.target_kind,
                target=row.target,
                outcome=row.outcome,
                before=row.before,
                after=row.after,
            )
            for row in rows
        ]


@dataclass(frozen=True)
class AuditCutoffs:
    """Entries before `regular` go unless they are compliance entries, which go before `compliance`."""

    regular: dt.datetime
    compliance: dt.datetime
    compliance_actions: tuple[str, ...]


def audit_cutoffs(
    now: dt.datetime, retention_s: float, compliance_retention_s: float, compliance_actions: Sequence[str]
) -> AuditCutoffs:
    """The cutoffs for a prune at `now`; a compliance entry is never kept for less than the rest."""
    if retention_s <= 0 or compliance_retention_s <= 0:
        raise UserError("audit retention must be longer than zero")
    keep_compliance = max(retention_s, compliance_retention_s)
    return AuditCutoffs(
        regular=now - dt.timedelta(seconds=retention_s),
        compliance=now - dt.timedelta(seconds=keep_compliance),
        compliance_actions=tuple(p for p in compliance_actions if p),
    )


def is_compliance(action: str, prefixes: Sequence[str]) -> bool:
    return any(action.startswith(prefix) for prefix in prefixes if prefix)


def expired(at: dt.datetime, action: str, cutoffs: AuditCutoffs) -> bool:
    """Whether a prune with these cutoffs removes an entry written at `at` with `action`."""
    limit = cutoffs.compliance if is_compliance(action, cutoffs.compliance_actions) else cutoffs.regular
    return at < limit


def _expired_clause(cutoffs: AuditCutoffs) -> ColumnElement[bool]:
    compliance: ColumnElement[bool] = (
        or_(*(AuditRow.action.startswith(p, autoescape=True) for p in cutoffs.compliance_actions))
        if cutoffs.compliance_actions
        else false()
    )
    return or_(
        AuditRow.at < cutoffs.compliance.astimezone(dt.UTC),
        (AuditRow.at < cutoffs.regular.astimezone(dt.UTC)) & not_(compliance),
    )


@dataclass(frozen=True)
class AuditPrune:
    removed: int
    cutoffs: AuditCutoffs
    dry_run: bool


def prune_audit(
    sessions: sessionmaker[Session], cutoffs: AuditCutoffs, *, dry_run: bool = False
) -> AuditPrune:
    """Remove (or with `dry_run` count) the entries past their retention."""
    clause = _expired_clause(cutoffs)
    with sessions() as session, session.begin():
        if dry_run:
            count = session.scalar(select(func.count()).select_from(AuditRow).where(clause)) or 0
        else:
            result = session.execute(delete(AuditRow).where(clause))
            count = int(result.rowcount)  # type: ignore[attr-defined]
    return AuditPrune(removed=int(count), cutoffs=cutoffs, dry_run=dry_run)
