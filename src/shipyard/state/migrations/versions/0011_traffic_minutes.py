"""traffic minutes: every service's requests, 5xx and latency per minute, between releases too

Revision ID: 0011
Revises: 0010

`shipyard serve` reads HAProxy's backend counters and request log once a minute and keeps a row
per (stack, environment, service, minute): requests, 5xx, the latency histogram and its p50 and
p99. Rows older than the sampler's retention (48 h) are deleted by the sampler. A minute with no
row was not recorded (HAProxy down, no server running): the dashboard and the API show a gap.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traffic_minutes",
        sa.Column("stack", sa.String(length=128), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=128), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("latency_buckets", sa.JSON(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=True),
        sa.Column("p99_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("stack", "environment", "service", "minute"),
    )
    op.create_index("ix_traffic_minutes_minute", "traffic_minutes", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_traffic_minutes_minute", table_name="traffic_minutes")
    op.drop_table("traffic_minutes")
