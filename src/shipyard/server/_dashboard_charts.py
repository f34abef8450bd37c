"""What the dashboard's charts show, read from the state store and drawn by `_charts`.

Each chart is built from what the product already records; nothing is sampled for the charts:

* a release: its recorded steps (`rollout_steps`) as a timeline, with the plan's steps not reached
  yet; the traffic split after each transition of its history; and each analysis window's checks
  (the candidate's and the stable's values, and the limit they were judged against);
* a service: the error rate and p99 of every analysis window of its releases in the last
  SERVICE_HOURS (its traffic between releases too, minute by minute, is `_dashboard_traffic`'s);
* backups: per source, each set's artefact size and duration, and the age of the newest intact
  copy over time (a sawtooth: it grows until the next set holding the source is stored), against
  the spec's RPO (`dr.rpo`, the limit `backup freshness` applies);
* DR: every drill's achieved RTO and RPO, by mode, against the spec's targets.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..backup import BackupSet
from ..dr import format_seconds, target_met
from ..errors import ShipyardError
from ..ops import drill_history, release_steps
from ..rollout import Phase, RolloutState, latest_release, plan_steps
from ..spec import Stack
from ..state import RolloutRow, as_utc
from ._charts import Limit, Point, Series, Span, byte_size, line_chart, millis, number, percent, timeline

SERVICE_HOURS = 24
"""How far back a service's charts look."""
SERVICE_RELEASES = 50
"""Releases of one service read for its charts at most (the newest)."""
DRILLS = 50
"""Drills shown at most (the newest)."""
FINISHED = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED})
CHECK_FORMATS = {"error_rate": percent, "log_loss": percent, "p99_ms": millis, "p99_ratio": millis}
"""How each built-in check's values read; a Prometheus check's are plain numbers."""


@dataclass(frozen=True)
class ReleaseCharts:
    timeline: Markup
    traffic: Markup
    analysis: tuple[Markup, ...]
    """One chart per check that measured something (error rate, p99, …)."""


@dataclass(frozen=True)
class SourceCharts:
    source: str
    size: Markup
    duration: Markup
    age: Markup


@dataclass(frozen=True)
class DrCharts:
    rto: Markup
    rpo: Markup


def _state(row: RolloutRow) -> RolloutState | None:
    """A local release's strategy state; None for another target's or an unreadable one."""
    if row.target != "local":
        return None
    try:
        return RolloutState.from_data(row.state)
    except (ShipyardError, KeyError, TypeError, ValueError):  # recorded by another version of shipyard
        return None


def _epoch(moment: dt.datetime) -> float:
    return as_utc(moment).timestamp()


# --- a release -----------------------------------------------------------------------------------


def release_charts(
    sessions: sessionmaker[Session], service: str, *, now: float | None = None
) -> ReleaseCharts | None:
    """The charts of the newest release of `service` (None: never released)."""
    row = latest_release(sessions, service)
    if row is None:
        return None
    now = time.time() if now is None else now
    state = _state(row)
    ended = _epoch(row.finished_at) if row.finished_at is not None else None
    spans = [
        Span(
            label=f"{step.seq}. {_action_words(step.action)}",
            start=_epoch(step.started_at),
            # A step cut short by the release's end (a hold ended by a promote) ends with it.
            end=_epoch(step.finished_at) if step.finished_at is not None else ended,
            status=step.status if step.finished_at is not None or ended is None else "interrupted",
        )
        for step in release_steps(sessions, row.id)
    ]
    if state is not None and state.phase not in FINISHED and state.phase is not Phase.ROLLING_BACK:
        spans += [
            Span(label=f"next: {_plan_step_words(step)}", start=None, end=None, status="pending")
            for step in plan_steps(state.plan)[state.step + 1 :]
        ]
    title = f"Release #{row.id} of {service}"
    steps_chart = timeline(spans, title=f"{title}: steps", key=f"release-steps-{service}", now=now)
    if state is None:
        unknown = "not recorded for this target"
        empty = line_chart([], title=f"{title}: traffic", key=f"release-traffic-{service}", empty=unknown)
        return ReleaseCharts(steps_chart, empty, ())
    return ReleaseCharts(
        steps_chart,
        _traffic(state, service, title, ended if ended is not None else now),
        _analysis(state, service, title),
    )


