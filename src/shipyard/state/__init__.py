"""The state store: SQLAlchemy models, Alembic migrations, engine and sessions.

It holds facts, not rules: the packages that own a fact (flags, rollout, backup) decide how it
changes. SQLite by default, PostgreSQL by URL (`$SHIPYARD_DATABASE_URL`).
"""

from ._audit import record_audit
from ._engine import default_url, open_engine, session_factory, upgrade
from ._models import (
    ApiTokenRow,
    AuditRow,
    BackupSetRow,
    Base,
    Counter,
    FlagRow,
    JobRow,
    LockRow,
    NotificationRow,
    RolloutCommandRow,
    RolloutRow,
    RolloutStepRow,
    ScheduledRunRow,
    SegmentRow,
    as_utc,
    utcnow,
)

__all__ = [
    "ApiTokenRow",
    "AuditRow",
    "BackupSetRow",
    "Base",
    "Counter",
    "FlagRow",
    "JobRow",
    "LockRow",
    "NotificationRow",
    "RolloutCommandRow",
    "RolloutRow",
    "RolloutStepRow",
    "ScheduledRunRow",
    "SegmentRow",
    "as_utc",
    "default_url",
    "open_engine",
    "record_audit",
    "session_factory",
    "upgrade",
    "utcnow",
]
