"""`deploy --detach` returns once its job has recorded the release: the two reads that tell it.

The whole path (a job in its own session, listed, running to its end) is
tests/integration/rollout/test_detached.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shipyard.rollout import last_release_id, recorded_release
from shipyard.state import RolloutRow, open_engine, session_factory


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _record(sessions: sessionmaker[Session], service: str, version: str) -> int:
    with sessions() as session, session.begin():
        row = RolloutRow(
            service=service,
            environment="test",
            target="local",
            strategy="canary",
            stable=None,
            candidate=version,
            phase="starting",
            actor="test",
            stack={},
            state={},
        )
        session.add(row)
        session.flush()
        return row.id


def test_only_a_release_of_that_service_and_version_after_the_mark_counts(
    sessions: sessionmaker[Session],
) -> None:
    assert last_release_id(sessions) == 0
    earlier = _record(sessions, "web", "v2")
    mark = last_release_id(sessions)
    assert mark == earlier
    assert recorded_release(sessions, "web", "v2", mark) is None  # the earlier one does not count
    _record(sessions, "api", "v2")
    _record(sessions, "web", "v3")
    assert recorded_release(sessions, "web", "v2", mark) is None
    ours = _record(sessions, "web", "v2")
    _record(sessions, "web", "v2")
    assert recorded_release(sessions, "web", "v2", mark) == ours  # the first one after the mark
