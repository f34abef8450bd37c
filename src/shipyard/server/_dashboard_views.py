"""What the dashboard's pages show, read from the state store: plain data for the templates.

Pure shaping of rows into views (no HTML here): the release of a service with its weights and last
analysis, a flag's state per environment, an audit entry.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..dr import format_seconds, target_met
from ..ops import last_drills, release_view_of
from ..rollout import latest_release
from ..spec import Stack
from ..state import AuditEntry, AuditRow, RolloutRow, query_audit

ACTIVITY_LIMIT = 200


@dataclass(frozen=True)
class VersionWeight:
    version: str
    role: str  # stable | candidate
    weight: int


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


def release_view(sessions: sessionmaker[Session], row: RolloutRow) -> ReleaseView:
    """The release as the rollouts API shows it (`ops.release_view_of`), shaped for the services page."""
    view = release_view_of(sessions, row, steps=False)
    versions = [VersionWeight(view.candidate, "candidate", view.weights.candidate or 0)]
    if view.stable:
        versions.insert(0, VersionWeight(view.stable, "stable", view.weights.stable or 0))
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
    )


def service_release(sessions: sessionmaker[Session], service: str) -> ReleaseView | None:
    row = latest_release(sessions, service)
    return None if row is None else release_view(sessions, row)


@dataclass(frozen=True)
class FlagEnvView:
    name: str
    enabled: bool
    rules_json: str
    rule_count: int


@dataclass(frozen=True)
class FlagView:
    key: str
    type: str
    kind: str
    description: str
    version: int
    environments: tuple[FlagEnvView, ...]


def flag_view(document: dict[str, Any], version: int, environments: list[str]) -> FlagView:
    """A flag with one entry per known environment (those the flag has, plus `environments`)."""
    configured: dict[str, Any] = document.get("environments") or {}
    names = sorted(set(configured) | set(environments))
    return FlagView(
        key=document["key"],
        type=document.get("type", "boolean"),
        kind=document.get("kind", "release"),
        description=document.get("description", ""),
        version=version,
        environments=tuple(
            FlagEnvView(
                name=name,
                enabled=bool((configured.get(name) or {}).get("enabled", False)),
                rules_json=json.dumps((configured.get(name) or {}).get("rules", []), indent=2),
                rule_count=len((configured.get(name) or {}).get("rules", [])),
            )
            for name in names
        ),
    )


@dataclass(frozen=True)
class ActivityView:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target_kind: str
    target: str
    outcome: str
    detail: str


def _detail(entry: AuditEntry) -> str:
    """A short summary of what changed: the inputs or the new object, never more than a line."""
    data = entry.after if entry.after is not None else entry.before
    if not data:
        return ""
    text = json.dumps(data, separators=(", ", ": "), sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def activity(
    sessions: sessionmaker[Session], *, action: str | None = None, limit: int = ACTIVITY_LIMIT
) -> list[ActivityView]:
    """Audit entries, newest first; `action` keeps those whose action starts with it."""
    return [
        ActivityView(
            id=entry.id,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            target_kind=entry.target_kind,
            target=entry.target,
            outcome=entry.outcome,
            detail=_detail(entry),
        )
        for entry in query_audit(sessions, action=action, limit=limit)
    ]


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
