#!/usr/bin/env python3
"""shipyard's demo app: a tiny HTTP/1.1 service whose behaviour comes from its environment.

    PORT=8080 VERSION=v2 ERROR_RATE=0.1 python3 app.py

Environment (all optional but PORT):

    PORT              port to listen on, on 127.0.0.1 (HOST overrides the address)
    VERSION           returned in every body and in an `X-Version` header         (default "dev")
    ERROR_RATE        share of work requests answered 500, 0..1; seeded, so a run is repeatable
    ERROR_SEED        seed of that choice                                   (default: VERSION)
    ADDED_LATENCY_MS  added to every work request before it is answered
    WORK_US           CPU time every work request burns in the loop, in microseconds: what a
                      real handler spends rendering and encoding (the benchmark's "app work")
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

How it serves: one thread runs an event loop (`selectors`) over the listening socket and every
connection, and answers a request as soon as it has read it. A keep-alive connection costs no
thread, however long it stays open (a thread per connection held thousands of threads under a
proxy that opened a connection per request, and slowed every request down). Only a work request
with ADDED_LATENCY_MS leaves the loop: it waits out its latency in a pool thread (`time.sleep`,
so the tests can see it waiting) while the loop serves everything else. Standard library only.
"""

from __future__ import annotations

import contextlib
import http
import json
import os
import queue
import random
import selectors
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

TRUE = {"1", "true", "yes", "on"}
IDLE_TIMEOUT_S = 60.0
"""A keep-alive connection idle this long is closed."""
DRAIN_TIMEOUT_S = 300.0
"""Upper bound of a drain (whoever stops us will usually SIGKILL us sooner)."""
MAX_HEAD_BYTES = 65536
"""A request line and headers longer than this are refused (431)."""
MAX_BODY_BYTES = 16 * 1024 * 1024
"""A request body longer than this is refused (413): the body is read and ignored, not streamed."""
DELAY_THREADS = 512
"""Work requests waiting out ADDED_LATENCY_MS at once; more wait for a thread (a queue, not an error)."""
METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}
LISTEN_BACKLOG = 1024


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
        self.work_s = max(0.0, _number("WORK_US", 0.0)) / 1_000_000
        self.fail_health = _flag("FAIL_HEALTH")
        self.startup_delay_s = max(0.0, _number("STARTUP_DELAY_S", 0.0))
        self.access_log = _flag("ACCESS_LOG")
        self.seed = os.environ.get("ERROR_SEED", self.version)


