"""`shipyard.ops.test_channel`, `notification_queue` and `flush_queue` against a recording HTTP
server on loopback and a SQLite state store: what the CLI and a job see, without the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.errors import UserError
from shipyard.monitor import Event
from shipyard.monitor._outbox import enqueue
from shipyard.ops import (
    FlushQueue,
    ListQueue,
    TestChannel,
    Workspace,
    flush_queue,
    notification_queue,
    test_channel,
)
from shipyard.spec import Channel
from support.webhook import RecordingServer, Reply, Request

SPEC = """name: shop
services:
  api: {role: api, image: i, port: 80}
notifications:
  ops: {kind: webhook, url: "${env:OPS_HOOK}"}
  refused: {kind: webhook, url: "${env:REFUSED_HOOK}"}
  unset: {kind: slack, url: "${env:NOT_SET_ANYWHERE}"}
images: {environments: []}  # notifications, not which images production may run
"""


def _answer(request: Request) -> Reply:
    return (404, {}, b"no_service") if request.path == "/refused" else (204, {}, b"")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingServer]:
    server = RecordingServer(_answer).start()
    monkeypatch.setenv("OPS_HOOK", server.url("/ops-secret-path-1234"))
    monkeypatch.setenv("REFUSED_HOOK", server.url("/refused"))
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC)
    return Workspace.open(spec, database_url=f"sqlite:///{tmp_path / 'state.db'}", actor="cli:tester")


def test_a_test_event_is_sent_now_and_says_where(server: RecordingServer, ws: Workspace) -> None:
    planned = test_channel(ws, TestChannel(channel="ops", dry_run=True))
    assert (planned.dry_run, planned.delivered, planned.ok) == (True, False, True)
    assert planned.target == f"webhook http://127.0.0.1:{server.port}/***"
    assert planned.summary() == f"dry run: would send a info test event to ops ({planned.target})"
    assert server.requests == []

    sent = test_channel(ws, TestChannel(channel="ops", severity="page"), timeout_s=5)
    assert (sent.delivered, sent.ok, sent.channel_kind) == (True, True, "webhook")
    assert sent.seconds is not None
    assert sent.summary().startswith(f"delivered a test event to ops ({sent.target}) in ")
    (body,) = server.bodies()
    assert (body["event"], body["severity"]) == ("shipyard.test", "page")
    assert body["details"] == {"channel": "ops", "actor": "cli:tester"}
    assert "ops-secret-path-1234" not in sent.model_dump_json()


def test_a_failed_test_event_is_a_result_that_says_why(server: RecordingServer, ws: Workspace) -> None:
    refused = test_channel(ws, TestChannel(channel="refused"))
    assert (refused.delivered, refused.ok, refused.retryable) == (False, False, False)
    assert refused.error == "HTTP 404: no_service"
    assert (
        refused.summary()
        == "channel refused: not delivered: HTTP 404: no_service (permanent: fix the channel)"
    )


def test_a_channel_that_cannot_be_tried_is_a_user_error(server: RecordingServer, ws: Workspace) -> None:
    with pytest.raises(UserError, match="NOT_SET_ANYWHERE"):
        test_channel(ws, TestChannel(channel="unset"))
    with pytest.raises(UserError, match="channels: ops, refused, unset"):
        test_channel(ws, TestChannel(channel="nope"))
    assert server.requests == []


def test_queue_and_flush(server: RecordingServer, ws: Workspace) -> None:
    assert notification_queue(ws, ListQueue()).messages == []
    assert flush_queue(ws, FlushQueue(dry_run=True)).summary() == "nothing is due"
    ops = Channel(kind="webhook", url="${env:OPS_HOOK}")
    refused = Channel(kind="webhook", url="${env:REFUSED_HOOK}")
    for n in range(2):
        enqueue(ws.sessions, [("ops", ops), ("refused", refused)], Event("test.flush", f"message {n}"))
    queued = notification_queue(ws, ListQueue())
    assert [(m.channel, m.summary) for m in queued.messages] == [
        ("ops", "message 0"), ("ops", "message 1"), ("refused", "message 0"), ("refused", "message 1"),
    ]  # fmt: skip
    assert queued.summary() == "4 message(s) waiting, 0 given up"

    planned = flush_queue(ws, FlushQueue(dry_run=True))
    assert len(planned.would_try) == 4
    assert (planned.ok, planned.attempts) == (True, [])
    assert planned.summary() == "dry run: would try 4 message(s)"
    assert server.requests == []

    server.stop()  # down: a flush keeps everything, and the result says it is not done
    failed = flush_queue(ws, FlushQueue(), timeout_s=2)
    assert sorted(a.outcome for a in failed.attempts) == ["retry", "retry"]  # one head per channel
    assert (len(failed.remaining), failed.ok) == (4, False)
    assert failed.summary() == "delivered 0, failed 2 (kept), dead 0; 4 still queued"

    server.start()  # back: ignoring the schedule tries at once what backoff would hold until later
    flushed = flush_queue(ws, FlushQueue(ignore_schedule=True))
    assert (flushed.ok, flushed.remaining) == (True, [])
    assert flushed.outcomes() == {"delivered": 2, "retry": 0, "dead": 2}
    assert [b["summary"] for b in server.bodies()] == ["message 0", "message 1"]
    dead = notification_queue(ws, ListQueue())
    assert [(m.channel, m.state) for m in dead.messages] == [("refused", "dead")] * 2
    assert dead.summary() == "0 message(s) waiting, 2 given up"
