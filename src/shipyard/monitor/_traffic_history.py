"""Every service's traffic through HAProxy, a row per minute: requests, 5xx, p50 and p99.

The release analysis reads HAProxy only while a release runs; between releases nothing else
measures a service. `TrafficHistory` runs inside `shipyard serve` (started and stopped with its
scheduler) and, at each minute's start, reads the served stack's HAProxy the way the local target
samples a version (`rollout.targets.local.LocalTarget.sample`), with the same code:

- requests answered and 5xx from HAProxy's own backend counters (`show stat`: exact; HAProxy's
  own 503s, when no server is up, included);
- the latency histogram from HAProxy's request log, read by a `TrafficSampler` of its own (every
  reader of the log ring gets every line) up to a marker logged after the counters were read.

A minute's row is the difference of the readings at its start and at its end, so a minute is
recorded only when both were taken, a minute apart, from the same HAProxy process. Anything else
leaves the minute without a row: HAProxy down or restarted, `serve` stopped or late, the state
store unreachable. The dashboard and the API show such a minute as a gap, never as zeros; a
minute with no request is a row with 0 requests (and no error rate or latency).

p50 and p99 are the upper bound of the histogram bucket the quantile falls in
(`rollout.LATENCY_BUCKETS_MS`); past the last bound (5 s) they read as that bound, "at least
5 s". The histogram is stored too, so coarser intervals (`traffic_series`) sum minutes' histograms
and take their quantiles, never average percentiles.

Rows older than RETENTION_S are deleted by the sampler. One sampler records a stack's environment
at a time: it holds the lease `traffic-history:<stack>-<environment>` while HAProxy answers, so
`serve --workers N`, or several servers on one host, record each minute once (and a minute
written twice would be refused by the table's key anyway).

HAProxy being down is one log line (naming it and its admin socket), and one more when it answers
again; never a traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ShipyardError
from ..locks import Lease, LockHeldError
from ..state import TrafficMinuteRow, as_utc

if TYPE_CHECKING:
    from ..rollout import Sample
    from ..spec import Stack

log = logging.getLogger(__name__)

MINUTE_S = 60
RETENTION_S = 48 * 3600
"""How long minutes are kept: the dashboard shows the last hours, the API up to all of it."""
ON_TIME_S = 15.0
"""A reading taken later than this after its minute began does not stand for the minute's start
(`serve` was suspended, a reading hung): the minutes on either side of it are not recorded."""
WAKE_AFTER_S = 0.2
"""How long after each minute's start the sampler reads."""
LEASE_TTL_S = 3 * MINUTE_S
PROXY_DIR = "proxy"
"""Where the local target keeps HAProxy's files under its state directory (`LocalTarget.paths`)."""


# --- pure: minutes, quantiles, intervals -----------------------------------------------------------