class BadRequest(Exception):
    """A request this app will not parse: answered with `status`, then the connection is closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    line: str
    """The request line, for the access log."""
    keep_alive: bool


def parse_request(buffer: bytearray) -> tuple[Request, int] | None:
    """The first request in `buffer` and its length in bytes (head and body), or None while it is
    incomplete. Bodies are sized by Content-Length; a chunked body is refused."""
    while buffer[:2] == b"\r\n":  # empty lines before a request line are allowed (RFC 9112 §2.2)
        del buffer[:2]
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise BadRequest(431, "request head too large")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, f"bad request line {lines[0][:100]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400, f"bad header line {line[:100]!r}")
        headers[name.lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadRequest(501, "chunked request bodies are not supported: send a Content-Length")
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError:
        raise BadRequest(400, "Content-Length is not a number") from None
    if not 0 <= length <= MAX_BODY_BYTES:
        raise BadRequest(413, f"Content-Length must be between 0 and {MAX_BODY_BYTES}")
    size = end + 4 + length
    if len(buffer) < size:
        return None
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    return Request(method, target.split("?", 1)[0], lines[0], keep_alive), size


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    peer: str
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    waiting: bool = False
    """A request of this connection waits out its added latency in a pool thread."""
    closing: bool = False
    """Close once `outbuf` is sent (after a `Connection: close` answer, or the client's EOF)."""
    watched: int = 0
    """The selector events this connection is registered for (0: not registered)."""
    last_active: float = field(default_factory=time.monotonic)

    @property
    def busy(self) -> bool:
        """A request is being read, handled or answered: a drain waits for it."""
        return self.waiting or bool(self.inbuf) or bool(self.outbuf)


class DemoServer:
    """The event loop: accepts, reads, answers and closes connections, all in `serve()`'s thread.

    Other threads reach it only through `_done` (delayed answers, ready to send) and `drain()`,
    each followed by a byte on the wake-up socket pair."""

    def __init__(self, address: tuple[str, int], config: Config) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.rng_lock = threading.Lock()
        self.listener = socket.create_server(address, backlog=LISTEN_BACKLOG)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.connections: dict[socket.socket, Connection] = {}
        self.delays = ThreadPoolExecutor(DELAY_THREADS, thread_name_prefix="delay")
        self._done: queue.SimpleQueue[tuple[Connection, bytes, bool]] = queue.SimpleQueue()
        self.draining = False
        self._drain_requested = threading.Event()
        self.stopped = threading.Event()
        self.left = 0
        """Connections still open when the drain timed out."""

    # --- the loop

    def serve(self) -> None:
        drain_deadline = 0.0
        try:
            while True:
                if self._drain_requested.is_set() and not self.draining:
                    self._begin_drain()
                    drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
                if self.draining and (not self.connections or time.monotonic() >= drain_deadline):
                    self.left = len(self.connections)
                    return
                for key, events in self.selector.select(timeout=1.0):
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj is self.wake_r:
                        self._woken()
                    else:
                        conn = key.data
                        if events & selectors.EVENT_WRITE:
                            self._flush(conn)
                        if events & selectors.EVENT_READ and conn.sock in self.connections:
                            self._read(conn)
                self._close_idle()
        finally:
            for conn in list(self.connections.values()):
                self._close(conn)
            self.delays.shutdown(wait=False, cancel_futures=True)
            self.stopped.set()

    def drain(self) -> None:
        """From any thread: stop accepting, answer what is in flight, close the rest, stop."""
        self._drain_requested.set()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe: the loop is woken already
            self.wake_w.send(b"x")

    def _woken(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self.wake_r.recv(4096):
                pass
        while True:
            try:
                conn, data, close = self._done.get_nowait()
            except queue.Empty:
                return
            conn.waiting = False
            if conn.sock in self.connections:
                self._send(conn, data, close)
                self._handle(conn)  # requests pipelined behind the delayed one

    def _begin_drain(self) -> None:
        self.draining = True
        self.selector.unregister(self.listener)
        self.listener.close()  # new connections are refused from now on
        for conn in list(self.connections.values()):
            if not conn.busy:
                self._close(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. out of file descriptors: keep serving the others
                _log(f"accept failed: {e}")
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, str(peer[0]))
            self.connections[sock] = conn
            self._watch(conn)

    def _watch(self, conn: Connection) -> None:
        """Register `conn` for what it waits for: reading (until the client's EOF), and writing
        while an answer is not fully sent."""
        events = (0 if conn.closing else selectors.EVENT_READ) | (selectors.EVENT_WRITE if conn.outbuf else 0)
        if events == conn.watched:
            return
        if not events:
            self.selector.unregister(conn.sock)
        elif conn.watched:
            self.selector.modify(conn.sock, events, conn)
        else:
            self.selector.register(conn.sock, events, conn)
        conn.watched = events

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.last_active = time.monotonic()
        if not data:  # the client closed its side: answer what it sent, then close
            conn.closing = True
            self._watch(conn)
            self._handle(conn)
            return
        conn.inbuf += data
        self._handle(conn)

    def _handle(self, conn: Connection) -> None:
        """Answer the complete requests in `conn`'s buffer, in order, until one must wait."""
        while not conn.waiting and conn.sock in self.connections:
            try:
                parsed = parse_request(conn.inbuf)
            except BadRequest as bad:
                conn.inbuf.clear()
                self._send(conn, self._response(bad.status, {"error": bad.reason}, close=True), True)
                return
            if parsed is None:
                if conn.closing:  # no more input: a partial request will never be complete
                    conn.inbuf.clear()
                    if not conn.busy:
                        self._close(conn)
                return
            request, size = parsed
            del conn.inbuf[:size]
            if self.config.latency_s and request.path != "/healthz" and request.method in METHODS:
                conn.waiting = True
                self.delays.submit(self._delayed, conn, request)
                return
            self._send(conn, *self._answer(conn, request))

    def _delayed(self, conn: Connection, request: Request) -> None:
        """In a pool thread: wait out the added latency, then hand the answer back to the loop."""
        time.sleep(self.config.latency_s)
        self._done.put((conn, *self._answer(conn, request)))
        self._wake()

    def _send(self, conn: Connection, data: bytes, close: bool) -> None:
        if close:
            conn.closing = True
            conn.inbuf.clear()  # what follows an answer with `Connection: close` is not answered
        conn.outbuf += data
        self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        del conn.outbuf[:sent]
        conn.last_active = time.monotonic()
        if not conn.busy and (conn.closing or self.draining):
            self._close(conn)
        else:
            self._watch(conn)

    def _close(self, conn: Connection) -> None:
        if self.connections.pop(conn.sock, None) is None:
            return
        if conn.watched:
            self.selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.sock.close()

    def _close_idle(self) -> None:
        stale = time.monotonic() - IDLE_TIMEOUT_S
        for conn in [c for c in self.connections.values() if c.last_active < stale and not c.waiting]:
            self._close(conn)

    # --- answers

    def fail_this_one(self) -> bool:
        if self.config.error_rate <= 0:
            return False
        with self.rng_lock:
            return self.rng.random() < self.config.error_rate

    def _work(self) -> None:
        """Burn WORK_US of CPU (on the loop: a busy handler holds up the others, as in Node)."""
        if self.config.work_s:
            until = time.perf_counter() + self.config.work_s
            while time.perf_counter() < until:
                pass

    def _answer(self, conn: Connection, request: Request) -> tuple[bytes, bool]:
        """The response to `request` and whether the connection closes after it."""
        if request.method not in METHODS:
            status, payload = 501, {"error": f"unsupported method {request.method!r}"}
        elif request.path == "/healthz":
            if self.config.fail_health or self.draining:
                reason = "draining" if self.draining else "FAIL_HEALTH is set"
                status, payload = 503, {"status": "unhealthy", "reason": reason}
            else:
                status, payload = 200, {"status": "ok"}
        else:
            self._work()
            if self.fail_this_one():
                status, payload = 500, {"error": "injected failure (ERROR_RATE)"}
            else:
                status, payload = 200, {"path": request.path, "message": "hello from the demo app"}
        close = not request.keep_alive or self.draining
        data = self._response(status, payload, close=close, head=request.method == "HEAD")
        if self.config.access_log:
            stamp = time.strftime("%d/%b/%Y %H:%M:%S")
            sys.stderr.write(f'{conn.peer} - - [{stamp}] "{request.line}" {status} -\n')
            sys.stderr.flush()
        return data, close

    def _response(self, status: int, payload: dict[str, Any], *, close: bool, head: bool = False) -> bytes:
        version = self.config.version
        body = (json.dumps({"version": version, "status": status, **payload}) + "\n").encode()
        lines = [
            f"HTTP/1.1 {status} {_reason(status)}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"X-Version: {version}",
            "Cache-Control: no-store",
        ]
        if close:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return data if head else data + body


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


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
    thread = threading.Thread(target=server.serve, name="loop", daemon=True)
    thread.start()
    _log(
        f"version {config.version} listening on {host}:{port_raw}"
        f" (error rate {config.error_rate:g}, added latency {config.latency_s * 1000:g} ms"
        f"{', failing health' if config.fail_health else ''})"
    )
    signum = signal.sigwait(stop_signals)
    started = time.monotonic()
    _log(f"{signal.Signals(signum).name}: draining")
    server.drain()
    server.stopped.wait()
    left = server.left
    _log(f"drained in {time.monotonic() - started:.2f}s" + (f" ({left} connections cut)" if left else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