def _action_words(action: dict[str, Any]) -> str:
    """A recorded action (`{"type": "SetWeights", ...}`) in a few words."""
    kind = str(action.get("type", "?"))
    version = action.get("version", "")
    match kind:
        case "Prepare":
            return f"prepare {version} x{action.get('instances', '?')}"
        case "WaitHealthy":
            return f"health of {version}"
        case "Migrate":
            return f"migrate with {version}"
        case "SetWeights":
            weights = action.get("weights") or {}
            return f"traffic {weights.get('candidate', '?')} % to candidate"
        case "Observe":
            return f"analyse {_number_words(action.get('duration_s'))} s"
        case "Hold":
            return "hold until promoted" if action.get("until") is None else "hold (pause)"
        case "Retire":
            return f"retire {version}"
        case "Finish":
            return f"finish: {action.get('outcome', '?')}"
    return kind


def _number_words(value: object) -> str:
    return number(float(value)) if isinstance(value, int | float) else "?"


def _plan_step_words(step: Any) -> str:
    """A step of the plan (`rollout.plan_steps`) not reached yet."""
    kind = str(step.kind)
    if kind == "weight":
        return f"traffic {step.weight} % to candidate"
    if kind in ("observe", "pause", "warm"):
        words = {"observe": "analyse", "pause": "pause", "warm": "keep stable warm"}[kind]
        return f"{words} {number(step.seconds)} s" if step.seconds is not None else f"{words} until promoted"
    return {"gate": "wait for promote", "retire_stable": "retire stable", "health": "health check"}.get(
        kind, kind
    )


def _traffic(state: RolloutState, service: str, title: str, until: float) -> Markup:
    """The split after each transition that changed it, held until the next (and until `until`)."""
    plan = state.plan
    candidate: list[Point] = []
    stable: list[Point] = []
    for event in state.history:
        if candidate and candidate[-1].y == event.weights.candidate:
            continue
        note = f"{event.what}" + (f": {event.reason}" if event.reason else "")
        candidate.append(Point(event.time, float(event.weights.candidate), note[:200]))
        stable.append(Point(event.time, float(event.weights.stable), note[:200]))
    if candidate and until > candidate[-1].x:
        candidate.append(Point(until, candidate[-1].y, "now" if state.phase not in FINISHED else "end"))
        stable.append(Point(until, stable[-1].y, candidate[-1].note))
    series = [Series(f"{plan.candidate} (candidate)", candidate, step=True)]
    if plan.stable is not None:
        series.insert(0, Series(f"{plan.stable} (stable)", stable, step=True))
    return line_chart(
        series,
        title=f"{title}: traffic (%)",
        key=f"release-traffic-{service}",
        y_format=lambda value: f"{value:.0f} %",
        y_range=(0.0, 100.0),
    )


def _analysis(state: RolloutState, service: str, title: str) -> tuple[Markup, ...]:
    """One chart per check: each analysis window's values against the limit it was judged by."""
    policy = state.plan.policy.analysis
    windows: dict[str, list[tuple[float, Any]]] = {}
    for event in state.history:
        for check in event.checks:
            windows.setdefault(check.name, []).append((event.time, check))
    charts = []
    for name, seen in windows.items():
        if all(check.candidate is None for _, check in seen):
            continue  # skipped every time (no Prometheus, no stable to compare with)
        candidate, stable, limits = [], [], []
        for moment, check in seen:
            limit = _limit_of(name, check, policy)
            verdict = str(check.verdict.value)
            mark = {"fail": "fail", "inconclusive": "warn"}.get(verdict, "")
            if check.candidate is not None:
                candidate.append(Point(moment, check.candidate, f"{verdict}: {check.detail}"[:300], mark))
            if check.stable is not None:
                stable.append(Point(moment, check.stable))
            if limit is not None:
                limits.append(Point(moment, limit))
        series = [Series(f"{state.plan.candidate} (candidate)", candidate)]
        if stable:
            series.append(Series(f"{state.plan.stable} (stable)", stable))
        charts.append(
            line_chart(
                series,
                title=f"{title}: {name} per window",
                key=f"release-{name}-{service}",
                limit=_limit(limits, "limit"),
                y_format=CHECK_FORMATS.get(name, number),
            )
        )
    return tuple(charts)


