"""shipyard's own Prometheus metrics, read from the state store (and the spec) at scrape time.

The contract (names, labels, types) is shared with `render prometheus`, which writes the alert
rules over them: rollouts by outcome and step durations, backup age/size/duration/success per
source, the last verification, DR targets against the last drill of each mode, and pending
notifications. Each family costs one bounded query per scrape; the step-duration histogram is
accumulated incrementally (only steps not seen before are read), so it stays a true counter.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..spec import Postgres, Stack
from ..state import (
    RESTORABLE_SET_STATES,
    BackupSetRow,
    NotificationRow,
    RolloutRow,
    RolloutStepRow,
    as_utc,
    utcnow,
)

log = logging.getLogger(__name__)

STEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
SET_SCAN_LIMIT = 200
"""Newest backup sets read per scrape to find each source's newest successful and finished set."""
STEP_BATCH = 5000
STANDBY_CACHE_S = 10.0
"""A scrape asks the standby at most this often (Prometheus scrapes every 15 s or so)."""
STANDBY_TIMEOUT_S = 1.0


class _StepHistogram:
    """Step durations by (service, action), fed with each finished step once."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(STEP_BUCKETS))
        self.totals: dict[tuple[str, str], int] = defaultdict(int)
        self.sums: dict[tuple[str, str], float] = defaultdict(float)
        self.cursor = 0
        """Every step with an id up to here has been observed (or will never finish)."""
        self.seen: set[int] = set()
        """Finished steps above the cursor already observed (an earlier step was still going on)."""

    def observe(self, key: tuple[str, str], seconds: float) -> None:
        seconds = max(seconds, 0.0)
        for index, bound in enumerate(STEP_BUCKETS):
            if seconds <= bound:
                self.counts[key][index] += 1
        self.totals[key] += 1
        self.sums[key] += seconds

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "shipyard_rollout_step_duration_seconds",
            "Duration of the recorded steps of releases",
            labels=["service", "action"],
        )
        for key in sorted(self.totals):
            buckets = [(_bound(b), float(c)) for b, c in zip(STEP_BUCKETS, self.counts[key], strict=True)]
            buckets.append(("+Inf", float(self.totals[key])))
            family.add_metric(list(key), buckets, self.sums[key])
        return family


def _bound(value: float) -> str:
    return repr(value)


class ShipyardCollector(Collector):
    """Collects the contract's families from the state store on every scrape."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        stack: Callable[[], Stack | None] = lambda: None,
        *,
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._stack = stack
        self._now = now
        self._steps = _StepHistogram()
        self._lock = threading.Lock()
        self._standby_cache: tuple[float, tuple[bool, float | None]] | None = None

    def describe(self) -> Iterator[Metric]:
        # Nothing at registration: collecting would query the store before the server starts.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        stack = self._safe_stack()
        families: list[Metric] = []
        for part in (self._rollouts, self._step_durations, self._backups, self._verification,
                     self._notifications):  # fmt: skip
            try:
                families.extend(part())
            except Exception:  # one failing family must not take the others (or the scrape) down
                log.warning("metrics: %s failed", part.__name__, exc_info=True)
        try:
            families.extend(self._dr(stack))
            families.extend(self._standby(stack))
        except Exception:
            log.warning("metrics: dr failed", exc_info=True)
        yield from families

    def _safe_stack(self) -> Stack | None:
        try:
            return self._stack()
        except Exception:
            log.warning("metrics: the spec could not be read", exc_info=True)
            return None

    def _rollouts(self) -> list[Metric]:
        family = CounterMetricFamily(
            "shipyard_rollouts", "Finished releases by outcome", labels=["service", "outcome"]
        )
        query = (
            select(RolloutRow.service, RolloutRow.outcome, func.count())
            .where(RolloutRow.finished_at.is_not(None), RolloutRow.outcome.is_not(None))
            .group_by(RolloutRow.service, RolloutRow.outcome)
            .order_by(RolloutRow.service, RolloutRow.outcome)
        )
        with self._sessions() as session:
            for service, outcome, count in session.execute(query):
                family.add_metric([service, str(outcome)], float(count))
        return [family]

    def _step_durations(self) -> list[Metric]:
        with self._lock:
            steps = self._steps
            query = (
                select(
                    RolloutStepRow.id,
                    RolloutRow.service,
                    RolloutStepRow.action,
                    RolloutStepRow.started_at,
                    RolloutStepRow.finished_at,
                )
                .join(RolloutRow, RolloutRow.id == RolloutStepRow.rollout_id)
                .where(RolloutStepRow.id > steps.cursor)
                .order_by(RolloutStepRow.id)
                .limit(STEP_BATCH)
            )
            with self._sessions() as session:
                rows = list(session.execute(query))
            contiguous = True
            for step_id, service, action, started, finished in rows:
                if finished is None:
                    contiguous = False
                    continue
                if step_id not in steps.seen:
                    kind = str((action or {}).get("type", "unknown"))
                    steps.observe((service, kind), (as_utc(finished) - as_utc(started)).total_seconds())
                if contiguous:
                    steps.cursor = step_id
                    steps.seen.discard(step_id)
                else:
                    steps.seen.add(step_id)
            return [steps.family()]

    def _backups(self) -> list[Metric]:
        now = self._now()
        last_success = GaugeMetricFamily(
            "shipyard_backup_last_success_timestamp_seconds",
            "End time of the newest complete or verified set holding the source",
            labels=["source"],
        )
        age = GaugeMetricFamily(
            "shipyard_backup_age_seconds",
            "Seconds since that set's point in time (its start)",
            labels=["source"],
        )
        size = GaugeMetricFamily("shipyard_backup_size_bytes", "Raw size of that artefact", labels=["source"])
        duration = GaugeMetricFamily(
            "shipyard_backup_duration_seconds", "How long that set took", labels=["source"]
        )
        last_run = GaugeMetricFamily(
            "shipyard_backup_last_run_success",
            "1 when the newest finished set holding the source is complete, 0 when it failed",
            labels=["source"],
        )
        query = (
            select(BackupSetRow)
            .where(BackupSetRow.state != "running")
            .order_by(BackupSetRow.started_at.desc(), BackupSetRow.id.desc())
            .limit(SET_SCAN_LIMIT)
        )
        succeeded: set[str] = set()
        finished: set[str] = set()
        with self._sessions() as session:
            for row in session.scalars(query):
                manifest = row.manifest or {}
                artefacts = {
                    str(a.get("name")): a for a in manifest.get("artefacts", []) if isinstance(a, dict)
                }
                sources = set(artefacts) | {str(s) for s in manifest.get("sources", []) if isinstance(s, str)}
                damaged = {
                    name for name, health in (row.health or {}).items() if health.get("state") == "failed"
                }
                for source in sorted(sources):
                    restorable = row.state in RESTORABLE_SET_STATES and source not in damaged
                    if source not in finished:
                        finished.add(source)
                        last_run.add_metric([source], 1.0 if restorable else 0.0)
                    if restorable and source in artefacts and source not in succeeded:
                        succeeded.add(source)
                        started = as_utc(row.started_at)
                        ended = as_utc(row.finished_at) if row.finished_at else started
                        last_success.add_metric([source], ended.timestamp())
                        age.add_metric([source], max((now - started).total_seconds(), 0.0))
                        raw = artefacts[source].get("raw_bytes")
                        if isinstance(raw, int | float) and not isinstance(raw, bool):
                            size.add_metric([source], float(raw))
                        duration.add_metric([source], max((ended - started).total_seconds(), 0.0))
        return [last_success, age, size, duration, last_run]

    def _verification(self) -> list[Metric]:
        query = (
            select(BackupSetRow.state, BackupSetRow.verified_at, BackupSetRow.verification)
            .where(BackupSetRow.verification.is_not(None))
            .order_by(BackupSetRow.started_at.desc())
            .limit(SET_SCAN_LIMIT)
        )
        newest: tuple[dt.datetime, bool] | None = None
        with self._sessions() as session:
            for state, verified_at, report in session.execute(query):
                at = _verification_time(verified_at, report)
                if at is not None and (newest is None or at > newest[0]):
                    newest = (at, state == "verified")
        if newest is None:
            return []
        success = GaugeMetricFamily(
            "shipyard_backup_last_verification_success", "1 when the newest verification passed, else 0"
        )
        success.add_metric([], 1.0 if newest[1] else 0.0)
        when = GaugeMetricFamily(
            "shipyard_backup_last_verification_timestamp_seconds", "When the newest verification ran"
        )
        when.add_metric([], newest[0].timestamp())
        return [success, when]

    def _notifications(self) -> list[Metric]:
        family = GaugeMetricFamily(
            "shipyard_notifications_pending", "Queued messages not delivered yet", labels=["channel"]
        )
        query = (
            select(NotificationRow.channel, func.count())
            .where(NotificationRow.state == "pending")
            .group_by(NotificationRow.channel)
            .order_by(NotificationRow.channel)
        )
        with self._sessions() as session:
            for channel, count in session.execute(query):
                family.add_metric([channel], float(count))
        return [family]

    def _dr(self, stack: Stack | None) -> list[Metric]:
        families: list[Metric] = []
        if stack is not None and stack.dr is not None:
            rto = GaugeMetricFamily("shipyard_dr_target_rto_seconds", "The spec's recovery time objective")
            rto.add_metric([], float(stack.dr.rto))
            rpo = GaugeMetricFamily("shipyard_dr_target_rpo_seconds", "The spec's recovery point objective")
            rpo.add_metric([], float(stack.dr.rpo))
            families += [rto, rpo]
        drill_rto = GaugeMetricFamily(
            "shipyard_dr_drill_rto_seconds", "Recovery time achieved by the last drill", labels=["mode"]
        )
        drill_rpo = GaugeMetricFamily(
            "shipyard_dr_drill_rpo_seconds", "Data loss window of the last drill", labels=["mode"]
        )
        passed = GaugeMetricFamily(
            "shipyard_dr_drill_passed", "1 when the last drill passed", labels=["mode"]
        )
        when = GaugeMetricFamily(
            "shipyard_dr_drill_timestamp_seconds", "When the last drill ended", labels=["mode"]
        )
        # The drills every reader shows (`shipyard.dr`, imported here: dr imports this package).
        from ..dr import last_drills  # noqa: PLC0415

        for mode, drill in sorted(last_drills(self._sessions).items()):
            if drill.rto_seconds is not None:
                drill_rto.add_metric([mode], drill.rto_seconds)
            if drill.rpo_seconds is not None:
                drill_rpo.add_metric([mode], drill.rpo_seconds)
            passed.add_metric([mode], 1.0 if drill.passed else 0.0)
            when.add_metric([mode], drill.finished_at.timestamp())
        return [*families, drill_rto, drill_rpo, passed, when]

    def _standby(self, stack: Stack | None) -> list[Metric]:
        """Whether the declared PostgreSQL standby streams, and how far its replay lags (cached)."""
        if stack is None:
            return []
        declared = [ds for ds in stack.datastores.values() if isinstance(ds, Postgres) and ds.standby]
        if not declared or declared[0].standby is None:
            return []
        cached = self._standby_cache
        if cached is None or time.monotonic() - cached[0] > STANDBY_CACHE_S:
            standby = declared[0].standby
            cached = (time.monotonic(), probe_standby(standby.host, standby.port or declared[0].port))
            self._standby_cache = cached
        ready, lag = cached[1]
        families: list[Metric] = []
        ready_family = GaugeMetricFamily(
            "shipyard_dr_standby_ready", "1 when the PostgreSQL standby is in recovery and streaming"
        )
        ready_family.add_metric([], 1.0 if ready else 0.0)
        families.append(ready_family)
        if lag is not None:
            lag_family = GaugeMetricFamily(
                "shipyard_dr_replication_lag_seconds", "How far the standby's replay is behind its primary"
            )
            lag_family.add_metric([], lag)
            families.append(lag_family)
        return families


