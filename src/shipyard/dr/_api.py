"""The DR REST API (a FastAPI router): targets against the last drill of each mode, and drills as jobs.

    GET  /dr            the spec's RTO/RPO targets and the last drill of each mode
    POST /dr/drills     {mode}: run `shipyard dr test MODE` as a job               → 202 + job

Both need an admin token. The last drills are read from the audit log, where every drill writes
its outcome and achieved RTO/RPO (`dr.drill`).

No `from __future__ import annotations` here (FastAPI reads the dependency aliases at runtime).
"""

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from ..server._jobs import DRILL_MODES, JobOut, JobRunner, drill_args
from ..state import AuditRow, as_utc

DRILL_SCAN_LIMIT = 500
"""How many of the newest drill entries are read to find the last drill of each mode."""


@dataclass(frozen=True)
class LastDrill:
    mode: str
    passed: bool
    at: dt.datetime
    actor: str
    rto_seconds: float | None
    rpo_seconds: float | None
    failed_phase: str | None
    report: str | None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def last_drills(sessions: sessionmaker[Session]) -> dict[str, LastDrill]:
    """The newest finished drill of each mode, from the audit log (one bounded query)."""
    query = (
        select(AuditRow)
        .where(AuditRow.action == "dr.drill", AuditRow.outcome.in_(("passed", "failed")))
        .order_by(AuditRow.id.desc())
        .limit(DRILL_SCAN_LIMIT)
    )
    found: dict[str, LastDrill] = {}
    with sessions() as session:
        for row in session.scalars(query):
            after = row.after or {}
            mode = after.get("mode")
            if not isinstance(mode, str) or mode in found:
                continue
            achieved = after.get("achieved") or {}
            failed = after.get("failed_phase") or {}
            found[mode] = LastDrill(
                mode=mode,
                passed=row.outcome == "passed",
                at=as_utc(row.at),
                actor=row.actor,
                rto_seconds=_number(achieved.get("rto_seconds")),
                rpo_seconds=_number(achieved.get("rpo_seconds")),
                failed_phase=str(failed.get("name"))
                if isinstance(failed, dict) and failed.get("name")
                else None,
                report=str(after["report"]) if after.get("report") else None,
            )
            if len(found) == len(DRILL_MODES):
                break
    return found


class TargetsOut(BaseModel):
    rto_seconds: float
    rpo_seconds: float
    mttr_seconds: float | None


class DrillOut(BaseModel):
    mode: str
    passed: bool
    at: dt.datetime
    actor: str
    rto_seconds: float | None
    rpo_seconds: float | None
    rto_met: bool | None
    rpo_met: bool | None
    failed_phase: str | None


class DrOut(BaseModel):
    targets: TargetsOut | None
    """None when the server has no stack, or its stack declares no `dr:` targets."""
    drills: list[DrillOut]
    """The last drill of each mode that has run."""


class DrillIn(BaseModel):
    mode: Literal["full", "partial", "backup", "restore"]


def _met(achieved: float | None, target: float | None) -> bool | None:
    return None if achieved is None or target is None else achieved <= target


def build_router(
    sessions: sessionmaker[Session], jobs: JobRunner, *, admin: Callable[..., Awaitable[str]]
) -> APIRouter:
    router = APIRouter(prefix="/dr", tags=["dr"])
    Admin = Annotated[str, Depends(admin)]

    @router.get("", response_model=DrOut)
    def dr_status(_: Admin) -> DrOut:
        """The DR targets and how the last drill of each mode measured against them."""
        targets: TargetsOut | None = None
        try:
            declared = jobs.stack().dr
        except UserError:
            declared = None
        if declared is not None:
            targets = TargetsOut(
                rto_seconds=float(declared.rto),
                rpo_seconds=float(declared.rpo),
                mttr_seconds=float(declared.mttr) if declared.mttr is not None else None,
            )
        drills = [
            DrillOut(
                mode=drill.mode,
                passed=drill.passed,
                at=drill.at,
                actor=drill.actor,
                rto_seconds=drill.rto_seconds,
                rpo_seconds=drill.rpo_seconds,
                rto_met=_met(drill.rto_seconds, targets.rto_seconds if targets else None),
                rpo_met=_met(drill.rpo_seconds, targets.rpo_seconds if targets else None),
                failed_phase=drill.failed_phase,
            )
            for drill in sorted(
                last_drills(sessions).values(),
                key=lambda d: DRILL_MODES.index(d.mode) if d.mode in DRILL_MODES else len(DRILL_MODES),
            )
        ]
        return DrOut(targets=targets, drills=drills)

    @router.post("/drills", status_code=202, response_model=JobOut)
    def run_drill(body: DrillIn, actor: Admin) -> JobOut:
        """Run a DR drill into scratch servers (never the live stack), as a job."""
        return JobOut.of(jobs.get(jobs.start("drill", drill_args(body.mode), actor)))

    return router
