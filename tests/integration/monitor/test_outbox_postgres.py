"""The outbox on PostgreSQL: senders and deliverers racing in threads, a flaky channel; every
message arrives exactly once and in the order it was queued (claims, and serialised ids)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.monitor import Backoff, Breakers, Event, Notifier, OutboxDelivery
from shipyard.spec import Channel
from shipyard.state import NotificationRow, open_engine, session_factory
from support.servers import postgres_server
from support.webhook import RecordingServer, Reply, Request

pytestmark = pytest.mark.integration

PER_SENDER = 15


@pytest.fixture(scope="module")
def sessions() -> Iterator[sessionmaker[Session]]:
    with postgres_server() as server:
        server.psql("CREATE DATABASE outbox")
        yield session_factory(open_engine(server.url("outbox")))


class Flaky:
    """503 to every third request: retries interleave with fresh messages."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: Request) -> Reply:
        self.calls += 1
        return (503, {}, b"busy") if self.calls % 3 == 0 else (204, {}, b"")


def test_racing_senders_and_deliverers_deliver_each_message_once_in_order(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RecordingServer(Flaky()).start()
    monkeypatch.setenv("RACE_HOOK", server.url("/race"))
    channels = {"race": Channel(kind="webhook", url="${env:RACE_HOOK}")}
    fast = Backoff(base_s=0.05, cap_s=0.2)
    deliverers = [
        OutboxDelivery(sessions, interval_s=0.05, backoff=fast, breakers=Breakers(threshold=1000))
        for _ in range(2)
    ]

    def send(name: str) -> None:
        notifier = Notifier(channels, sessions, backoff=fast, breakers=Breakers(threshold=1000))
        for n in range(PER_SENDER):
            notifier.send(Event("test.race", f"{name} {n}", "info", {"sender": name, "n": n}))
        notifier.wait(30)

    try:
        for deliverer in deliverers:
            deliverer.start()
        senders = [threading.Thread(target=send, args=(name,)) for name in ("alpha", "beta")]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with sessions() as session:
                states = list(session.scalars(select(NotificationRow.state)))
            if len(states) == 2 * PER_SENDER and set(states) == {"delivered"}:
                break
            time.sleep(0.2)
    finally:
        for deliverer in deliverers:
            deliverer.stop()
        server.stop()
    with sessions() as session:
        rows = list(session.scalars(select(NotificationRow).order_by(NotificationRow.id)))
    assert [row.state for row in rows] == ["delivered"] * 2 * PER_SENDER
    received = [(b["details"]["sender"], b["details"]["n"]) for b in server.bodies()]
    assert received == [(r.body["details"]["sender"], r.body["details"]["n"]) for r in rows]
    assert len(server.refused) > 0  # the channel did fail now and then
    assert sum(row.attempts for row in rows) == len(server.requests) + len(
        server.refused
    )  # no unrecorded send
