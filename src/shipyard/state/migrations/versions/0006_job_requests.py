"""jobs store a typed ops request and result instead of a `shipyard` argv

Revision ID: 0006
Revises: 0005

Rows written before keep their history: each argv (of the exact shapes the server built) becomes
the request it ran.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def request_of(kind: str, argv: list[str]) -> dict[str, Any]:
    """The ops request an old job's argv ran (the argv shapes are those the server built)."""
    args = list(argv)
    if kind == "deploy" and len(args) >= 4:
        strategy = args[5] if len(args) >= 6 else None
        return {"kind": "deploy", "service": args[1], "version": args[3], "strategy": strategy}
    if kind in ("rollback", "resume") and len(args) == 3:
        return {"kind": kind, "service": args[2]}
    if kind == "backup" and len(args) == 2:
        return {"kind": "backup", "what": args[1]}
    if kind == "verify" and len(args) == 3:
        return {"kind": "verify", "set_id": args[2]}
    if kind == "restore" and len(args) >= 4:
        return {"kind": "restore", "what": args[1], "set_id": args[3], "into": "scratch"}
    if kind == "drill" and len(args) == 3:
        return {"kind": "drill", "mode": args[2]}
    return {"kind": kind, "argv": args}


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("result", sa.JSON(), nullable=True))
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.Integer()),
        sa.column("kind", sa.String()),
        sa.column("argv", sa.JSON()),
        sa.column("request", sa.JSON()),
    )
    connection = op.get_bind()
    for job_id, kind, argv in connection.execute(sa.select(jobs.c.id, jobs.c.kind, jobs.c.argv)).all():
        request = request_of(kind, list(argv or []))
        connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(request=request))
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("request", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("argv")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("argv", sa.JSON(), nullable=False, server_default="[]"))
        batch.drop_column("result")
        batch.drop_column("request")
