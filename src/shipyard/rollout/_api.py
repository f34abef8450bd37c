"""The releases REST API (a FastAPI router): what runs where, and the verbs the CLI has.

    GET  /rollouts                          the newest release of each service
    GET  /rollouts/{service}                its newest release: weights, phase, plan step, recorded steps
    GET  /rollouts/{service}/history        every release of the service, newest first
    POST /rollouts/{service}/deploy         start `shipyard deploy` as a job            → 202 + job
    POST /rollouts/{service}/rollback       start `shipyard rollout rollback` as a job  → 202 + job
    POST /rollouts/{service}/{command}      promote|abort|pause|resume|retry: queued for the controller

Everything needs an admin token (who released what is operations data). A deploy or a rollback
runs as a job (`shipyard.server` JobRunner) because a release outlives a request; a command is
queued in the store for the controller that runs the release, as `shipyard rollout promote` does.

No `from __future__ import annotations` here: FastAPI must see the dependency aliases built
inside `build_router` as real objects, not strings.
"""

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import NotFoundError, ShipyardError
from ..server._jobs import JobOut, JobRunner, deploy_args, resume_args, rollback_args
from ..state import RolloutRow, RolloutStepRow, as_utc
from ._controller import latest_release, steer_release
from ._model import Command
from ._strategy import RolloutState, plan_steps

HISTORY_LIMIT = 100
ServiceName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", max_length=63)]


class WeightsOut(BaseModel):
    stable: int | None
    candidate: int | None


class CheckOut(BaseModel):
    name: str
    verdict: str
    candidate: float | None
    stable: float | None
    threshold: float
    detail: str


class StepOut(BaseModel):
    seq: int
    action: str
    status: str
    outcome: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None


class RolloutOut(BaseModel):
    id: int
    service: str
    environment: str
    target: str
    strategy: str
    stable: str | None
    candidate: str
    phase: str
    outcome: str | None
    reason: str | None
    actor: str
    weights: WeightsOut
    started_at: dt.datetime
    finished_at: dt.datetime | None


class RolloutDetailOut(RolloutOut):
    step: int | None = None
    """Where the release is in its plan (0-based), and how many steps the plan has."""
    plan_steps: int | None = None
    paused_by: str | None = None
    checks: list[CheckOut] = []
    """The latest analysis' checks (error rate, p99, …) with the values they compared."""
    steps: list[StepOut] = []
    """The actions recorded so far, oldest first."""


class DeployIn(BaseModel):
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$", max_length=128)
    strategy: Literal["blue-green", "canary"] | None = None


class CommandOut(BaseModel):
    rollout_id: int
    command: str
    controller_running: bool
    """Whether a controller ran the release when the command came (it applies it within a second)."""
    job_id: int | None = None
    """With no controller: the job (`shipyard rollout resume`) started to carry the release on and
    apply the command. None when the release is over and the command needs none (all but retry)."""


def _state(row: RolloutRow) -> RolloutState | None:
    if row.target != "local":
        return None
    try:
        return RolloutState.from_data(row.state)
    except (ShipyardError, KeyError, TypeError, ValueError):
        return None  # a release recorded by another version of shipyard: shown without its state


def _weights(row: RolloutRow, state: RolloutState | None) -> WeightsOut:
    if state is not None:
        return WeightsOut(stable=state.weights.stable, candidate=state.weights.candidate)
    kube = dict((row.state or {}).get("kubernetes") or {})
    weights = dict((kube.get("status") or {}).get("weights") or {})
    stable, candidate = weights.get("stable"), weights.get("candidate")
    return WeightsOut(
        stable=stable if isinstance(stable, int) else None,
        candidate=candidate if isinstance(candidate, int) else None,
    )


def _fields(row: RolloutRow, state: RolloutState | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "service": row.service,
        "environment": row.environment,
        "target": row.target,
        "strategy": row.strategy,
        "stable": row.stable,
        "candidate": row.candidate,
        "phase": row.phase,
        "outcome": row.outcome,
        "reason": row.reason,
        "actor": row.actor,
        "weights": _weights(row, state),
        "started_at": as_utc(row.created_at),
        "finished_at": as_utc(row.finished_at) if row.finished_at else None,
    }


def rollout_out(row: RolloutRow) -> RolloutOut:
    return RolloutOut(**_fields(row, _state(row)))


