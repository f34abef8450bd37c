"""A service's traffic over the last hours on the dashboard: its error rate and p99, read from the
minutes `shipyard serve` records from HAProxy (`monitor.TrafficHistory`, `monitor.traffic_series`)
and drawn by `_charts` as the release charts are.

Each point is one TRAFFIC_STEP_S interval (the sums of the minutes recorded in it, its p99 taken
from their summed latency histograms). An interval with no minute recorded (HAProxy down, `serve`
stopped) has no point and the line breaks there; so does one without a request, which has no error
rate or latency. The legend says how many of the window's minutes were recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup
from sqlalchemy.orm import Session, sessionmaker

from ..monitor import TrafficPoint, TrafficSeries, traffic_series
from ..rollout import LATENCY_BUCKETS_MS
from ..rollout.targets.haproxy import routed_services
from ..spec import Stack
from ._charts import Limit, Point, Series, line_chart, millis, percent

TRAFFIC_HOURS = 6
"""How far back a service's traffic charts look."""
TRAFFIC_STEP_S = 300
"""One point per this many seconds."""
GAP_S = TRAFFIC_STEP_S * 1.5
"""Points further apart than one interval have a gap between them."""


@dataclass(frozen=True)
class TrafficCharts:
    errors: Markup
    p99: Markup


def services_traffic_charts(
    sessions: sessionmaker[Session], stack: Stack | None, *, now: float | None = None
) -> dict[str, TrafficCharts]:
    """The traffic charts of every service of the served stack that takes traffic (none without one)."""
    if stack is None:
        return {}
    return {service: traffic_charts(sessions, stack, service, now=now) for service in routed_services(stack)}


def traffic_charts(
    sessions: sessionmaker[Session], stack: Stack, service: str, *, now: float | None = None
) -> TrafficCharts:
    """`service`'s error rate and p99 over the last TRAFFIC_HOURS, in the served environment."""
    series = traffic_series(
        sessions,
        stack.name,
        stack.environment,
        service,
        now=now,
        hours=TRAFFIC_HOURS,
        step_s=TRAFFIC_STEP_S,
    )
    analysis = stack.rollout.analysis
    rates: list[Point] = []
    p99s: list[Point] = []
    for point in series.points:
        at = point.start.timestamp()
        rate, p99 = point.error_rate, point.p99_ms
        if rate is not None:
            mark = "fail" if rate > analysis.max_error_rate else ""
            rates.append(Point(at, rate, _counts(point), mark))
        if p99 is not None:
            over = analysis.max_p99_ms is not None and p99 > analysis.max_p99_ms
            p99s.append(Point(at, p99, _latency(point, p99), "fail" if over else ""))
    empty = _empty(series)
    span = f"last {TRAFFIC_HOURS} h, {TRAFFIC_STEP_S // 60}-minute intervals"
    p99_limit = analysis.max_p99_ms
    return TrafficCharts(
        errors=line_chart(
            [Series(f"5xx / requests · {_coverage(series)}", rates, gap=GAP_S)],
            title=f"{service}: error rate ({span})",
            key=f"traffic-errors-{service}",
            limit=Limit("a release's limit", value=analysis.max_error_rate),
            y_format=percent,
            empty=empty,
        ),
        p99=line_chart(
            [Series(f"p99 · {_coverage(series)}", p99s, gap=GAP_S)],
            title=f"{service}: p99 latency ({span})",
            key=f"traffic-p99-{service}",
            limit=Limit("a release's limit", value=p99_limit) if p99_limit is not None else None,
            y_format=millis,
            empty=empty,
        ),
    )


def _coverage(series: TrafficSeries) -> str:
    recorded = sum(point.minutes for point in series.points)
    total = sum(point.seconds for point in series.points) // 60
    return f"{recorded} of {total} min recorded"


def _counts(point: TrafficPoint) -> str:
    minutes = point.seconds // 60
    return f"{point.errors} 5xx of {point.requests} requests; {point.minutes} of {minutes} min recorded"


def _latency(point: TrafficPoint, p99: float) -> str:
    """The p99's words: its bucket's bound (at least the last bound when past it), and on what."""
    past_last = point.latency_buckets[-1] > 0 and p99 >= LATENCY_BUCKETS_MS[-2]
    bound = f"at least {millis(p99)}" if past_last else f"at most {millis(p99)}"
    p50 = point.p50_ms
    median = f"; p50 at most {millis(p50)}" if p50 is not None else ""
    return f"p99 {bound}{median}; {point.logged} of {point.requests} requests timed by the log"


def _empty(series: TrafficSeries) -> str:
    if not series.recorded:
        return f"no traffic recorded in the last {TRAFFIC_HOURS} h (shipyard serve reads it from HAProxy)"
    return f"no requests in the last {TRAFFIC_HOURS} h"
