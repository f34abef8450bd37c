"""Releases run in the background (`shipyard deploy --detach`, a job): finding the one they record.

The background process is a job (`python -m shipyard.jobs <id>`) running the ordinary `deploy`:
stopped or killed, `shipyard rollout resume` carries the release on as after any other stop. The
CLI returns once the release is recorded, which these two reads tell.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..state import RolloutRow


def last_release_id(sessions: sessionmaker[Session]) -> int:
    """The newest release's id (0 when there is none): a release started now will have a larger one."""
    with sessions() as session:
        return session.scalar(select(RolloutRow.id).order_by(RolloutRow.id.desc()).limit(1)) or 0


def recorded_release(
    sessions: sessionmaker[Session], service: str, version: str, after_id: int
) -> int | None:
    """The id of the first release of `service` `version` recorded after `after_id`, if there is one yet."""
    with sessions() as session:
        return session.scalar(
            select(RolloutRow.id)
            .where(RolloutRow.id > after_id, RolloutRow.service == service, RolloutRow.candidate == version)
            .order_by(RolloutRow.id)
            .limit(1)
        )
