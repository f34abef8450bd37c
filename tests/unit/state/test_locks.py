"""Leases on a real SQLite state store, including one held by a process that died."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from shipyard.locks import Lease, LockHeldError, holder
from shipyard.state import LockRow, open_engine, session_factory, utcnow


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def test_one_holder_at_a_time(sessions: sessionmaker[Session]) -> None:
    first = Lease(sessions, "rollout:api")
    second = Lease(sessions, "rollout:api")
    first.acquire()
    with pytest.raises(LockHeldError, match="rollout:api is held by"):
        second.acquire()
    first.acquire()  # re-entrant for its owner
    first.release()
    second.acquire()
    assert holder(sessions, "rollout:api") is not None
    with pytest.raises(LockHeldError):
        first.renew()  # lost: someone else holds it now


def test_an_expired_lease_can_be_taken_over(sessions: sessionmaker[Session]) -> None:
    stale = Lease(sessions, "job", owner="elsewhere:1:x")
    stale.acquire()
    with sessions() as session, session.begin():
        session.execute(update(LockRow).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    assert holder(sessions, "job") is None
    Lease(sessions, "job").acquire()
    with pytest.raises(LockHeldError):
        stale.renew()


def test_a_lease_of_a_dead_local_process_is_free_at_once(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    script = (
        "from shipyard.locks import Lease; from shipyard.state import open_engine, session_factory;"
        f"Lease(session_factory(open_engine({url!r})), 'rollout:web', ttl_s=3600).acquire()"
    )
    subprocess.run([sys.executable, "-c", script], check=True)  # acquires, then exits without releasing
    assert holder(sessions, "rollout:web") is None
    Lease(sessions, "rollout:web").acquire()
