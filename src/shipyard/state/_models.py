"""The state store's tables. Rows hold facts; the rules that change them live in their packages.

Documents (a flag's definition, a step's inputs) are stored as JSON so that their shape is owned
by the package that validates them, and a schema change there needs no migration here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A stored time as an aware UTC datetime (SQLite hands them back naive; all are UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def rfc3339(moment: dt.datetime) -> str:
    """A time as every `-o json` and the API write it: RFC 3339 in UTC with `Z`
    (`2026-12-06T19:00:00Z`, fractions of a second kept), as Pydantic writes an aware UTC time."""
    return as_utc(moment).astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        dt.datetime: DateTime(timezone=True),
    }


class Counter(Base):
    """A named, monotonically increasing number (e.g. the flag set's version)."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class FlagRow(Base):
    __tablename__ = "flags"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    """Bumped on every change: the ETag a writer must match (optimistic concurrency)."""
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SegmentRow(Base):
    __tablename__ = "flag_segments"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditRow(Base):
    """Who did what to which object, and the object before and after."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target_kind: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    outcome: Mapped[str] = mapped_column(String(32), default="ok")
    __table_args__ = (Index("ix_audit_target", "target_kind", "target"),)


class ApiTokenRow(Base):
    """An API token: only its SHA-256 is kept, never the token."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_by: Mapped[str | None] = mapped_column(Text, nullable=True)


class DashboardSessionRow(Base):
    """A signed-in dashboard session: only the SHA-256 of its random id is kept (the cookie holds
    the id). It lasts until `expires_at`, or `shipyard.tokens.SESSION_IDLE` after `last_seen_at`,
    or until its token is revoked; signing out deletes it."""

    __tablename__ = "dashboard_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The client address that signed in."""
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()


class RolloutRow(Base):
    """One release of one service: the strategy's whole state, as JSON, after every step."""

    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(128), index=True)
    environment: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str] = mapped_column(String(32))
    stable: Mapped[str | None] = mapped_column(String(128), nullable=True)
    candidate: Mapped[str] = mapped_column(String(128))
    phase: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))
    stack: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The stack as it was when the release started, so a resume does not depend on the file."""
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class RolloutStepRow(Base):
    """One action of a release, written before it is carried out and again after."""

    __tablename__ = "rollout_steps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    action: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # started | done | failed
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class RolloutCommandRow(Base):
    """A command (promote, abort, …) for the controller running a release, from any process."""

    __tablename__ = "rollout_commands"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), index=True)
    command: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)


class LockRow(Base):
    """A named lease: held by one owner until it expires; renewed while its work goes on."""

    __tablename__ = "locks"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    owner: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[dt.datetime] = mapped_column()


BACKUP_SET_STATES = ("running", "complete", "verified", "partial", "failed")
"""A set is `running` while taken, then `complete` (every artefact stored) or `failed` (taking it
failed). Checks move a finished set on: `verified` (every artefact restored and matched),
`partial` (some artefacts failed an integrity check, the others are intact) or `failed`."""
RESTORABLE_SET_STATES = ("complete", "verified", "partial")
"""The states in which a set holds artefacts that can be restored (a `partial` set: its intact ones)."""


class BackupSetRow(Base):
    """One backup set: written `running` before anything is touched, then complete/failed/verified.

    Its artefacts (one per datastore dump, RDB snapshot or file tree) live in `manifest`: they are
    written once with the set, always read with it, and their shape is the backup package's.
    """

    __tablename__ = "backup_sets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    stack: Mapped[str] = mapped_column(String(128), index=True)
    environment: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # full | database | files | redis
    state: Mapped[str] = mapped_column(String(16), index=True)  # BACKUP_SET_STATES
    phase: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """What the backup was doing last (e.g. `postgres:db:dump`), so a failure says where it stopped."""
    owner: Mapped[str] = mapped_column(String(256))
    """host:pid of the process writing the set, holding the lease `backup-set:<id>` while it runs."""
    actor: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    verified_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    health: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """Artefact name → the last integrity check of that artefact (by a verification or a restore):
    `{"state": "verified" | "failed", "detail", "at"}`. An artefact without an entry is unchecked."""


class DrillRow(Base):
    """One finished DR drill: what it achieved. Its report (the phases, the restore points) is
    the JSON file `report` names; the audit log also says the drill ran (`dr.drill`)."""

    __tablename__ = "drills"
    __table_args__ = (Index("ix_drills_scope", "stack", "environment", "mode", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stack: Mapped[str] = mapped_column(String(128))
    environment: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16), index=True)  # full | partial | backup | restore
    passed: Mapped[bool] = mapped_column()
    actor: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    """None for drills recorded before this table, whose audit entries kept only the end."""
    finished_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    rto_seconds: Mapped[float | None] = mapped_column(nullable=True)
    """None when the drill did not recover (a phase failed)."""
    rpo_seconds: Mapped[float | None] = mapped_column(nullable=True)
    mttr_seconds: Mapped[float | None] = mapped_column(nullable=True)
    failed_phase: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why it failed: the failed phase's reason, or the error that stopped the drill."""
    report: Mapped[str | None] = mapped_column(Text, nullable=True)


