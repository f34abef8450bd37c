"""shipyard's own Prometheus metrics, read from the state store (and the spec) at scrape time.

The contract (names, labels, types) is shared with `render prometheus`, which writes the alert
rules over them: releases by outcome, step durations and each service's newest release (phase,
traffic split), jobs by kind and outcome, backup age/size/duration/success per source, the last
verification, DR targets against the last drill of each mode, and pending notifications.

The counters are read from `metric_totals`, which triggers keep when a release, job or step
finishes (migration 0010): pruning history never makes them go down. Each family costs one
bounded query per scrape. When the store does not answer, the store-derived series keep their
last good values (a backup's age still grows: it is computed from the set's time at each scrape)
and `shipyard_state_store_up` says 0, so that alerts over them go on firing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..spec import Postgres, Stack
from ..state import (
    RESTORABLE_SET_STATES,
    BackupSetRow,
    JobRow,
    MetricTotalRow,
    NotificationRow,
    RolloutRow,
    as_utc,
    utcnow,
)

log = logging.getLogger(__name__)

STEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""The step histogram's bounds; migration 0010's triggers count into exactly these (`le` = repr)."""
SET_SCAN_LIMIT = 200
"""Newest backup sets read per scrape to find each source's newest successful and finished set."""
STANDBY_CACHE_S = 10.0
"""A scrape asks the standby at most this often (Prometheus scrapes every 15 s or so)."""
STANDBY_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class _SourceBackup:
    """What the store says of one source's newest successful set (the age is derived per scrape)."""

    started: dt.datetime
    """The set's point in time."""
    ended: dt.datetime
    raw_bytes: float | None
    seconds: float
    """How long this source took: its artefact's own time, else (older manifests) the set's."""


