"""backup sets record the health of each artefact (`backup_sets.health`)

Revision ID: 0008
Revises: 0007

One damaged artefact used to fail its whole set, and prune then forgot every snapshot of it, the
intact ones included. Each artefact's last integrity check is now kept on its own, and a set with
some damaged and some intact artefacts is `partial`. Sets written before have no entries: their
artefacts count as unchecked, and their states keep their meaning.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backup_sets") as batch:
        batch.add_column(sa.Column("health", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup_sets") as batch:
        batch.drop_column("health")
