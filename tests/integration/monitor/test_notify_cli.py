"""`shipyard notify test|queue|flush` in this process, against a recording HTTP server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.monitor import Event
from shipyard.monitor._outbox import enqueue
from shipyard.spec import Channel
from shipyard.state import NotificationRow, open_engine, session_factory
from support.cli import run_cli
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


@dataclass(frozen=True)
class Cli:
    spec: Path
    server: RecordingServer
    sessions: sessionmaker[Session]

    def __call__(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        return run_cli(capsys, *args)


def _answer(request: Request) -> Reply:
    return (404, {}, b"no_service") if request.path == "/refused" else (204, {}, b"")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC)
    database = f"sqlite:///{tmp_path / 'state.db'}"
    server = RecordingServer(_answer).start()
    monkeypatch.setenv("SHIPYARD_DATABASE_URL", database)
    monkeypatch.setenv("OPS_HOOK", server.url("/ops-secret-path-1234"))
    monkeypatch.setenv("REFUSED_HOOK", server.url("/refused"))
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    try:
        yield Cli(spec, server, session_factory(open_engine(database)))
    finally:
        server.stop()


def test_notify_test_sends_now_and_says_so(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "notify", "test", "ops", "-f", str(cli.spec), "-o", "json")
    assert code == 0
    report = json.loads(out)
    assert report["delivered"] is True
    assert report["target"] == f"webhook http://127.0.0.1:{cli.server.port}/***"
    (body,) = cli.server.bodies()
    assert body["event"] == "shipyard.test"
    assert body["severity"] == "info"
    code, out, _ = cli(capsys, "notify", "test", "ops", "-f", str(cli.spec), "--dry-run")
    assert code == 0
    assert "would send" in out
    assert len(cli.server.requests) == 1  # the dry run sent nothing
    assert "ops-secret-path-1234" not in out


def test_notify_test_reports_why_not(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "notify", "test", "refused", "-f", str(cli.spec), "-o", "json")
    assert code == 1
    assert json.loads(out)["error"] == "HTTP 404: no_service"
    assert "not delivered: HTTP 404: no_service (permanent" in err
    code, _, err = cli(capsys, "notify", "test", "unset", "-f", str(cli.spec))
    assert code == 2
    assert "NOT_SET_ANYWHERE" in err
    code, _, err = cli(capsys, "notify", "test", "nope", "-f", str(cli.spec))
    assert code == 2
    assert "channels: ops, refused, unset" in err


def _queue(cli: Cli, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, out, _ = cli(capsys, "notify", "queue", "-o", "json")
    assert code == 0
    data: list[dict[str, Any]] = json.loads(out)
    return data


def test_queue_and_flush(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    ops = Channel(kind="webhook", url="${env:OPS_HOOK}")
    refused = Channel(kind="webhook", url="${env:REFUSED_HOOK}")
    for n in range(3):
        enqueue(cli.sessions, [("ops", ops), ("refused", refused)], Event("test.flush", f"message {n}"))
    queued = _queue(cli, capsys)
    assert [(m["channel"], m["summary"]) for m in queued] == [
        ("ops", "message 0"), ("ops", "message 1"), ("ops", "message 2"),
        ("refused", "message 0"), ("refused", "message 1"), ("refused", "message 2"),
    ]  # fmt: skip
    code, out, _ = cli(capsys, "notify", "flush", "--dry-run", "-o", "json")
    assert code == 0
    assert len(json.loads(out)["would_try"]) == 6
    assert cli.server.requests == []

    cli.server.stop()  # down: flush keeps everything and exits 1
    code, out, _ = cli(capsys, "notify", "flush", "-o", "json")
    assert code == 1
    result = json.loads(out)
    assert sorted(a["outcome"] for a in result["attempts"]) == ["retry", "retry"]  # one head per channel
    assert len(result["remaining"]) == 6

    cli.server.start()  # back: --all tries at once what backoff would hold until later
    code, out, _ = cli(capsys, "notify", "flush", "--all")
    assert code == 0, out
    assert "delivered 3" in out
    assert "dead 3" in out
    assert [b["summary"] for b in cli.server.bodies()] == ["message 0", "message 1", "message 2"]
    dead = _queue(cli, capsys)
    assert [(m["channel"], m["state"], m["last_error"]) for m in dead] == [
        ("refused", "dead", "HTTP 404: no_service")
    ] * 3
    code, out, _ = cli(capsys, "notify", "queue")
    assert code == 0
    assert "dead" in out
    with cli.sessions() as session:
        rows = session.scalars(select(NotificationRow).where(NotificationRow.channel == "ops")).all()
    assert all(row.state == "delivered" for row in rows)