@dataclass(frozen=True)
class _Backups:
    succeeded: dict[str, _SourceBackup]
    last_run_ok: dict[str, bool]


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
        self._lock = threading.Lock()
        self._last: dict[str, list[Metric]] = {}
        """The last good families of each store-derived part, served while the store is down."""
        self._backups = _Backups({}, {})
        self._store_was_up = True
        self._standby_cache: tuple[float, tuple[bool, float | None]] | None = None

    def describe(self) -> Iterator[Metric]:
        # Nothing at registration: collecting would query the store before the server starts.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        stack = self._safe_stack()
        families: list[Metric] = []
        with self._lock:  # two scrapes at once would race on the last good values
            up = self._store_answers()
            parts: list[Callable[[], list[Metric]]] = [
                self._totals, self._releases, self._running_jobs, self._read_backups, self._verification,
                self._notifications, self._drills,
            ]  # fmt: skip
            for part in parts:
                if up:
                    try:
                        self._last[part.__name__] = part()
                    except Exception:  # one failing family must not take the others (or the scrape) down
                        log.warning("metrics: %s failed", part.__name__, exc_info=True)
                families.extend(self._last.get(part.__name__, ()))
            families.extend(self._backup_families(self._backups, self._now()))
        store_up = GaugeMetricFamily(
            "shipyard_state_store_up",
            "1 when the state store answered this scrape; 0 while the series read from it keep their"
            " last good values",
        )
        store_up.add_metric([], 1.0 if up else 0.0)
        families.append(store_up)
        try:
            families.extend(self._dr_targets(stack))
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

    def _store_answers(self) -> bool:
        """One cheap query first: a store that is down costs one failed connection, not one per
        family."""
        try:
            with self._sessions() as session:
                session.execute(select(1))
        except Exception as exc:
            # Said once per outage (Prometheus scrapes every few seconds), and in one line.
            level = logging.WARNING if self._store_was_up else logging.DEBUG
            log.log(level, "metrics: the state store does not answer (%s); serving the last good values",
                    type(exc).__name__)  # fmt: skip
            self._store_was_up = False
            return False
        self._store_was_up = True
        return True

    def _totals(self) -> list[Metric]:
        rollouts = CounterMetricFamily(
            "shipyard_rollouts", "Finished releases by outcome", labels=["service", "outcome"]
        )
        jobs = CounterMetricFamily(
            "shipyard_jobs", "Finished jobs by kind and outcome", labels=["kind", "outcome"]
        )
        counts: dict[tuple[str, str], float] = {}
        sums: dict[tuple[str, str], float] = {}
        buckets: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        query = select(MetricTotalRow).order_by(MetricTotalRow.family, MetricTotalRow.a, MetricTotalRow.b)
        with self._sessions() as session:
            for row in session.scalars(query):
                key = (row.a, row.b)
                if row.family == "rollouts":
                    rollouts.add_metric(list(key), row.value)
                elif row.family == "jobs":
                    jobs.add_metric(list(key), row.value)
                elif row.family == "step_count":
                    counts[key] = row.value
                elif row.family == "step_sum":
                    sums[key] = row.value
                elif row.family == "step_bucket":
                    buckets[key][row.c] = row.value
        steps = HistogramMetricFamily(
            "shipyard_rollout_step_duration_seconds",
            "Duration of the recorded steps of releases",
            labels=["service", "action"],
        )
        for key in sorted(counts):
            cumulative = [(repr(bound), buckets[key].get(repr(bound), 0.0)) for bound in STEP_BUCKETS]
            steps.add_metric(list(key), [*cumulative, ("+Inf", counts[key])], sums.get(key, 0.0))
        return [rollouts, jobs, steps]

    def _releases(self) -> list[Metric]:
        """Each service's newest release: its phase (one series per phase, 1 for the current one)
        and the traffic split its target last confirmed."""
        from ..rollout import Phase  # noqa: PLC0415 - rollout imports this package

        phase = GaugeMetricFamily(
            "shipyard_rollout_phase",
            "1 for the phase of each service's newest release, 0 for the other phases",
            labels=["service", "phase"],
        )
        weight = GaugeMetricFamily(
            "shipyard_rollout_weight_ratio",
            "Share of each service's traffic on its stable and candidate version (newest release)",
            labels=["service", "track"],
        )
        newest = select(func.max(RolloutRow.id)).group_by(RolloutRow.service)
        query = (
            select(RolloutRow.service, RolloutRow.phase, RolloutRow.state)
            .where(RolloutRow.id.in_(newest))
            .order_by(RolloutRow.service)
        )
        known = [str(p.value) for p in Phase]
        with self._sessions() as session:
            for service, current, state in session.execute(query):
                for name in known if current in known else [*known, current]:
                    phase.add_metric([service, name], 1.0 if name == current else 0.0)
                for track, percent in _weights(state).items():
                    weight.add_metric([service, track], percent / 100)
        return [phase, weight]

    def _running_jobs(self) -> list[Metric]:
        family = GaugeMetricFamily("shipyard_jobs_running", "Jobs running now, by kind", labels=["kind"])
        query = (
            select(JobRow.kind, func.count())
            .where(JobRow.state == "running")
            .group_by(JobRow.kind)
            .order_by(JobRow.kind)
        )
        with self._sessions() as session:
            for kind, count in session.execute(query):
                family.add_metric([kind], float(count))
        return [family]

    def _read_backups(self) -> list[Metric]:
        """Reads the newest sets into `self._backups` (the families are made from it per scrape)."""
        query = (
            select(BackupSetRow)
            .where(BackupSetRow.state != "running")
            .order_by(BackupSetRow.started_at.desc(), BackupSetRow.id.desc())
            .limit(SET_SCAN_LIMIT)
        )
        succeeded: dict[str, _SourceBackup] = {}
        last_run_ok: dict[str, bool] = {}
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
                    last_run_ok.setdefault(source, restorable)
                    if restorable and source in artefacts and source not in succeeded:
                        started = as_utc(row.started_at)
                        ended = as_utc(row.finished_at) if row.finished_at else started
                        artefact = artefacts[source]
                        succeeded[source] = _SourceBackup(
                            started=started,
                            ended=ended,
                            raw_bytes=_number(artefact.get("raw_bytes")),
                            seconds=_number(artefact.get("seconds")) or (ended - started).total_seconds(),
                        )
        self._backups = _Backups(succeeded, last_run_ok)
        return []

    @staticmethod
    def _backup_families(backups: _Backups, now: dt.datetime) -> list[Metric]:
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
            "shipyard_backup_duration_seconds",
            "How long that set took to back the source up",
            labels=["source"],
        )
        last_run = GaugeMetricFamily(
            "shipyard_backup_last_run_success",
            "1 when the newest finished set holding the source is complete, 0 when it failed",
            labels=["source"],
        )
        for source, ok in sorted(backups.last_run_ok.items()):
            last_run.add_metric([source], 1.0 if ok else 0.0)
        for source, backup in sorted(backups.succeeded.items()):
            last_success.add_metric([source], backup.ended.timestamp())
            age.add_metric([source], max((now - backup.started).total_seconds(), 0.0))
            if backup.raw_bytes is not None:
                size.add_metric([source], backup.raw_bytes)
            duration.add_metric([source], max(backup.seconds, 0.0))
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

    @staticmethod
    def _dr_targets(stack: Stack | None) -> list[Metric]:
        if stack is None or stack.dr is None:
            return []
        rto = GaugeMetricFamily("shipyard_dr_target_rto_seconds", "The spec's recovery time objective")
        rto.add_metric([], float(stack.dr.rto))
        rpo = GaugeMetricFamily("shipyard_dr_target_rpo_seconds", "The spec's recovery point objective")
        rpo.add_metric([], float(stack.dr.rpo))
        return [rto, rpo]

    def _drills(self) -> list[Metric]:
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
        return [drill_rto, drill_rpo, passed, when]

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


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _weights(state: Any) -> dict[str, float]:
    """The split a release's state holds: a local release's own, or Argo's last status."""
    if not isinstance(state, dict):
        return {}
    weights = state.get("weights")
    if not isinstance(weights, dict):
        status = (
            (state.get("kubernetes") or {}).get("status")
            if isinstance(state.get("kubernetes"), dict)
            else None
        )
        weights = status.get("weights") if isinstance(status, dict) else None
    if not isinstance(weights, dict):
        return {}
    found = {track: _number(weights.get(track)) for track in ("stable", "candidate")}
    return {track: value for track, value in found.items() if value is not None}


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
