"""Writing one audit entry in a transaction of its own (so it stands even if the work then fails)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ._models import AuditRow


def record_audit(
    sessions: sessionmaker[Session],
    *,
    actor: str,
    action: str,
    target_kind: str,
    target: str,
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> None:
    """Append who did what to which object; `outcome` is e.g. started, ok or failed."""
    with sessions() as session, session.begin():
        session.add(
            AuditRow(
                actor=actor,
                action=action,
                target_kind=target_kind,
                target=target,
                before=before,
                after=after,
                outcome=outcome,
            )
        )
