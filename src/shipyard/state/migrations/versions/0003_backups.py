"""backup sets

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_sets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("stack", sa.String(length=128), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=128), nullable=True),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("verification", sa.JSON(), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("backup_sets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backup_sets_stack"), ["stack"], unique=False)
        batch_op.create_index(batch_op.f("ix_backup_sets_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("backup_sets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backup_sets_state"))
        batch_op.drop_index(batch_op.f("ix_backup_sets_stack"))
    op.drop_table("backup_sets")
