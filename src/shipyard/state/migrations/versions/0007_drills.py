"""drills: one row per finished DR drill, the history the API, metrics, dashboard and MTTR read

Revision ID: 0007
Revises: 0006

Drills were recorded only in the audit log until now (action `dr.drill`, the outcome `passed` or
`failed`, what was achieved in `after`). Each of those entries is copied into the table, oldest
first, so the history (and the order in which drills ended) is kept; the entries stay where they
are.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MODES = ("full", "partial", "backup", "restore")
"""The modes a drill has ever been recorded with (frozen here: a migration must not change when the
code's list does)."""


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int | float) and str(value) else None


def drill_of(target: str, actor: str, at: Any, outcome: str, after: Any) -> dict[str, Any] | None:
    """The `drills` row of one finished `dr.drill` audit entry; None when it holds no drill.

    The entry's target is `<stack>/<environment>`; `after` is either the drill's summary (mode,
    achieved, failed_phase, report) or, when the drill stopped on an error, `{mode, error}`.
    """
    if not isinstance(after, dict) or after.get("mode") not in MODES:
        return None
    stack, _, environment = target.partition("/")
    achieved = _mapping(after.get("achieved"))
    failed = _mapping(after.get("failed_phase"))
    error = _text(after.get("error"))
    return {
        "stack": stack[:128],
        "environment": environment[:64],
        "mode": after["mode"],
        "passed": outcome == "passed",
        "actor": actor[:128],
        "started_at": None,
        "finished_at": at,
        "rto_seconds": _seconds(achieved.get("rto_seconds")),
        "rpo_seconds": _seconds(achieved.get("rpo_seconds")),
        "mttr_seconds": _seconds(achieved.get("mttr_seconds")),
        "failed_phase": _text(failed.get("name")),
        "reason": _text(failed.get("reason")) or (f"the drill stopped: {error}" if error else None),
        "report": _text(after.get("report")),
    }


def upgrade() -> None:
    drills = op.create_table(
        "drills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stack", sa.String(length=128), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rto_seconds", sa.Float(), nullable=True),
        sa.Column("rpo_seconds", sa.Float(), nullable=True),
        sa.Column("mttr_seconds", sa.Float(), nullable=True),
        sa.Column("failed_phase", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_drills_mode", "drills", ["mode"])
    op.create_index("ix_drills_scope", "drills", ["stack", "environment", "mode", "id"])
    audit = sa.table(
        "audit_log",
        sa.column("id", sa.Integer()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String()),
        sa.column("action", sa.String()),
        sa.column("target", sa.String()),
        sa.column("after", sa.JSON()),
        sa.column("outcome", sa.String()),
    )
    query = (
        sa.select(audit.c.target, audit.c.actor, audit.c.at, audit.c.outcome, audit.c.after)
        .where(audit.c.action == "dr.drill", audit.c.outcome.in_(("passed", "failed")))
        .order_by(audit.c.id)
    )
    connection = op.get_bind()
    rows = [drill_of(*entry) for entry in connection.execute(query)]
    copied = [row for row in rows if row is not None]
    if copied:
        op.bulk_insert(drills, copied)


def downgrade() -> None:
    # The history stays in the audit log, where every drill still writes its entry.
    op.drop_table("drills")
