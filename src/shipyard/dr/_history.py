"""The drills that ran: written once per finished drill, read by everything that shows them.

A drill's row (`DrillRow`) is the one record of what it achieved. The API, the metrics collector,
the dashboard and MTTR read it through `drill_history` and `last_drills` here, as `DrillView`s;
nothing reads drill results from the audit log or the report files.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..spec import DrillMode
from ..state import DrillRow, as_utc

HISTORY_LIMIT = 50
"""How many drills `drill_history` returns unless told."""


class DrillView(BaseModel):
    """One finished drill, as every reader shows it."""

    model_config = ConfigDict(frozen=True)

    id: int
    stack: str
    environment: str
    mode: DrillMode
    passed: bool
    actor: str
    started_at: dt.datetime | None
    """None for drills recorded before drills had a table of their own."""
    finished_at: dt.datetime
    rto_seconds: float | None
    """None when the drill did not recover (a phase failed, or an error stopped it)."""
    rpo_seconds: float | None
    mttr_seconds: float | None
    failed_phase: str | None
    reason: str | None
    """Why it failed: the failed phase's reason, or the error that stopped the drill."""
    report: str | None
    """The JSON report's path."""

    @classmethod
    def of(cls, row: DrillRow) -> DrillView:
        return cls(
            id=row.id,
            stack=row.stack,
            environment=row.environment,
            mode=row.mode,  # pydantic checks it is one of DRILL_MODES
            passed=row.passed,
            actor=row.actor,
            started_at=as_utc(row.started_at) if row.started_at is not None else None,
            finished_at=as_utc(row.finished_at),
            rto_seconds=row.rto_seconds,
            rpo_seconds=row.rpo_seconds,
            mttr_seconds=row.mttr_seconds,
            failed_phase=row.failed_phase,
            reason=row.reason,
            report=row.report,
        )


def record_drill(sessions: sessionmaker[Session], row: DrillRow) -> int:
    """Store a finished drill; its id."""
    with sessions() as session, session.begin():
        session.add(row)
        session.flush()
        return row.id


def drill_history(
    sessions: sessionmaker[Session],
    *,
    limit: int | None = HISTORY_LIMIT,
    mode: DrillMode | None = None,
    stack: str | None = None,
    environment: str | None = None,
) -> list[DrillView]:
    """Finished drills, newest first, optionally of one mode, stack and environment; all of them
    when `limit` is None."""
    query = select(DrillRow).order_by(DrillRow.id.desc())
    if mode is not None:
        query = query.where(DrillRow.mode == mode)
    if stack is not None:
        query = query.where(DrillRow.stack == stack)
    if environment is not None:
        query = query.where(DrillRow.environment == environment)
    if limit is not None:
        query = query.limit(limit)
    with sessions() as session:
        return [DrillView.of(row) for row in session.scalars(query)]


def last_drills(
    sessions: sessionmaker[Session], *, stack: str | None = None, environment: str | None = None
) -> dict[str, DrillView]:
    """The newest finished drill of each mode that has run, by mode (one query)."""
    newest = select(func.max(DrillRow.id)).group_by(DrillRow.mode)
    if stack is not None:
        newest = newest.where(DrillRow.stack == stack)
    if environment is not None:
        newest = newest.where(DrillRow.environment == environment)
    query = select(DrillRow).where(DrillRow.id.in_(newest))
    with sessions() as session:
        views = [DrillView.of(row) for row in session.scalars(query)]
    return {view.mode: view for view in views}
