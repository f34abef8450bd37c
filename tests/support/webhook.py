"""A webhook receiver on loopback: notification tests read what shipyard sent to it."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Webhook(f"http://127.0.0.1:{server.server_address[1]}/hook", received)
    finally:
        server.shutdown()
        server.server_close()
