"""The notifier and its outbox against a real HTTP server on loopback and a SQLite state store.

`Notifier.wait` returns once every message is delivered, dead or handed over to the server: its
deadline is generous, and a test that needs a handover proves it by `wait` returning at all.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.monitor import Backoff, Breakers, Event, Notifier, Outbox, list_queue
from shipyard.spec import Channel
from shipyard.state import NotificationRow, as_utc, open_engine, session_factory, utcnow
from support.webhook import RecordingServer, Reply, Request, recording_server


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


class Script:
    """Answers from a list of statuses (then 204), as a flaky channel would."""

    def __init__(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses)
        self.headers = headers or {}

    def __call__(self, request: Request) -> Reply:
        if self.statuses:
            return self.statuses.pop(0), self.headers, b"nope"
        return 204, {}, b""


@pytest.fixture
def flaky() -> Iterator[tuple[RecordingServer, Script]]:
    script = Script()
    with recording_server(script) as server:
        yield server, script


def _rows(sessions: sessionmaker[Session]) -> list[NotificationRow]:
    with sessions() as session:
        return list(session.scalars(select(NotificationRow).order_by(NotificationRow.id)))


def _fast(channels: dict[str, Channel], sessions: sessionmaker[Session]) -> Notifier:
    return Notifier(channels, sessions, backoff=Backoff(base_s=0.1, cap_s=0.5), breakers=Breakers())


def test_webhook_and_slack_bodies_with_retry(
    flaky: tuple[RecordingServer, Script], sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, script = flaky
    monkeypatch.setenv("HOOK_URL", server.url("/hook"))
    monkeypatch.setenv("SLACK_URL", server.url("/slack"))
    channels = {
        "hook": Channel(kind="webhook", url="${env:HOOK_URL}"),
        "slack": Channel(kind="slack", url="${env:SLACK_URL}", min_severity="page"),
        "unresolvable": Channel(kind="webhook", url={"secretRef": "alerts/url"}),
        "rollouts-only": Channel(kind="webhook", url="${env:HOOK_URL}", events=["rollout.rolled_back"]),
    }
    script.statuses = [503]  # the first delivery fails once and is retried
    notifier = _fast(channels, sessions)
    notifier.send(Event("rollout.started", "api: releasing v2", "info", {"service": "api"}))
    notifier.send(Event("rollout.rolled_back", "api: v2 rolled back: error_rate 0.2 > 0.02", "page"))
    assert notifier.wait(60)
    paths = sorted(r.path for r in server.requests)
    assert paths == ["/hook", "/hook", "/hook", "/slack"]  # info is below the Slack channel's min severity
    hook_events = [r.json()["event"] for r in server.requests if r.path == "/hook"]
    assert sorted(hook_events) == ["rollout.rolled_back", "rollout.rolled_back", "rollout.started"]
    assert next(r.json() for r in server.requests if r.json().get("event") == "rollout.started") == {
        "event": "rollout.started",
        "summary": "api: releasing v2",
        "severity": "info",
        "details": {"service": "api"},
    }
    slack = next(r.json() for r in server.requests if r.path == "/slack")
    assert slack["text"].endswith("api: v2 rolled back: error_rate 0.2 > 0.02")
    assert slack["blocks"][0]["type"] == "section"
    rows = _rows(sessions)
    states = {(row.channel, row.event): row.state for row in rows}
    assert states[("unresolvable", "rollout.started")] == "pending"  # left for a process that has ALERTS_URL
    assert states[("hook", "rollout.started")] == "delivered"
    retried = next(row for row in rows if row.channel == "hook" and row.event == "rollout.started")
    assert retried.attempts == 2
    # References, never values, are stored.
    assert all(server.url() not in str(row.channel_config) for row in rows)


def test_a_later_message_never_overtakes_an_earlier_pending_one(
    flaky: tuple[RecordingServer, Script], sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, script = flaky
    monkeypatch.setenv("HOOK_URL", server.url())
    script.statuses = [500, 502, 503]
    notifier = _fast({"hook": Channel(kind="webhook", url="${env:HOOK_URL}")}, sessions)
    for n in range(5):
        notifier.send(Event("test.order", f"message {n}"))
    assert notifier.wait(60)
    assert [body["summary"] for body in server.bodies()] == [f"message {n}" for n in range(5)]
    assert [r.json()["summary"] for r in server.refused] == ["message 0"] * 3  # only the head was tried


def test_a_permanent_refusal_is_dead_with_its_reason_and_the_queue_moves_on(
    flaky: tuple[RecordingServer, Script], sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, script = flaky
    monkeypatch.setenv("HOOK_URL", server.url())
    script.statuses = [404]
    notifier = _fast({"hook": Channel(kind="webhook", url="${env:HOOK_URL}")}, sessions)
    notifier.send(Event("test.dead", "first"))
    notifier.send(Event("test.dead", "second"))
    assert notifier.wait(60)
    first, second = _rows(sessions)
    assert (first.state, first.attempts, first.last_error) == ("dead", 1, "HTTP 404: nope")
    assert second.state == "delivered"
    assert [m.summary for m in list_queue(sessions)] == ["first"]


def test_429_waits_as_long_as_retry_after_says(
    flaky: tuple[RecordingServer, Script], sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, script = flaky
    monkeypatch.setenv("HOOK_URL", server.url())
    script.statuses, script.headers = [429], {"Retry-After": "120"}
    notifier = _fast({"hook": Channel(kind="webhook", url="${env:HOOK_URL}")}, sessions)
    before = utcnow()
    notifier.send(Event("test.limited", "slow"))
    assert notifier.wait(60)  # handed over: the next try is beyond the notifier's patience
    (row,) = _rows(sessions)
    assert row.state == "pending"
    assert as_utc(row.next_attempt_at) >= before + dt.timedelta(seconds=119)
    assert row.last_error == "HTTP 429: nope"


def test_a_down_channel_opens_the_breaker_and_the_message_stays_queued(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = RecordingServer().start()
    url = server.url("/secret-path-abc123")
    server.stop()  # the port now refuses connections
    monkeypatch.setenv("HOOK_URL", url)
    breakers = Breakers(threshold=3, cool_down_s=60.0)
    notifier = Notifier(
        {"hook": Channel(kind="webhook", url="${env:HOOK_URL}")},
        sessions,
        backoff=Backoff(base_s=0.05, cap_s=0.1),
        breakers=breakers,
    )
    caplog.set_level(logging.DEBUG)
    notifier.send(Event("test.down", "nobody listens"))
    # Handed over once the breaker opened (with a backoff capped at 0.1 s and no breaker, the
    # notifier would go on retrying and never be done).
    assert notifier.wait(60)
    (row,) = _rows(sessions)
    assert (row.state, row.attempts) == ("pending", 3)
    assert "ConnectError" in (row.last_error or "")
    assert not any(next(iter(breakers._breakers.values())).allow(time.monotonic()) for _ in range(1))
    assert "secret-path-abc123" not in caplog.text
    # The channel comes back: the server's deliverer (here a fresh process's outbox) sends it.
    server.start()
    attempts, _ = Outbox(sessions, breakers=Breakers()).drain()
    assert [a.outcome for a in attempts] == ["delivered"]
    assert [b["summary"] for b in server.bodies()] == ["nobody listens"]
    server.stop()
