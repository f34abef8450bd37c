"""Outbox claims and queues on a real SQLite store, with a fixed clock passed in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shipyard.monitor import Breakers, Event, Outbox
from shipyard.monitor._outbox import enqueue
from shipyard.spec import Channel
from shipyard.state import NotificationRow, open_engine, session_factory
from support.webhook import RecordingServer, recording_server

# The outboxes' clock: after every row the tests queue (rows are stamped with the real time, so a
# fixed date here would make every row "not yet due" once the real clock passed it).
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
HOOK = Channel(kind="webhook", url="${env:HOOK_URL}")


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingServer]:
    with recording_server() as running:
        monkeypatch.setenv("HOOK_URL", running.url())
        yield running


def _outbox(sessions: sessionmaker[Session], now: dt.datetime = NOW) -> Outbox:
    return Outbox(sessions, breakers=Breakers(), clock=lambda: now)


def test_a_head_claimed_elsewhere_is_left_alone_until_the_claim_expires(
    sessions: sessionmaker[Session], server: RecordingServer
) -> None:
    (row_id,) = enqueue(sessions, [("hook", HOOK)], Event("test.claim", "one"))
    with sessions() as session, session.begin():
        session.execute(
            update(NotificationRow)
            .where(NotificationRow.id == row_id)
            .values(
                claimed_by="elsewhere:1:abcd",
                claimed_until=NOW + dt.timedelta(seconds=30),
                next_attempt_at=NOW,
            )
        )
    result = _outbox(sessions).deliver_due()
    assert result.attempts == []
    assert result.busy == {next(iter(result.heads))}
    assert server.requests == []
    later = _outbox(sessions, NOW + dt.timedelta(seconds=31)).deliver_due()  # the claimer died
    assert [a.outcome for a in later.attempts] == ["delivered"]
    assert len(server.requests) == 1


def test_queues_are_per_name_and_configuration(
    sessions: sessionmaker[Session], server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stacks may both call a channel `ops`: a dead one must not hold up the other."""
    monkeypatch.setenv("DEAD_URL", "http://127.0.0.1:9/nothing-listens-here")
    dead = Channel(kind="webhook", url="${env:DEAD_URL}")
    enqueue(sessions, [("ops", dead)], Event("test.q", "to the dead one"))
    enqueue(sessions, [("ops", HOOK)], Event("test.q", "to the live one"))
    attempts, _ = _outbox(sessions).drain()
    assert sorted(a.outcome for a in attempts) == ["delivered", "retry"]
    assert [body["summary"] for body in server.bodies()] == ["to the live one"]


def test_a_message_not_due_waits_unless_told_otherwise(
    sessions: sessionmaker[Session], server: RecordingServer
) -> None:
    (row_id,) = enqueue(sessions, [("hook", HOOK)], Event("test.due", "later"))
    with sessions() as session, session.begin():
        session.execute(
            update(NotificationRow)
            .where(NotificationRow.id == row_id)
            .values(next_attempt_at=NOW + dt.timedelta(minutes=5))
        )
    result = _outbox(sessions).deliver_due()
    assert list(result.waiting.values()) == [NOW + dt.timedelta(minutes=5)]
    assert server.requests == []
    forced = _outbox(sessions).deliver_due(ignore_schedule=True)
    assert [a.outcome for a in forced.attempts] == ["delivered"]
    with sessions() as session:
        row = session.scalars(select(NotificationRow)).one()
    assert (row.state, row.claimed_by, row.claimed_until) == ("delivered", None, None)