def _limit_of(name: str, check: Any, policy: Any) -> float | None:
    """The value a check's candidate was judged against, in the candidate's unit: the ratio check's
    threshold is a ratio of the stable's p99, its limit in ms the policy's rule applied to it."""
    if name == "p99_ratio":
        return float(policy.p99_limit(check.stable)) if check.stable is not None else None
    return float(check.threshold)


def _limit(points: list[Point], label: str) -> Limit | None:
    """One limit line when the limit never changed, else a limit per moment."""
    if not points:
        return None
    if len({point.y for point in points}) == 1:
        return Limit(label, value=points[0].y)
    return Limit(label, points=points)


# --- a service -----------------------------------------------------------------------------------


def service_charts(
    sessions: sessionmaker[Session], service: str, *, now: float | None = None, hours: int = SERVICE_HOURS
) -> tuple[Markup, Markup]:
    """The error rate and p99 of `service` over the last `hours`: every analysis window of its
    releases then, the version under release's and the live version's, against their limits."""
    now = time.time() if now is None else now
    since = now - hours * 3600
    cutoff = dt.datetime.fromtimestamp(since, dt.UTC)
    with sessions() as session:
        rows = list(
            session.scalars(
                select(RolloutRow)
                .where(RolloutRow.service == service, RolloutRow.updated_at >= cutoff)
                .order_by(RolloutRow.id.desc())
                .limit(SERVICE_RELEASES)
            )
        )
    errors: dict[str, list[Point]] = {"candidate": [], "stable": [], "limit": []}
    p99: dict[str, list[Point]] = {"candidate": [], "stable": [], "limit": []}
    for row in reversed(rows):
        state = _state(row)
        if state is None:
            continue
        policy = state.plan.policy.analysis
        for event in state.history:
            if event.time < since:
                continue
            checks = {check.name: check for check in event.checks}
            versions = {"candidate": state.plan.candidate, "stable": state.plan.stable or "?"}
            rate = checks.get("error_rate")
            if rate is not None:
                _add(errors, event.time, rate.candidate, rate.stable, rate.threshold, row.id, versions)
            latency = checks.get("p99_ms") or checks.get("p99_ratio")
            if latency is not None:
                limit = _limit_of(latency.name, latency, policy)
                _add(p99, event.time, latency.candidate, latency.stable, limit, row.id, versions)
    span = f"{hours} h of release windows"
    empty = "no release analysed in this time"
    return (
        _service_chart(
            errors, f"{service}: error rate ({span})", f"service-errors-{service}", percent, empty
        ),
        _service_chart(p99, f"{service}: p99 ({span})", f"service-p99-{service}", millis, empty),
    )


def _add(
    into: dict[str, list[Point]],
    moment: float,
    candidate: float | None,
    stable: float | None,
    limit: float | None,
    rollout_id: int,
    versions: dict[str, str],
) -> None:
    for role, value in (("candidate", candidate), ("stable", stable)):
        if value is not None:
            into[role].append(Point(moment, value, f"{versions[role]}, release #{rollout_id}"))
    if limit is not None:
        into["limit"].append(Point(moment, limit))


def _service_chart(values: dict[str, list[Point]], title: str, key: str, form: Any, empty: str) -> Markup:
    series = [Series("version under release", values["candidate"])]
    if values["stable"]:
        series.append(Series("live version", values["stable"]))
    limit = _limit(values["limit"], "limit")
    return line_chart(series, title=title, key=key, limit=limit, y_format=form, empty=empty)


# --- backups -------------------------------------------------------------------------------------


def backup_charts(
    sets: Sequence[BackupSet], stack: Stack | None, *, now: float | None = None
) -> list[SourceCharts]:
    """Per source, over the sets given (those of the served stack and environment when it is
    known): each artefact's size and duration, and the age of the newest intact copy against the
    RPO."""
    now = time.time() if now is None else now
    if stack is not None:
        sets = [s for s in sets if s.stack == stack.name and s.environment == stack.environment]
    ordered = sorted((s for s in sets if s.state != "running"), key=lambda s: s.started_at)
    sources = sorted({a.name for s in ordered for a in s.artefacts})
    rpo = float(stack.dr.rpo) if stack is not None and stack.dr is not None else None
    return [_source_charts(source, ordered, rpo, now) for source in sources]


