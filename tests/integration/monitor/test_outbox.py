"""The issue's acceptance: a notification channel down for a minute while messages are sent.

Two processes queue 24 messages between them while the webhook's port refuses connections; two
deliverers (the test's own `OutboxDelivery`, and one in a third process, as two `shipyard serve`
would) keep trying. The channel comes back after a real minute (this test waits it: about 75 s in
all); then every message arrives exactly once, in the order it was queued.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.monitor import Backoff, Breakers, OutboxDelivery
from shipyard.state import NotificationRow, as_utc, open_engine, session_factory, utcnow
from support.webhook import RecordingServer

pytestmark = pytest.mark.integration

PER_SENDER = 12
DOWN_S = 60.0
BACKOFF_CAP_S = 5.0

SENDER = """
import sys, time
from shipyard.monitor import Event, Notifier
from shipyard.spec import Channel
from shipyard.state import open_engine, session_factory

url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
ops = Channel(kind="webhook", url="${env:OPS_HOOK}")
notifier = Notifier({"ops": ops}, session_factory(open_engine(url)))
for n in range(count):
    notifier.send(Event("test.outage", f"{name} {n}", "page", {"sender": name, "n": n}))
    time.sleep(0.02)
notifier.wait(3)  # a CLI's short chance; the rest stays queued
"""

DELIVERER = """
import sys, time
from pathlib import Path
from shipyard.monitor import Backoff, Breakers, OutboxDelivery
from shipyard.state import open_engine, session_factory

url, stop = sys.argv[1], Path(sys.argv[2])
delivery = OutboxDelivery(
    session_factory(open_engine(url)), interval_s=0.2, backoff=Backoff(0.5, 5.0), breakers=Breakers(5, 5.0)
)
delivery.start()
deadline = time.monotonic() + 300
while not stop.exists() and time.monotonic() < deadline:
    time.sleep(0.1)
delivery.stop()
"""


def _rows(sessions: sessionmaker[Session]) -> list[NotificationRow]:
    with sessions() as session:
        return list(session.scalars(select(NotificationRow).order_by(NotificationRow.id)))


def test_a_channel_down_for_a_minute_gets_every_message_once_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"sqlite:///{tmp_path / 'state.db'}"
    sessions = session_factory(open_engine(database))
    server = RecordingServer().start()
    url = server.url("/ops")
    server.stop()  # down: the port refuses connections
    down_at = time.monotonic()
    env = {**os.environ, "OPS_HOOK": url}
    stop_file = tmp_path / "stop"
    other = subprocess.Popen([sys.executable, "-c", DELIVERER, database, str(stop_file)], env=env)
    ours = OutboxDelivery(
        sessions, interval_s=0.2, backoff=Backoff(0.5, BACKOFF_CAP_S), breakers=Breakers(5, 5.0)
    )
    monkeypatch.setenv("OPS_HOOK", url)  # our deliverer resolves the reference too
    ours.start()
    try:
        senders = [
            subprocess.Popen([sys.executable, "-c", SENDER, database, name, str(PER_SENDER)], env=env)
            for name in ("alpha", "beta")
        ]
        assert [p.wait(timeout=60) for p in senders] == [0, 0]
        queued = _rows(sessions)
        assert len(queued) == 2 * PER_SENDER
        assert all(row.state == "pending" for row in queued)
        assert max(row.attempts for row in queued) >= 1  # they were tried, and failed
        assert server.requests == []

        time.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))
        # After a minute of failures the retries are still spaced by the backoff given (at most
        # 5 s), not the default (5 min): whatever is pending is due again within 5 s of now.
        due = max(as_utc(row.next_attempt_at) for row in _rows(sessions) if row.state == "pending")
        assert due <= utcnow() + dt.timedelta(seconds=BACKOFF_CAP_S)
        server.start()  # back, on the same port
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and any(row.state != "delivered" for row in _rows(sessions)):
            time.sleep(0.25)
    finally:
        stop_file.touch()
        ours.stop()
        other.wait(timeout=30)
        server.stop()

    rows = _rows(sessions)
    assert [row.state for row in rows] == ["delivered"] * len(rows), [r.last_error for r in rows]
    received = [(body["details"]["sender"], body["details"]["n"]) for body in server.bodies()]
    queued_order = [(row.body["details"]["sender"], row.body["details"]["n"]) for row in rows]
    assert received == queued_order  # none lost, none duplicated, in id order
    for name in ("alpha", "beta"):
        assert [n for sender, n in received if sender == name] == list(range(PER_SENDER))
    assert {sender for sender, _ in received} == {"alpha", "beta"}
