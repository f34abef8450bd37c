"""The DR REST API: the targets against the last drill of each mode, the drill history, and drills
as jobs.

    GET  /dr            the spec's RTO/RPO targets and the last drill of each mode
    GET  /dr/drills     finished drills, newest first (?mode=, ?limit=)
    POST /dr/drills     {mode}: run a drill (`RunDrill`) as a job                  → 202 + job

Everything needs an admin token. Drills are read through `shipyard.ops` (`last_drills`,
`drill_history`), whose rows every drill writes when it ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from ...dr import target_met
from ...errors import UserError
from ...jobs import JobRunner
from ...ops import DRILL_MODES, DrillMode, DrillView, RunDrill, drill_history, last_drills
from .jobs import JobOut

HISTORY_MAX = 500


class TargetsOut(BaseModel):
    rto_seconds: float
    rpo_seconds: float
    mttr_seconds: float | None


class DrillOut(BaseModel):
    id: int
    mode: DrillMode
    stack: str
    environment: str
    passed: bool
    at: dt.datetime
    """When the drill ended."""
    actor: str
    rto_seconds: float | None
    rpo_seconds: float | None
    mttr_seconds: float | None
    rto_met: bool | None
    """Against the spec's target now; None when either is missing."""
    rpo_met: bool | None
    failed_phase: str | None
    reason: str | None

    @classmethod
    def of(cls, drill: DrillView, targets: TargetsOut | None) -> DrillOut:
        return cls(
            id=drill.id,
            mode=drill.mode,
            stack=drill.stack,
            environment=drill.environment,
            passed=drill.passed,
            at=drill.finished_at,
            actor=drill.actor,
            rto_seconds=drill.rto_seconds,
            rpo_seconds=drill.rpo_seconds,
            mttr_seconds=drill.mttr_seconds,
            rto_met=target_met(drill.rto_seconds, targets.rto_seconds if targets else None),
            rpo_met=target_met(drill.rpo_seconds, targets.rpo_seconds if targets else None),
            failed_phase=drill.failed_phase,
            reason=drill.reason,
        )


class DrOut(BaseModel):
    targets: TargetsOut | None
    """None when the server has no stack, or its stack declares no `dr:` targets."""
    drills: list[DrillOut]
    """The last drill of each mode that has run."""


class DrillIn(BaseModel):
    mode: DrillMode


def _targets(runner: JobRunner) -> TargetsOut | None:
    try:
        declared = runner.stack().dr
    except UserError:  # no stack served
        return None
    if declared is None:
        return None
    return TargetsOut(
        rto_seconds=float(declared.rto),
        rpo_seconds=float(declared.rpo),
        mttr_seconds=float(declared.mttr) if declared.mttr is not None else None,
    )


def build_router(
    sessions: sessionmaker[Session], runner: JobRunner, *, admin: Callable[..., Awaitable[str]]
) -> APIRouter:
    router = APIRouter(prefix="/dr", tags=["dr"])

    @router.get("", response_model=DrOut)
    def dr_status(_: str = Depends(admin)) -> DrOut:
        """The DR targets and how the last drill of each mode measured against them."""
        targets = _targets(runner)
        last = last_drills(sessions)
        drills = [DrillOut.of(last[mode], targets) for mode in DRILL_MODES if mode in last]
        return DrOut(targets=targets, drills=drills)

    @router.get("/drills", response_model=list[DrillOut])
    def list_drills(
        _: str = Depends(admin),
        mode: DrillMode | None = None,
        limit: int = Query(50, ge=1, le=HISTORY_MAX),
    ) -> list[DrillOut]:
        """Finished drills, newest first, each against the spec's targets now."""
        targets = _targets(runner)
        return [DrillOut.of(drill, targets) for drill in drill_history(sessions, limit=limit, mode=mode)]

    @router.post("/drills", status_code=202, response_model=JobOut)
    def start_drill(body: DrillIn, actor: str = Depends(admin)) -> JobOut:
        """Run a DR drill into scratch servers (never the live stack), as a job."""
        return JobOut.of(runner.get(runner.start(RunDrill(mode=body.mode), actor)))

    return router