def _source_charts(source: str, sets: list[BackupSet], rpo: float | None, now: float) -> SourceCharts:
    raw, added, seconds = [], [], []
    for backup_set in sets:
        artefact = backup_set.artefact(source)
        if artefact is None:
            continue
        at = _epoch(backup_set.started_at)
        intact = backup_set.intact(source)
        note = f"set {backup_set.id} ({backup_set.state})"
        mark = "" if intact else "fail"
        raw.append(Point(at, float(artefact.raw_bytes), note, mark))
        added.append(Point(at, float(artefact.data_added), note, mark))
        seconds.append(Point(at, float(artefact.seconds), note, mark))
    limit = Limit("RPO", value=rpo) if rpo is not None else None
    return SourceCharts(
        source=source,
        size=line_chart(
            [Series("size", raw), Series("added to the repository", added)],
            title=f"{source}: size per set",
            key=f"backup-size-{source}",
            y_format=byte_size,
        ),
        duration=line_chart(
            [Series("duration", seconds)],
            title=f"{source}: backup duration",
            key=f"backup-duration-{source}",
            y_format=format_seconds,
        ),
        age=line_chart(
            [Series("age of the newest copy", _ages(source, sets, now, rpo))],
            title=f"{source}: backup age"
            + (" against the RPO" if rpo is not None else " (no RPO in the spec)"),
            key=f"backup-age-{source}",
            limit=limit,
            y_format=format_seconds,
        ),
    )


def _ages(source: str, sets: Iterable[BackupSet], now: float, rpo: float | None) -> list[Point]:
    """The age of the newest intact copy of `source` over time: a set counts from when it was
    stored (its end), and its data is as old as its start; so the age peaks just before each new
    copy is stored and drops to that copy's own duration. The last point is now."""
    stored = sorted(
        (
            (_epoch(s.finished_at), _epoch(s.started_at), s.id)
            for s in sets
            if s.finished_at is not None and s.intact(source)
        ),
    )
    points: list[Point] = []
    newest: tuple[float, str] | None = None
    for finished, started, set_id in stored:
        if newest is not None and started <= newest[0]:
            continue  # stored after a newer copy: the age does not change
        if newest is not None:
            age = finished - newest[0]
            points.append(Point(finished, age, f"just before set {set_id} was stored", _over(age, rpo)))
        newest = (started, set_id)
        age = finished - started
        points.append(Point(finished, age, f"set {set_id} stored", _over(age, rpo)))
    if newest is not None and now > points[-1].x:
        age = now - newest[0]
        points.append(Point(now, age, f"now (newest: set {newest[1]})", _over(age, rpo)))
    return points


def _over(value: float, limit: float | None) -> str:
    return "fail" if target_met(value, limit) is False else ""


# --- DR ------------------------------------------------------------------------------------------


def dr_charts(sessions: sessionmaker[Session], stack: Stack | None) -> DrCharts:
    """Each drill's achieved RTO and RPO, a series per mode, against the spec's targets."""
    name, environment = (stack.name, stack.environment) if stack is not None else (None, None)
    drills = list(reversed(drill_history(sessions, limit=DRILLS, stack=name, environment=environment)))
    targets = stack.dr if stack is not None else None
    charts = []
    for what, target in (
        ("rto", targets.rto if targets else None),
        ("rpo", targets.rpo if targets else None),
    ):
        by_mode: dict[str, list[Point]] = {}
        for drill in drills:
            value = drill.rto_seconds if what == "rto" else drill.rpo_seconds
            points = by_mode.setdefault(drill.mode, [])
            if value is None:
                continue  # it did not recover: nothing was achieved (the DR table says why)
            met = target_met(value, float(target) if target is not None else None)
            result = "passed" if drill.passed else "failed"
            note = f"drill #{drill.id} ({drill.mode}, {result})"
            mark = "fail" if met is False or not drill.passed else ""
            points.append(Point(_epoch(drill.finished_at), value, note, mark))
        limit = Limit(f"{what.upper()} target", value=float(target)) if target is not None else None
        charts.append(
            line_chart(
                [Series(mode, points) for mode, points in sorted(by_mode.items())],
                title=f"{what.upper()} per drill"
                + ("" if target is not None else " (no target in the spec)"),
                key=f"dr-{what}",
                limit=limit,
                y_format=format_seconds,
                empty="no drill has run yet",
            )
        )
    return DrCharts(rto=charts[0], rpo=charts[1])
