"""What the dashboard's pages show, read from the state store: plain data for the templates.

Pure shaping of rows into views (no HTML here): the release of a service with its weights and last
analysis, the actions the audit log holds, the DR targets against the last drills.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..dr import format_seconds, target_met
from ..ops import ReleaseView as OpsReleaseView
from ..ops import last_drills, release_view_of
from ..rollout import latest_release
from ..spec import Stack
from ..state import AuditRow, RolloutRow


@dataclass(frozen=True)
class VersionWeight:
    version: str
    role: str  # stable | candidate; once the release ended: live, retired, rolled back, …
    weight: int


@dataclass(frozen=True)
class StepLine:
    """One recorded step of a release, with how long it took (or has been running)."""

    what: str
    status: str  # started | done | failed
    duration: str


@dataclass(frozen=True)
class ReleaseView:
    """The newest release of a service as the services page shows it."""

    id: int
    service: str
    strategy: str
    phase: str
    outcome: str | None
    reason: str
    actor: str
    versions: tuple[VersionWeight, ...]
    verdict: str | None
    error_rate: float | None
    stable_error_rate: float | None
    p99_ms: float | None
    stable_p99_ms: float | None
    health: str | None
    commands: tuple[str, ...]
    finished: bool
    updated_at: dt.datetime
    step: int | None = None
    """local: the plan's step the release is at, 1-based ("step 3 of 7"), and its length."""
    plan_steps: int | None = None
    step_what: str | None = None
    history: tuple[StepLine, ...] = ()
    """The recorded steps, oldest first, each with its duration."""
    duration: str | None = None
    """How long the release took (or has been running)."""


def _roles(view: OpsReleaseView) -> tuple[str, str]:
    """The (stable's, candidate's) labels: while it runs, their roles; once it ended, what became
    of each (after a success the candidate is the live version and the old one retired)."""
    if not view.finished:
        return "stable", "candidate"
    if view.outcome == "succeeded":
        return "retired", "live"
    ended = (view.outcome or "ended").replace("_", " ")
    # A candidate that kept traffic (nothing to go back to) still serves.
    return "live", ("live" if (view.weights.candidate or 0) > 0 else ended)


def _duration(started: dt.datetime, finished: dt.datetime | None) -> str:
    return format_seconds(((finished or dt.datetime.now(dt.UTC)) - started).total_seconds())


def release_view(sessions: sessionmaker[Session], row: RolloutRow) -> ReleaseView:
    """The release as the rollouts API shows it (`ops.release_view_of`), shaped for the services page."""
    view = release_view_of(sessions, row, steps=True)
    stable_role, candidate_role = _roles(view)
    versions = [VersionWeight(view.candidate, candidate_role, view.weights.candidate or 0)]
    if view.stable:
        versions.insert(0, VersionWeight(view.stable, stable_role, view.weights.stable or 0))
    checks = {check.name: check for check in view.checks}
    error_rate = checks.get("error_rate")
    # Both p99 checks carry the p99s in ms (the ratio check compares them to the stable's).
    p99 = checks.get("p99_ms") or checks.get("p99_ratio")
    return ReleaseView(
        id=view.id,
        service=view.service,
        strategy=view.strategy,
        phase=view.phase,
        outcome=view.outcome,
        reason=view.reason or view.detail,
        actor=view.actor,
        versions=tuple(versions),
        verdict=view.verdict,
        error_rate=error_rate.candidate if error_rate else None,
        stable_error_rate=error_rate.stable if error_rate else None,
        p99_ms=p99.candidate if p99 else None,
        stable_p99_ms=p99.stable if p99 else None,
        health=view.health,
        commands=view.commands,
        finished=view.finished,
        updated_at=view.updated_at,
        step=None if view.step is None else view.step + 1,
        plan_steps=view.plan_steps,
        step_what=view.step_what,
        history=tuple(
            StepLine(step.what, step.status, _duration(step.started_at, step.finished_at))
            for step in view.steps
        ),
        duration=_duration(view.started_at, view.finished_at),
    )


def service_release(sessions: sessionmaker[Session], service: str) -> ReleaseView | None:
    row = latest_release(sessions, service)
    return None if row is None else release_view(sessions, row)


def audit_actions(sessions: sessionmaker[Session]) -> list[str]:
    """Every action the audit log holds, for the filter's choices."""
    with sessions() as session:
        return sorted(set(session.scalars(select(AuditRow.action).distinct())))


@dataclass(frozen=True)
class LastDrill:
    """The newest finished drill of one mode, as the DR page's table shows it (None: never run)."""

    mode: str
    at: str | None
    result: str | None
    reason: str
    rto: str | None
    rto_verdict: str | None
    rpo: str | None
    rpo_verdict: str | None


@dataclass(frozen=True)
class DrOverview:
    rto: str | None
    rpo: str | None
    modes: tuple[LastDrill, ...]


def _seconds(value: float | None) -> str | None:
    return format_seconds(value) if value is not None else None


def dr_overview(sessions: sessionmaker[Session], stack: Stack | None, modes: tuple[str, ...]) -> DrOverview:
    """The spec's targets against the newest finished drill of each mode."""
    targets = stack.dr if stack is not None else None
    drills = last_drills(sessions)
    rows = []
    for mode in modes:
        last = drills.get(mode)
        rows.append(
            LastDrill(
                mode=mode,
                at=last.finished_at.strftime("%Y-%m-%d %H:%M:%S") if last else None,
                result=("pass" if last.passed else "fail") if last else None,
                reason=f"failed at {last.failed_phase}" if last and last.failed_phase else "",
                rto=_seconds(last.rto_seconds) if last else None,
                rto_verdict=_verdict(last.rto_seconds if last else None, targets.rto if targets else None),
                rpo=_seconds(last.rpo_seconds) if last else None,
                rpo_verdict=_verdict(last.rpo_seconds if last else None, targets.rpo if targets else None),
            )
        )
    return DrOverview(
        rto=format_seconds(targets.rto) if targets is not None else None,
        rpo=format_seconds(targets.rpo) if targets is not None else None,
        modes=tuple(rows),
    )


def _verdict(achieved: float | None, target: float | None) -> str | None:
    met = target_met(achieved, target)
    return None if met is None else "pass" if met else "fail"
