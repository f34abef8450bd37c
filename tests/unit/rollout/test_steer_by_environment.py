"""One store holds staging's and production's releases of a service (`shipyard promote` runs both
on one host): steering a service in one environment never reaches the other's release."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.rollout._controller import latest_release, steer_release
from shipyard.state import RolloutCommandRow, RolloutRow, open_engine, session_factory


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _record(sessions: sessionmaker[Session], environment: str, version: str) -> int:
    with sessions() as session, session.begin():
        row = RolloutRow(
            service="web",
            environment=environment,
            target="local",
            strategy="canary",
            stable=None,
            candidate=version,
            phase="paused",
            actor="test",
            stack={},
            state={},
        )
        session.add(row)
        session.flush()
        return row.id


def test_the_newest_release_is_the_environments_own(sessions: sessionmaker[Session]) -> None:
    production = _record(sessions, "production", "v1")
    staging = _record(sessions, "staging", "v2")  # newer, in another environment
    found = latest_release(sessions, "web", "production")
    assert found is not None
    assert found.id == production
    found = latest_release(sessions, "web", "staging")
    assert found is not None
    assert found.id == staging
    assert latest_release(sessions, "web", "dev") is None
    newest = latest_release(sessions, "web")  # no environment: any, newest first
    assert newest is not None
    assert newest.id == staging


def test_a_command_for_production_is_queued_for_productions_release(sessions: sessionmaker[Session]) -> None:
    production = _record(sessions, "production", "v1")
    _record(sessions, "staging", "v2")
    rollout_id, _ = steer_release(sessions, "web", "abort", "alice", "production")
    assert rollout_id == production
    with sessions() as session:
        queued = session.scalars(select(RolloutCommandRow)).all()
    assert [(c.rollout_id, c.command) for c in queued] == [(production, "abort")]