class ScheduledRunRow(Base):
    """One fire of a scheduled job, claimed by the process that runs it (or records it skipped)."""

    __tablename__ = "scheduled_runs"
    __table_args__ = (UniqueConstraint("job", "fire_time", name="uq_scheduled_runs_job_fire_time"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(128))
    fire_time: Mapped[dt.datetime] = mapped_column()
    owner: Mapped[str] = mapped_column(String(256))
    started_at: Mapped[dt.datetime] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """succeeded, failed, skipped, or abandoned (its process died mid-run); NULL while running."""


class NotificationRow(Base):
    """One message for one channel, queued before the first try and kept until it is delivered.

    `channel_config` is the channel as the spec declared it (references like `${env:HOOK}`, never
    their values), so any process with the environment can deliver it, in `id` order per channel.
    """

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_pending", "state", "channel", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(128))
    channel_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    event: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The event (kind, summary, severity, details): each channel formats it at delivery."""
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class JobRow(Base):
    """A long operation (an ops request) run as a child process: `python -m shipyard.jobs <id>`."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)  # the request's kind: deploy, backup, …
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The ops request, as JSON (`shipyard.jobs.parse_request` reads it back)."""
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The ops result, as JSON, once the job ended with one."""
    actor: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)  # running | succeeded | failed
    owner: Mapped[str] = mapped_column(String(256))
    """host:pid of the server that started it; the child's pid is `pid`."""
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class MetricTotalRow(Base):
    """A counter of /metrics by family and label values, kept by triggers (migration 0010) when a
    release, a job or a release step finishes: pruning those rows leaves the totals as they are."""

    __tablename__ = "metric_totals"
    family: Mapped[str] = mapped_column(String(32), primary_key=True)
    a: Mapped[str] = mapped_column(String(128), primary_key=True)
    b: Mapped[str] = mapped_column(String(128), primary_key=True)
    c: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[float] = mapped_column()


class TrafficMinuteRow(Base):
    """One minute of one service's traffic through HAProxy, recorded by `shipyard serve`
    (`monitor.TrafficHistory`, migration 0011) and pruned after its retention. A minute nobody
    recorded (HAProxy down, no server running) has no row: a gap, never zeros."""

    __tablename__ = "traffic_minutes"
    __table_args__ = (Index("ix_traffic_minutes_minute", "minute"),)
    stack: Mapped[str] = mapped_column(String(128), primary_key=True)
    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    service: Mapped[str] = mapped_column(String(128), primary_key=True)
    minute: Mapped[dt.datetime] = mapped_column(primary_key=True)
    """The minute's start (UTC, on the minute)."""
    requests: Mapped[int] = mapped_column(Integer)
    """Requests answered, from HAProxy's backend counters (exact)."""
    errors: Mapped[int] = mapped_column(Integer)
    """5xx answers, HAProxy's own (no server up) included."""
    latency_buckets: Mapped[list[int]] = mapped_column(JSON)
    """Requests per `rollout.LATENCY_BUCKETS_MS` bucket, from HAProxy's request log (which may
    lose lines under overload: their sum may be below `requests`)."""
    p50_ms: Mapped[float | None] = mapped_column(nullable=True)
    """The median and the 99th percentile of `latency_buckets` (None: no request logged)."""
    p99_ms: Mapped[float | None] = mapped_column(nullable=True)
