"""The notifier against a real HTTP server on loopback that records what it receives."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shipyard.monitor import Event, Notifier
from shipyard.spec import Channel


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]] = []  # noqa: RUF012 - shared by design in one test server
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Recorder.fail_first > 0:
            _Recorder.fail_first -= 1
            self.send_response(503)
        else:
            _Recorder.received.append((self.path, body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Recorder.received = []
    _Recorder.fail_first = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_webhook_and_slack_bodies_with_retry(receiver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_URL", f"{receiver}/hook")
    monkeypatch.setenv("SLACK_URL", f"{receiver}/slack")
    channels = {
        "hook": Channel(kind="webhook", url="${env:HOOK_URL}"),
        "slack": Channel(kind="slack", url="${env:SLACK_URL}", min_severity="page"),
        "unresolvable": Channel(kind="webhook", url={"secretRef": "alerts/url"}),
    }
    _Recorder.fail_first = 1  # the first delivery fails once and is retried
    notifier = Notifier(channels)
    notifier.send(Event("rollout.started", "api: releasing v2", "info", {"service": "api"}))
    notifier.send(Event("rollout.rolled_back", "api: v2 rolled back: error_rate 0.2 > 0.02", "page"))
    notifier.wait()
    paths = sorted(path for path, _ in _Recorder.received)
    assert paths == ["/hook", "/hook", "/slack"]  # info is below the Slack channel's min severity
    hook_events = sorted(body["event"] for path, body in _Recorder.received if path == "/hook")
    assert hook_events == ["rollout.rolled_back", "rollout.started"]
    slack = next(body for path, body in _Recorder.received if path == "/slack")
    assert slack["text"].endswith("api: v2 rolled back: error_rate 0.2 > 0.02")
