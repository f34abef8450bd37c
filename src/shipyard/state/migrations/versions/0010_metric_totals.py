"""metric totals: the counters of /metrics, kept by triggers so that pruning history keeps them

Revision ID: 0010
Revises: 0009

`/metrics` counted finished releases and jobs, and the step-duration histogram, from the rows
themselves: pruning those rows made the counters go down, which Prometheus reads as a reset. The
totals now live in `metric_totals` (one row per family and label values), incremented by
triggers in the transaction that records the event, whichever process writes it (a CLI, a job's
child, the server) and however (ORM or bulk UPDATE). Deleting rows leaves them alone.

Families: `rollouts` (a=service, b=outcome) when a release's outcome is first set; `jobs`
(a=kind, b=state) when a job leaves `running`; `step_count`, `step_sum` and `step_bucket` (c=le)
(a=service, b=the step's action type) when a step's `finished_at` is first set. The existing rows
are counted once here. The bucket bounds are frozen in this revision: changing
`shipyard.monitor._metrics.STEP_BUCKETS` needs a new one (a test compares the two).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

STEP_BOUNDS = ("0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "600.0")
_UPSERT = "ON CONFLICT (family, a, b, c) DO UPDATE SET value = metric_totals.value + excluded.value"


def _bounds() -> str:
    return " UNION ALL ".join(f"SELECT '{le}' AS le, {le} AS bound" for le in STEP_BOUNDS)


def _step_rows(step: str, seconds: str, action_type: str) -> str:
    """INSERT … SELECT adding one finished step (`step` names its row: NEW or a table alias)."""
    return f"""
        INSERT INTO metric_totals (family, a, b, c, value)
        SELECT part.family, r.service, COALESCE({action_type}, 'unknown'), part.c, SUM(part.value)
        FROM rollouts AS r, (
            SELECT 'step_count' AS family, '' AS c, 1.0 AS value
            UNION ALL SELECT 'step_sum', '', {seconds}
            UNION ALL SELECT 'step_bucket', bounds.le, 1.0 FROM ({_bounds()}) AS bounds
                WHERE {seconds} <= bounds.bound
        ) AS part
        WHERE r.id = {step}.rollout_id
        GROUP BY part.family, r.service, COALESCE({action_type}, 'unknown'), part.c
        {_UPSERT}"""


def _sqlite_seconds(step: str) -> str:
    # Rounded to the millisecond: julianday's float resolution is some 40 µs at today's dates.
    return f"MAX(ROUND((julianday({step}.finished_at) - julianday({step}.started_at)) * 86400.0, 3), 0.0)"


def _postgres_seconds(step: str) -> str:
    return f"GREATEST(EXTRACT(EPOCH FROM ({step}.finished_at - {step}.started_at))::float8, 0.0)"


def _counted(family: str, a: str, b: str) -> str:
    return (
        f"INSERT INTO metric_totals (family, a, b, c, value) VALUES ('{family}', {a}, {b}, '', 1.0) {_UPSERT}"
    )


def _sqlite_triggers() -> list[str]:
    step = _step_rows("NEW", _sqlite_seconds("NEW"), "json_extract(NEW.action, '$.type')")
    rollout = _counted("rollouts", "NEW.service", "NEW.outcome")
    job = _counted("jobs", "NEW.kind", "NEW.state")
    return [
        f"""CREATE TRIGGER metric_totals_rollout_inserted AFTER INSERT ON rollouts
            FOR EACH ROW WHEN NEW.outcome IS NOT NULL BEGIN {rollout}; END""",
        f"""CREATE TRIGGER metric_totals_rollout_finished AFTER UPDATE OF outcome ON rollouts
            FOR EACH ROW WHEN OLD.outcome IS NULL AND NEW.outcome IS NOT NULL BEGIN {rollout}; END""",
        f"""CREATE TRIGGER metric_totals_job_inserted AFTER INSERT ON jobs
            FOR EACH ROW WHEN NEW.state <> 'running' BEGIN {job}; END""",
        f"""CREATE TRIGGER metric_totals_job_finished AFTER UPDATE OF state ON jobs
            FOR EACH ROW WHEN OLD.state = 'running' AND NEW.state <> 'running' BEGIN {job}; END""",
        f"""CREATE TRIGGER metric_totals_step_inserted AFTER INSERT ON rollout_steps
            FOR EACH ROW WHEN NEW.finished_at IS NOT NULL BEGIN {step}; END""",
        f"""CREATE TRIGGER metric_totals_step_finished AFTER UPDATE OF finished_at ON rollout_steps
            FOR EACH ROW WHEN OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL BEGIN {step}; END""",
    ]


_SQLITE_TRIGGERS = (
    "metric_totals_rollout_inserted",
    "metric_totals_rollout_finished",
    "metric_totals_job_inserted",
    "metric_totals_job_finished",
    "metric_totals_step_inserted",
    "metric_totals_step_finished",
)


def _postgres_triggers() -> list[str]:
    step = _step_rows("NEW", _postgres_seconds("NEW"), "(NEW.action ->> 'type')")
    rollout = _counted("rollouts", "NEW.service", "NEW.outcome")
    job = _counted("jobs", "NEW.kind", "NEW.state")
    functions = {
        "rollouts": (
            "outcome",
            "NEW.outcome IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.outcome IS NULL)",
            rollout,
        ),
        "jobs": ("state", "NEW.state <> 'running' AND (TG_OP = 'INSERT' OR OLD.state = 'running')", job),
        "rollout_steps": (
            "finished_at",
            "NEW.finished_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.finished_at IS NULL)",
            step,
        ),
    }
    statements = []
    for table, (column, condition, body) in functions.items():
        statements += [
            f"""CREATE FUNCTION metric_totals_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF {condition} THEN {body}; END IF;
                    RETURN NULL;
                END $$""",
            f"""CREATE TRIGGER metric_totals_{table} AFTER INSERT OR UPDATE OF {column} ON {table}
                FOR EACH ROW EXECUTE FUNCTION metric_totals_{table}()""",
        ]
    return statements


def _backfill(dialect: str) -> list[str]:
    """The events recorded before this revision, counted once."""
    if dialect == "postgresql":
        seconds, action_type = _postgres_seconds("s"), "(s.action ->> 'type')"
    else:
        seconds, action_type = _sqlite_seconds("s"), "json_extract(s.action, '$.type')"
    steps = f"""
        INSERT INTO metric_totals (family, a, b, c, value)
        SELECT kinds.family, r.service, COALESCE({action_type}, 'unknown'), kinds.c,
               SUM(CASE WHEN kinds.family = 'step_sum' THEN {seconds} ELSE 1.0 END)
        FROM rollout_steps AS s JOIN rollouts AS r ON r.id = s.rollout_id, (
            SELECT 'step_count' AS family, '' AS c, CAST(NULL AS DOUBLE PRECISION) AS bound
            UNION ALL SELECT 'step_sum', '', NULL
            UNION ALL SELECT 'step_bucket', bounds.le, bounds.bound FROM ({_bounds()}) AS bounds
        ) AS kinds
        WHERE s.finished_at IS NOT NULL AND (kinds.bound IS NULL OR {seconds} <= kinds.bound)
        GROUP BY kinds.family, r.service, COALESCE({action_type}, 'unknown'), kinds.c"""
    return [
        """INSERT INTO metric_totals (family, a, b, c, value)
           SELECT 'rollouts', service, outcome, '', COUNT(*) FROM rollouts
           WHERE outcome IS NOT NULL GROUP BY service, outcome""",
        """INSERT INTO metric_totals (family, a, b, c, value)
           SELECT 'jobs', kind, state, '', COUNT(*) FROM jobs
           WHERE state <> 'running' GROUP BY kind, state""",
        steps,
    ]


def upgrade() -> None:
    op.create_table(
        "metric_totals",
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("a", sa.String(length=128), nullable=False),
        sa.Column("b", sa.String(length=128), nullable=False),
        sa.Column("c", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("family", "a", "b", "c"),
    )
    dialect = op.get_bind().dialect.name
    for statement in _backfill(dialect):
        op.execute(statement)
    for statement in _postgres_triggers() if dialect == "postgresql" else _sqlite_triggers():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("rollouts", "jobs", "rollout_steps"):
            op.execute(f"DROP TRIGGER IF EXISTS metric_totals_{table} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS metric_totals_{table}()")
    else:
        for trigger in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.drop_table("metric_totals")
