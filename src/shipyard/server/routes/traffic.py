"""A service's traffic over time, as the dashboard charts it.

    GET /traffic/{service}?hours=6&step_seconds=300
        requests, 5xx, error rate, p50 and p99 per interval over the last `hours` (at most the
        48 h `shipyard serve` keeps), from the minutes it records from HAProxy

Every interval of the window is listed, oldest first. One with `minutes_recorded: 0` is a gap (no
minute was recorded then: HAProxy was down, or no server ran): its counts are null, never 0. An
interval recorded without a request has 0 requests and a null error rate and latency. p50 and p99
are the upper bounds of the latency buckets they fall in (past the last bound, 5000 ms, they read
5000: at least that), over the requests the log timed (`logged`).

Needs an admin token, as the releases do. The served stack's environment is the one shown; a
server without a spec answers 409, and a service that neither the spec routes nor has minutes
recorded answers 404.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from ...errors import NotFoundError
from ...jobs import JobRunner
from ...monitor import TRAFFIC_RETENTION_S, TrafficPoint, recorded_services, traffic_series
from ...rollout.targets.haproxy import routed_services
from .rollouts import ServiceName

MAX_HOURS = TRAFFIC_RETENTION_S // 3600


class TrafficPointOut(BaseModel):
    start_at: dt.datetime
    """The interval's start; it lasts `step_seconds`."""
    minutes_recorded: int
    """Minutes recorded in the interval: 0 is a gap, and every value below is null then."""
    requests: int | None
    errors: int | None
    """5xx answers, HAProxy's own (no server up) included."""
    error_rate: float | None
    """errors / requests; null without requests."""
    logged: int | None
    """Requests whose latency HAProxy's log gave (p50 and p99 are theirs)."""
    p50_ms: float | None
    p99_ms: float | None

    @classmethod
    def of(cls, point: TrafficPoint) -> TrafficPointOut:
        if not point.recorded:
            return cls(
                start_at=point.start,
                minutes_recorded=0,
                requests=None,
                errors=None,
                error_rate=None,
                logged=None,
                p50_ms=None,
                p99_ms=None,
            )
        return cls(
            start_at=point.start,
            minutes_recorded=point.minutes,
            requests=point.requests,
            errors=point.errors,
            error_rate=point.error_rate,
            logged=point.logged,
            p50_ms=point.p50_ms,
            p99_ms=point.p99_ms,
        )


class TrafficOut(BaseModel):
    service: str
    stack: str
    environment: str
    start_at: dt.datetime
    end_at: dt.datetime
    """The window's end (excluded): the end of the interval holding the last minute recordable."""
    step_seconds: int
    minutes_recorded: int
    """Minutes recorded in the whole window."""
    points: list[TrafficPointOut]


def build_router(
    sessions: sessionmaker[Session], runner: JobRunner, *, admin: Callable[..., Awaitable[str]]
) -> APIRouter:
    router = APIRouter(prefix="/traffic", tags=["traffic"])

    @router.get(
        "/{service}",
        response_model=TrafficOut,
        responses={409: {"description": "This server has no stack (start it with `shipyard serve -f SPEC`)"}},
    )
    def service_traffic(
        service: ServiceName,
        _: str = Depends(admin),
        hours: int = Query(6, ge=1, le=MAX_HOURS, description="How far back, in hours"),
        step_seconds: int = Query(
            300, ge=60, le=3600, multiple_of=60, description="Interval length, in whole minutes"
        ),
    ) -> TrafficOut:
        """The service's requests, 5xx, error rate, p50 and p99 per interval over the last hours."""
        stack = runner.stack()
        known = set(routed_services(stack))
        if service not in known:
            known |= set(recorded_services(sessions, stack.name, stack.environment))
        if service not in known:
            close = difflib.get_close_matches(service, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NotFoundError(
                f"{stack.name} ({stack.environment}) has no service {service!r} taking traffic{hint};"
                f" those that do: {', '.join(sorted(known)) or 'none'}"
            )
        series = traffic_series(
            sessions, stack.name, stack.environment, service, hours=hours, step_s=step_seconds
        )
        return TrafficOut(
            service=service,
            stack=stack.name,
            environment=stack.environment,
            start_at=series.start,
            end_at=series.end,
            step_seconds=series.step_s,
            minutes_recorded=sum(point.minutes for point in series.points),
            points=[TrafficPointOut.of(point) for point in series.points],
        )

    return router