def _verification_time(verified_at: dt.datetime | None, report: Any) -> dt.datetime | None:
    if verified_at is not None:
        return as_utc(verified_at)
    if isinstance(report, dict):
        for key in ("finished_at", "started_at"):
            value = report.get(key)
            if isinstance(value, str):
                try:
                    return as_utc(dt.datetime.fromisoformat(value))
                except ValueError:
                    continue
    return None


def probe_standby(host: str, port: int) -> tuple[bool, float | None]:
    """(streaming, replay lag in seconds) of a standby; (False, None) when it does not answer.

    The lag is 0 when everything received is replayed (an idle primary sends nothing to replay).
    """
    from ..dr import Admin, connect  # noqa: PLC0415 - psycopg only loads when a standby is declared

    try:
        with connect(host, port, Admin(), timeout_s=STANDBY_TIMEOUT_S) as connection:
            row = connection.execute(
                "SELECT pg_is_in_recovery(),"
                " (SELECT status FROM pg_stat_wal_receiver LIMIT 1),"
                " pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),"
                " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())"
            ).fetchone()
    except Exception as exc:  # unreachable, refused, not a standby: not ready
        log.info("metrics: standby %s:%s: %s", host, port, type(exc).__name__)
        return False, None
    if row is None:
        return False, None
    in_recovery, receiver, caught_up, delay = row
    ready = bool(in_recovery) and receiver == "streaming"
    if not in_recovery:
        return False, None
    lag = 0.0 if caught_up else (max(float(delay), 0.0) if delay is not None else None)
    return ready, lag
