"""The state store: SQLAlchemy models, Alembic migrations, engine and sessions.

It holds facts, not rules: the packages that own a fact (flags, rollout, backup) decide how it
changes. SQLite by default, PostgreSQL by URL (`$SHIPYARD_DATABASE_URL`).
"""

from ._audit import MAX_LIMIT as MAX_AUDIT_LIMIT
from ._audit import AuditEntry, audit_cutoffs, parse_since, prune_audit, query_audit, record_audit
from ._engine import default_url, open_engine, open_existing, session_factory, upgrade
from ._models import (
    BACKUP_SET_STATES,
    RESTORABLE_SET_STATES,
    ApiTokenRow,
    AuditRow,
    BackupSetRow,
    Base,
    Counter,
    DashboardSessionRow,
    DrillRow,
    FlagRow,
    JobRow,
    LockRow,
    MetricTotalRow,
    NotificationRow,
    RolloutCommandRow,
    RolloutRow,
    RolloutStepRow,
    ScheduledRunRow,
    SegmentRow,
    TrafficMinuteRow,
    as_utc,
    rfc3339,
    utcnow,
)

__all__ = [
    "BACKUP_SET_STATES",
    "MAX_AUDIT_LIMIT",
    "RESTORABLE_SET_STATES",
    "ApiTokenRow",
    "AuditEntry",
    "AuditRow",
    "BackupSetRow",
    "Base",
    "Counter",
    "DashboardSessionRow",
    "DrillRow",
    "FlagRow",
    "JobRow",
    "LockRow",
    "MetricTotalRow",
    "NotificationRow",
    "RolloutCommandRow",
    "RolloutRow",
    "RolloutStepRow",
    "ScheduledRunRow",
    "SegmentRow",
    "TrafficMinuteRow",
    "as_utc",
    "audit_cutoffs",
    "default_url",
    "open_engine",
    "open_existing",
    "parse_since",
    "prune_audit",
    "query_audit",
    "record_audit",
    "rfc3339",
    "session_factory",
    "upgrade",
    "utcnow",
]
