"""HTTP receivers on loopback: notification tests read what shipyard sent to them.

`RecordingServer` keeps every request and answers as its responder says; it can be stopped (its
port then refuses connections) and started again on the same port, to play a channel that is down.
`webhook_receiver()` is the simple case: 204 to every POST, JSON bodies kept in order.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


Reply = tuple[int, dict[str, str], bytes]
Responder = Callable[[Request], Reply]


def _no_content(_request: Request) -> Reply:
    return 204, {}, b""


class RecordingServer:
    """A threaded HTTP server on 127.0.0.1 that records POSTs (accepted or not) in arrival order."""

    def __init__(self, responder: Responder = _no_content, port: int = 0) -> None:
        self.responder = responder
        self.port = port
        self.requests: list[Request] = []
        """Requests the responder answered with 2xx, in the order they arrived."""
        self.refused: list[Request] = []
        """Requests answered with anything else."""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> RecordingServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = Request(self.path, dict(self.headers.items()), self.rfile.read(length))
                with owner._lock:  # one at a time: arrival order is recording order
                    status, headers, body = owner.responder(request)
                    (owner.requests if 200 <= status < 300 else owner.refused).append(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[Any]:
        with self._lock:
            return [request.json() for request in self.requests]


@contextlib.contextmanager
def recording_server(responder: Responder = _no_content) -> Iterator[RecordingServer]:
    server = RecordingServer(responder).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Webhook:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    """The JSON bodies, in the order they arrived."""

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.received if kind is None or e.get("event") == kind]


@contextlib.contextmanager
def webhook_receiver() -> Iterator[Webhook]:
    """An HTTP server that answers 204 to every POST and keeps its JSON body."""
    received: list[dict[str, Any]] = []

    def keep(request: Request) -> Reply:
        received.append(request.json())
        return 204, {}, b""

    with recording_server(keep) as server:
        yield Webhook(server.url("/hook"), received)