def minute_floor(epoch: float) -> int:
    """The start of the minute `epoch` falls in, in seconds since the epoch."""
    return int(epoch // MINUTE_S) * MINUTE_S


def latency_quantile(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile of a latency histogram as the upper bound of its bucket (the open last
    bucket reads as the last finite bound: "at least" it); None for an empty histogram."""
    from ..rollout import LATENCY_BUCKETS_MS, Sample  # noqa: PLC0415 - rollout imports this package

    value = Sample(sum(buckets), 0, tuple(buckets)).quantile_ms(q)
    if value is None:
        return None
    return value if math.isfinite(value) else LATENCY_BUCKETS_MS[-2]


def minute_between(before: Sample, after: Sample) -> Sample | None:
    """What happened between two readings of one service's cumulative counts; None when a count
    went down (HAProxy restarted: the readings are not of one counter)."""
    delta = after - before
    if delta.requests < 0 or delta.errors < 0 or any(count < 0 for count in delta.latency_buckets):
        return None
    return delta


@dataclass(frozen=True)
class TrafficMinute:
    """One recorded minute of one service."""

    service: str
    minute: dt.datetime
    """Its start (UTC)."""
    requests: int
    errors: int
    latency_buckets: tuple[int, ...]

    @property
    def p50_ms(self) -> float | None:
        return latency_quantile(self.latency_buckets, 0.5)

    @property
    def p99_ms(self) -> float | None:
        return latency_quantile(self.latency_buckets, 0.99)


@dataclass(frozen=True)
class TrafficPoint:
    """One interval of a series: the sums of the minutes recorded in it."""

    start: dt.datetime
    seconds: int
    minutes: int
    """Minutes recorded in the interval; 0: none (a gap, and every count below is 0)."""
    requests: int
    errors: int
    latency_buckets: tuple[int, ...]

    @property
    def recorded(self) -> bool:
        return self.minutes > 0

    @property
    def logged(self) -> int:
        """Requests whose latency the log gave (the histogram's total)."""
        return sum(self.latency_buckets)

    @property
    def error_rate(self) -> float | None:
        """5xx over requests; None without requests (no minute recorded, or no traffic)."""
        return self.errors / self.requests if self.requests else None

    @property
    def p50_ms(self) -> float | None:
        return latency_quantile(self.latency_buckets, 0.5)

    @property
    def p99_ms(self) -> float | None:
        return latency_quantile(self.latency_buckets, 0.99)


def intervals(minutes: Iterable[TrafficMinute], *, start: int, end: int, step_s: int) -> list[TrafficPoint]:
    """Every `step_s` interval from `start` to `end` (seconds since the epoch, `end` excluded), each
    with the sums of the minutes that start in it; minutes outside are left out."""
    if step_s <= 0 or step_s % MINUTE_S:
        raise ValueError(f"an interval is a whole number of minutes, not {step_s} s")
    count = max(0, math.ceil((end - start) / step_s))
    recorded, requests, errors = [0] * count, [0] * count, [0] * count
    histograms = [[0] * _bucket_count() for _ in range(count)]
    for minute in minutes:
        at = as_utc(minute.minute).timestamp()
        if not start <= at < start + count * step_s:
            continue
        index = int((at - start) // step_s)
        recorded[index] += 1
        requests[index] += minute.requests
        errors[index] += minute.errors
        for bucket, value in enumerate(minute.latency_buckets[: len(histograms[index])]):
            histograms[index][bucket] += value
    return [
        TrafficPoint(
            start=_epoch_minute(start + index * step_s),
            seconds=step_s,
            minutes=recorded[index],
            requests=requests[index],
            errors=errors[index],
            latency_buckets=tuple(histograms[index]),
        )
        for index in range(count)
    ]


def _bucket_count() -> int:
    from ..rollout import LATENCY_BUCKETS_MS  # noqa: PLC0415 - rollout imports this package

    return len(LATENCY_BUCKETS_MS)


def window(now: float, *, hours: float, step_s: int) -> tuple[int, int]:
    """The (start, end) of the last `hours` in `step_s` intervals: it ends with the interval that
    holds the last minute that could be recorded (the one before the minute in progress)."""
    last = minute_floor(now) - MINUTE_S
    end = (last // step_s + 1) * step_s
    return end - math.ceil(hours * 3600 / step_s) * step_s, end


# --- the store ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficSeries:
    stack: str
    environment: str
    service: str
    start: dt.datetime
    end: dt.datetime
    step_s: int
    points: tuple[TrafficPoint, ...]

    @property
    def recorded(self) -> bool:
        """Whether any minute of the window was recorded."""
        return any(point.recorded for point in self.points)


def _epoch_minute(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def record_minutes(
    sessions: sessionmaker[Session], stack: str, environment: str, minutes: Iterable[TrafficMinute]
) -> int:
    """Store minutes (one already there stays as it is: another sampler recorded it); how many
    were new."""
    added = 0
    with sessions() as session, session.begin():
        for minute in minutes:
            row = {
                "stack": stack,
                "environment": environment,
                "service": minute.service,
                "minute": minute.minute,
                "requests": minute.requests,
                "errors": minute.errors,
                "latency_buckets": list(minute.latency_buckets),
                "p50_ms": minute.p50_ms,
                "p99_ms": minute.p99_ms,
            }
            try:
                with session.begin_nested():
                    session.execute(insert(TrafficMinuteRow).values(**row))
            except IntegrityError:
                continue
            added += 1
    return added


def prune_minutes(sessions: sessionmaker[Session], stack: str, environment: str, before: dt.datetime) -> int:
    """Delete the stack's minutes that started before `before`; how many."""
    with sessions() as session, session.begin():
        result = session.execute(
            delete(TrafficMinuteRow).where(
                TrafficMinuteRow.stack == stack,
                TrafficMinuteRow.environment == environment,
                TrafficMinuteRow.minute < before,
            )
        )
    deleted: int = result.rowcount  # type: ignore[attr-defined]
    return deleted


def traffic_minutes(
    sessions: sessionmaker[Session],
    stack: str,
    environment: str,
    service: str,
    *,
    start: dt.datetime,
    end: dt.datetime,
) -> list[TrafficMinute]:
    """The minutes recorded for `service` from `start` to `end` (excluded), oldest first."""
    query = (
        select(TrafficMinuteRow)
        .where(
            TrafficMinuteRow.stack == stack,
            TrafficMinuteRow.environment == environment,
            TrafficMinuteRow.service == service,
            TrafficMinuteRow.minute >= start,
            TrafficMinuteRow.minute < end,
        )
        .order_by(TrafficMinuteRow.minute)
    )
    with sessions() as session:
        return [
            TrafficMinute(
                service=row.service,
                minute=as_utc(row.minute),
                requests=row.requests,
                errors=row.errors,
                latency_buckets=tuple(int(count) for count in row.latency_buckets),
            )
            for row in session.scalars(query)
        ]


def traffic_series(
    sessions: sessionmaker[Session],
    stack: str,
    environment: str,
    service: str,
    *,
    now: float | None = None,
    hours: float = 6,
    step_s: int = 5 * MINUTE_S,
) -> TrafficSeries:
    """`service`'s traffic over the last `hours`, in `step_s` intervals (see `window`)."""
    start, end = window(time.time() if now is None else now, hours=hours, step_s=step_s)
    minutes = traffic_minutes(
        sessions, stack, environment, service, start=_epoch_minute(start), end=_epoch_minute(end)
    )
    return TrafficSeries(
        stack=stack,
        environment=environment,
        service=service,
        start=_epoch_minute(start),
        end=_epoch_minute(end),
        step_s=step_s,
        points=tuple(intervals(minutes, start=start, end=end, step_s=step_s)),
    )


def recorded_services(sessions: sessionmaker[Session], stack: str, environment: str) -> list[str]:
    """The services that have minutes recorded, by name."""
    query = (
        select(TrafficMinuteRow.service)
        .where(TrafficMinuteRow.stack == stack, TrafficMinuteRow.environment == environment)
        .distinct()
        .order_by(TrafficMinuteRow.service)
    )
    with sessions() as session:
        return list(session.scalars(query))


# --- the sampler -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reading:
    minute: int
    """The minute this reading starts (seconds since the epoch)."""
    pid: int | None
    """HAProxy's process: counters of another one are not comparable."""
    services: Mapping[str, Sample]
    """Each service's cumulative counts: answered and 5xx from `show stat`, latency from the log."""


class TrafficHistory:
    """Records the minutes of `stack`'s web and api services from the HAProxy of the local target
    whose state directory is `local_state` (`ops.Workspace.local_state`); `start()` and `stop()`
    with the server. `tick(now)` is one reading (the thread calls it at each minute's start)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        stack: Stack,
        local_state: Path,
        *,
        retention_s: float = RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from ..rollout.targets.haproxy import (  # noqa: PLC0415 - rollout imports this package
            HAProxyClient,
            ProxyPaths,
            TrafficSampler,
            routed_services,
        )

        self.sessions = sessions
        self.stack = stack.name
        self.environment = stack.environment
        self.services = tuple(routed_services(stack))
        self.paths = ProxyPaths(Path(local_state).absolute() / PROXY_DIR)  # named in its log lines
        self.retention_s = retention_s
        self._clock = clock
        self._client = HAProxyClient(self.paths.admin_socket)
        self._log = TrafficSampler(self.paths)
        self._lease = Lease(sessions, f"traffic-history:{self.stack}-{self.environment}", ttl_s=LEASE_TTL_S)
        self._previous: _Reading | None = None
        self._trouble: str | None = None
        """What keeps minutes from being recorded, as last logged (None: nothing)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shipyard-traffic-history", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop reading. A reading under way finishes first (a flush waits at most 5 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._log.stop()
        with contextlib.suppress(ShipyardError, SQLAlchemyError):  # unreachable: the lease runs out
            self._lease.release()
        self._previous = None

    def _run(self) -> None:
        self._read(minute_floor(self._clock()))  # says at once when HAProxy is not there
        while not self._stop.wait(self._until_next_minute()):
            try:
                self.tick(self._clock())
            except Exception:  # a bug must not end the recording; the causes known are handled in tick
                log.exception("traffic history: a reading failed")
                self._previous = None

    def _until_next_minute(self) -> float:
        now = self._clock()
        return minute_floor(now) + MINUTE_S - now + WAKE_AFTER_S

    def tick(self, now: float) -> list[TrafficMinute]:
        """Read HAProxy now, at the start of `now`'s minute, and record the minute that ended if it
        was read at that minute's start too, from the same HAProxy; the minutes recorded."""
        minute = minute_floor(now)
        on_time = now - minute <= ON_TIME_S
        previous = self._previous
        if previous is not None and previous.minute == minute:
            return []  # read already at this minute's start: that reading stands
        reading = self._read(minute)
        self._previous = reading if on_time else None
        if reading is None or previous is None or not on_time:
            return []
        if previous.minute != minute - MINUTE_S or previous.pid != reading.pid:
            return []
        recorded = []
        for service in self.services:
            before, after = previous.services.get(service), reading.services.get(service)
            delta = minute_between(before, after) if before is not None and after is not None else None
            if delta is not None:
                recorded.append(
                    TrafficMinute(
                        service=service,
                        minute=_epoch_minute(previous.minute),
                        requests=delta.requests,
                        errors=delta.errors,
                        latency_buckets=delta.latency_buckets,
                    )
                )
        oldest = _epoch_minute(minute) - dt.timedelta(seconds=self.retention_s)
        try:
            record_minutes(self.sessions, self.stack, self.environment, recorded)
            prune_minutes(self.sessions, self.stack, self.environment, oldest)
        except (ShipyardError, SQLAlchemyError) as error:
            self._troubled("store", f"traffic history: minutes not recorded: {_message(error)}")
            return []
        self._untroubled("store")
        return recorded

    def _read(self, minute: int) -> _Reading | None:
        """HAProxy's counters, then its log up to a marker logged after them (see the module); None
        when HAProxy does not answer, or another sampler records this stack's environment."""
        from ..rollout import Sample  # noqa: PLC0415 - rollout imports this package
        from ..rollout.targets.haproxy import (  # noqa: PLC0415
            backend_name,
            parse_show_stat,
            read_pid,
            service_of_backend,
        )

        try:
            pid = read_pid(self.paths)
            rows = parse_show_stat(self._client.command("show stat -1 2 -1"))  # the backends' rows
        except ShipyardError as error:
            self._previous = None
            self._troubled("haproxy", f"traffic history paused: {error.message}")
            return None
        try:
            self._lease.acquire()
        except LockHeldError as held:
            self._log.stop()  # the holder reads the log; this reader would only cost CPU
            scope = f"{self.stack}-{self.environment}"
            self._troubled("lease", f"traffic history: another server records {scope}: {held.message}")
            return None
        except (ShipyardError, SQLAlchemyError) as error:
            self._troubled("store", f"traffic history: minutes not recorded: {_message(error)}")
            return None
        if not self._log.running:
            self._log.start()
        logged = self._log.flush()
        services: dict[str, Sample] = {}
        for row in rows:
            service = service_of_backend(row.get("pxname", ""))
            if row.get("svname") != "BACKEND" or service not in self.services:
                continue
            # As LocalTarget counts a server: a request counts once answered, when its line is logged.
            answered = max(0, _count(row, "stot") - _count(row, "scur"))
            histogram = logged.sample(backend_name(service)).latency_buckets
            services[service] = Sample(answered, _count(row, "hrsp_5xx"), histogram)
        self._untroubled("haproxy", "lease")
        return _Reading(minute, pid, services)

    def _troubled(self, kind: str, message: str) -> None:
        """Say once what keeps minutes from being recorded (again when that changes)."""
        if self._trouble == kind:
            return
        self._trouble = kind
        level = logging.INFO if kind == "lease" else logging.WARNING
        log.log(level, "%s", message, extra=self._fields())

    def _untroubled(self, *kinds: str) -> None:
        if self._trouble in kinds:
            self._trouble = None
            log.info(
                "traffic history: recording %s-%s again", self.stack, self.environment, extra=self._fields()
            )

    def _fields(self) -> dict[str, str]:
        return {"haproxy": str(self.paths.admin_socket), "stack": self.stack, "environment": self.environment}


def _count(row: Mapping[str, str], column: str) -> int:
    try:
        return int(row.get(column) or 0)
    except ValueError:
        return 0


def _message(error: Exception) -> str:
    return error.message if isinstance(error, ShipyardError) else type(error).__name__