def rollout_detail(sessions: sessionmaker[Session], row: RolloutRow) -> RolloutDetailOut:
    """A release with where it is in its plan, its latest analysis and its recorded steps."""
    state = _state(row)
    with sessions() as session:
        steps = [
            StepOut(
                seq=step.seq,
                action=str(step.action.get("type", "?")),
                status=step.status,
                outcome=str(step.outcome.get("type")) if step.outcome else None,
                started_at=as_utc(step.started_at),
                finished_at=as_utc(step.finished_at) if step.finished_at else None,
            )
            for step in session.scalars(
                select(RolloutStepRow)
                .where(RolloutStepRow.rollout_id == row.id)
                .order_by(RolloutStepRow.seq)
                .limit(500)
            )
        ]
    extra: dict[str, Any] = {"steps": steps}
    if state is not None:
        extra["step"] = state.step
        extra["plan_steps"] = len(plan_steps(state.plan))
        extra["paused_by"] = str(state.paused_by) if state.paused_by else None
        if state.analysis is not None:
            extra["checks"] = [
                CheckOut(
                    name=check.name,
                    verdict=str(check.verdict.value),
                    candidate=check.candidate,
                    stable=check.stable,
                    threshold=check.threshold,
                    detail=check.detail,
                )
                for check in state.analysis.checks
            ]
    return RolloutDetailOut(**_fields(row, state), **extra)


def latest_releases(sessions: sessionmaker[Session]) -> list[RolloutRow]:
    """The newest release of each service, by service name."""
    with sessions() as session:
        newest = select(RolloutRow.service, RolloutRow.id).order_by(RolloutRow.id.desc())
        ids: dict[str, int] = {}
        for service, rollout_id in session.execute(newest):
            ids.setdefault(service, rollout_id)
        rows = list(session.scalars(select(RolloutRow).where(RolloutRow.id.in_(list(ids.values())))))
    return sorted(rows, key=lambda row: row.service)


def build_router(
    sessions: sessionmaker[Session], jobs: JobRunner, *, admin: Callable[..., Awaitable[str]]
) -> APIRouter:
    router = APIRouter(prefix="/rollouts", tags=["rollouts"])
    Admin = Annotated[str, Depends(admin)]

    @router.get("", response_model=list[RolloutOut])
    def list_rollouts(_: Admin) -> list[RolloutOut]:
        """The newest release of every service that has been released."""
        return [rollout_out(row) for row in latest_releases(sessions)]

    @router.get("/{service}", response_model=RolloutDetailOut)
    def get_rollout(service: ServiceName, _: Admin) -> RolloutDetailOut:
        """The service's newest release: versions, weights, phase, plan step, analysis, steps."""
        row = latest_release(sessions, service)
        if row is None:
            raise NotFoundError(f"{service!r} has never been released")
        return rollout_detail(sessions, row)

    @router.get("/{service}/history", response_model=list[RolloutOut])
    def history(service: ServiceName, _: Admin) -> list[RolloutOut]:
        """Past releases of the service, newest first, and how each ended."""
        with sessions() as session:
            rows = list(
                session.scalars(
                    select(RolloutRow)
                    .where(RolloutRow.service == service)
                    .order_by(RolloutRow.id.desc())
                    .limit(HISTORY_LIMIT)
                )
            )
        return [rollout_out(row) for row in rows]

    @router.post("/{service}/deploy", status_code=202, response_model=JobOut)
    def deploy(service: ServiceName, body: DeployIn, actor: Admin) -> JobOut:
        """Release a version with the spec's strategy (or the one given), as a job."""
        job_id = jobs.start("deploy", deploy_args(service, body.version, body.strategy), actor)
        return JobOut.of(jobs.get(job_id))

    @router.post("/{service}/rollback", status_code=202, response_model=JobOut)
    def rollback(service: ServiceName, actor: Admin) -> JobOut:
        """Switch back to the previous version while it is still warm, as a job."""
        job_id = jobs.start("rollback", rollback_args(service), actor)
        return JobOut.of(jobs.get(job_id))

    @router.post("/{service}/{command}", status_code=202, response_model=CommandOut)
    def command(
        service: ServiceName,
        command: Literal["promote", "abort", "pause", "resume", "retry"],
        actor: Admin,
    ) -> CommandOut:
        """Queue a command for the service's release; with no controller running it, start one as a job."""
        rollout_id, running, job_id = steer_or_carry_on(sessions, jobs, service, command, actor)
        return CommandOut(rollout_id=rollout_id, command=command, controller_running=running, job_id=job_id)

    return router


def steer_or_carry_on(
    sessions: sessionmaker[Session], jobs: JobRunner, service: str, command: Command, actor: str
) -> tuple[int, bool, int | None]:
    """Queue promote/abort/pause/resume/retry for the service's release, as `steer_release`. When
    no controller runs it (one was stopped or killed) and it still needs one (it is unfinished,
    or the command is retry), start `shipyard rollout resume` as a job, which applies the command
    first: an operator's abort must not wait for someone at a terminal.

    Returns (rollout id, whether a controller ran the release, the job started or None).
    """
    rollout_id, running = steer_release(sessions, service, command, actor)
    if running:
        return rollout_id, True, None
    row = latest_release(sessions, service)
    if row is None or row.target != "local" or (row.finished_at is not None and command != "retry"):
        return rollout_id, False, None
    return rollout_id, False, jobs.start("resume", resume_args(service), actor)
