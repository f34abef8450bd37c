#!/usr/bin/env python3
"""shipyard's demo app: a tiny HTTP/1.1 service whose behaviour comes from its environment.

    PORT=8080 VERSION=v2 ERROR_RATE=0.1 python3 app.py

Environment (all optional but PORT):

    PORT              port to listen on, on 127.0.0.1 (HOST overrides the address)
    VERSION           returned in every body and in an `X-Version` header         (default "dev")
    ERROR_RATE        share of work requests answered 500, 0..1; seeded, so a run is repeatable
    ERROR_SEED        seed of that choice                                   (default: VERSION)
    ADDED_LATENCY_MS  added to every work request before it is answered
    FAIL_HEALTH       "1"/"true"/"yes": /healthz answers 503
    STARTUP_DELAY_S   wait this long before listening (a slow boot)
    IGNORE_SIGTERM    "1"/"true"/"yes": ignore SIGTERM (to show the supervisor's SIGKILL)
    ACCESS_LOG        "1"/"true"/"yes": one line per request on stderr

Each of these may be given for one version only, by suffixing `__<VERSION>`: with
`ERROR_RATE__v3=0.2` in a service's environment, only v3 answers 20 % errors — one spec can
then hold a healthy v2 and a faulty v3, as `make demo` and the release tests do.

Endpoints: `/healthz` (200, or 503 with FAIL_HEALTH or while draining) and anything else (the
app's work: 200, or 500 for the ERROR_RATE share). Every response is JSON with the version.

On SIGTERM (or SIGINT) it stops accepting connections, lets requests in flight finish (answering
them with `Connection: close`), closes idle keep-alive connections, then exits 0: a graceful drain.
Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TRUE = {"1", "true", "yes", "on"}
IDLE_TIMEOUT_S = 60.0
"""A keep-alive connection idle this long is closed."""
DRAIN_TIMEOUT_S = 300.0
"""Upper bound of a drain (whoever stops us will usually SIGKILL us sooner)."""


def _setting(name: str) -> str:
    """`NAME__<VERSION>` when set (a setting for this version only), else `NAME`."""
    version = os.environ.get("VERSION", "")
    specific = os.environ.get(f"{name}__{version}") if version else None
    return (specific if specific is not None else os.environ.get(name, "")).strip()


def _flag(name: str) -> bool:
    return _setting(name).lower() in TRUE


def _number(name: str, default: float) -> float:
    raw = _setting(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        sys.exit(f"demo-app: {name} must be a number, not {raw!r}")


class Config:
    def __init__(self) -> None:
        self.version = os.environ.get("VERSION", "dev")
        self.error_rate = min(1.0, max(0.0, _number("ERROR_RATE", 0.0)))
        self.latency_s = max(0.0, _number("ADDED_LATENCY_MS", 0.0)) / 1000
        self.fail_health = _flag("FAIL_HEALTH")
        self.startup_delay_s = max(0.0, _number("STARTUP_DELAY_S", 0.0))
        self.access_log = _flag("ACCESS_LOG")
        self.seed = os.environ.get("ERROR_SEED", self.version)


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], config: Config) -> None:
        super().__init__(address, Handler)
        self.config = config
        self.rng = random.Random(config.seed)
        self.rng_lock = threading.Lock()
        self.draining = False
        self.cond = threading.Condition()
        self.busy: dict[socket.socket, bool] = {}
        """Every open connection: is a request being handled on it?"""

    def fail_this_one(self) -> bool:
        if self.config.error_rate <= 0:
            return False
        with self.rng_lock:
            return self.rng.random() < self.config.error_rate

    def drain(self, timeout_s: float) -> int:
        """Close idle connections, wait for busy ones to finish; the number still open at the end."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            self.draining = True
            for conn, busy in self.busy.items():
                if not busy:
                    _shutdown(conn)
            while self.busy and time.monotonic() < deadline:
                self.cond.wait(0.5)
            return len(self.busy)


def _shutdown(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shipyard-demo"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_S
    server: DemoServer

    def setup(self) -> None:
        super().setup()
        with self.server.cond:
            self.server.busy[self.connection] = False

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.cond:
                self.server.busy.pop(self.connection, None)
                self.server.cond.notify_all()

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            with self.server.cond:
                self.server.busy[self.connection] = False
                if self.server.draining:
                    break
            self.handle_one_request()

    def parse_request(self) -> bool:
        with self.server.cond:
            self.server.busy[self.connection] = True
        return super().parse_request()

    # --- endpoints

    def _serve(self, head: bool = False) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        config = self.server.config
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            if config.fail_health or self.server.draining:
                reason = "draining" if self.server.draining else "FAIL_HEALTH is set"
                self._respond(503, {"status": "unhealthy", "reason": reason}, head)
            else:
                self._respond(200, {"status": "ok"}, head)
            return
        if config.latency_s:
            time.sleep(config.latency_s)
        if self.server.fail_this_one():
            self._respond(500, {"error": "injected failure (ERROR_RATE)"}, head)
        else:
            self._respond(200, {"path": path, "message": "hello from the demo app"}, head)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _respond(self, status: int, payload: dict[str, Any], head: bool = False) -> None:
        version = self.server.config.version
        body = (json.dumps({"version": version, "status": status, **payload}) + "\n").encode()
        if self.server.draining:
            self.close_connection = True
        lines = [
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"X-Version: {version}",
            "Cache-Control: no-store",
        ]
        if self.close_connection:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head:
            data += body
        self.wfile.write(data)
        if self.server.config.access_log:
            self.log_request(status, len(body))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.config.access_log:
            super().log_message(format, *args)


def _log(message: str) -> None:
    print(f"demo-app[{os.getpid()}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    config = Config()
    port_raw = os.environ.get("PORT", "")
    if not port_raw.isdigit():
        _log(f"PORT must be a port number, not {port_raw!r}")
        return 2
    if _flag("IGNORE_SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if config.startup_delay_s:
        _log(f"starting in {config.startup_delay_s:g}s (STARTUP_DELAY_S)")
        time.sleep(config.startup_delay_s)
    # Only the main thread takes the stop signals, and only in sigwait below: block them now so
    # that every thread started from here on inherits the block.
    stop_signals = {signal.SIGINT} if _flag("IGNORE_SIGTERM") else {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        server = DemoServer((host, int(port_raw)), config)
    except OSError as e:
        _log(f"cannot listen on port {port_raw}: {e}")
        return 1
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    _log(
        f"version {config.version} listening on {host}:{port_raw}"
        f" (error rate {config.error_rate:g}, added latency {config.latency_s * 1000:g} ms"
        f"{', failing health' if config.fail_health else ''})"
    )
    signum = signal.sigwait(stop_signals)
    started = time.monotonic()
    _log(f"{signal.Signals(signum).name}: draining")
    server.shutdown()  # no more accepting...
    server.server_close()  # ...and new connections are refused
    left = server.drain(DRAIN_TIMEOUT_S)
    _log(f"drained in {time.monotonic() - started:.2f}s" + (f" ({left} connections cut)" if left else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
