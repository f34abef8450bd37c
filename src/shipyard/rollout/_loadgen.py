"""An open-loop HTTP load generator, to prove a release drops no request.

    with LoadGenerator("http://127.0.0.1:8080/", rate_per_s=200) as load:
        ...                                   # release, kill, switch…
    report = load.report                      # or: report = load.stop()
    report.failed, report.by_version["v2"].count, report.window(t0, t1).failed

Open loop: request i is due at start + i / rate whether or not earlier ones finished, so a stall
shows as latency (each request's latency counts from the moment it was due, queueing included),
not as a lower rate. Requests go over `connections` keep-alive HTTP/1.1 connections, from an
asyncio loop in a background thread, with a minimal client on raw asyncio streams (a few times
cheaper per request than a general-purpose client, which matters on a small machine that also
runs the server under test).

A request that waits for a free connection past `timeout_s` fails as a timeout without being
sent, which bounds the backlog. A request that meets a keep-alive connection closed by the server
before any byte of the answer is retried once on a new connection (as HTTP clients do, RFC 9112
§9.3.1); any other failure is recorded. Times are `time.monotonic()` values, comparable to the
caller's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "shipyard-loadgen"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request, sent or not."""

    scheduled: float
    """When it was due (monotonic)."""
    start: float | None
    """When it was written to a connection; None if it never was (timed out waiting for one)."""
    end: float
    """When its answer was read in full, or it failed."""
    status: int | None
    """The HTTP status; None when no answer came (connection error, timeout)."""
    error: str | None
    version: str | None
    """The answer's X-Version header; None when there was no answer or no such header."""

    @property
    def latency_s(self) -> float:
        """From due to done: what a user waited, queueing included."""
        return self.end - self.scheduled

    @property
    def failed(self) -> bool:
        """A 5xx answer, or no answer at all."""
        return self.status is None or self.status >= 500


@dataclass(frozen=True)
class VersionStats:
    count: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failed / self.count if self.count else 0.0


@dataclass(frozen=True)
class Failure:
    time: float
    """When the request was due (monotonic)."""
    version: str | None
    """The version that answered; None when the proxy or the connection failed without one."""
    status: int | None
    error: str | None


def _percentile_ms(sorted_s: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted latencies in seconds, in milliseconds."""
    if not sorted_s:
        return None
    rank = max(1, math.ceil(q * len(sorted_s)))
    return sorted_s[rank - 1] * 1000


def _stats(records: list[RequestRecord]) -> VersionStats:
    latencies = sorted(r.latency_s for r in records)
    return VersionStats(
        count=len(records),
        failed=sum(1 for r in records if r.failed),
        p50_ms=_percentile_ms(latencies, 0.50),
        p99_ms=_percentile_ms(latencies, 0.99),
    )


@dataclass(frozen=True)
class LoadReport:
    """What a run (or a window of it) did. Build one with `LoadReport.of`."""

    started: float
    stopped: float
    rate_target: float
    total: int
    ok: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    lag_p99_ms: float | None
    """99th percentile of the wait between due and sent: high when the generator or its
    connections could not keep up (then latencies include that wait)."""
    rate_achieved: float
    """Requests sent per second between `started` and `stopped`."""
    by_version: dict[str | None, VersionStats]
    failures: list[Failure]
    records: list[RequestRecord] = field(repr=False)

    @classmethod
    def of(
        cls, records: Iterable[RequestRecord], started: float, stopped: float, rate_target: float
    ) -> LoadReport:
        recs = sorted(records, key=lambda r: r.scheduled)
        groups: dict[str | None, list[RequestRecord]] = {}
        for r in recs:
            groups.setdefault(r.version, []).append(r)
        overall = _stats(recs)
        lags = sorted(r.start - r.scheduled for r in recs if r.start is not None)
        duration = max(stopped - started, 1e-9)
        sent = sum(1 for r in recs if r.start is not None and started <= r.start <= stopped)
        return cls(
            started=started,
            stopped=stopped,
            rate_target=rate_target,
            total=overall.count,
            ok=overall.count - overall.failed,
            failed=overall.failed,
            p50_ms=overall.p50_ms,
            p99_ms=overall.p99_ms,
            lag_p99_ms=_percentile_ms(lags, 0.99),
            rate_achieved=sent / duration,
            by_version={v: _stats(rs) for v, rs in sorted(groups.items(), key=lambda kv: str(kv[0]))},
            failures=[Failure(r.scheduled, r.version, r.status, r.error) for r in recs if r.failed],
            records=recs,
        )

    @property
    def duration_s(self) -> float:
        return self.stopped - self.started

    @property
    def error_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    @property
    def first_failure_time(self) -> float | None:
        """When the first failed request was due (monotonic); None if none failed."""
        return self.failures[0].time if self.failures else None

    def window(self, t0: float, t1: float) -> LoadReport:
        """The requests due in [t0, t1)."""
        return LoadReport.of(
            (r for r in self.records if t0 <= r.scheduled < t1),
            max(t0, self.started),
            min(t1, self.stopped),
            self.rate_target,
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-able digest (no records), for benchmarks and the demo."""

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v, 2)

        return {
            "duration_s": round(self.duration_s, 3),
            "rate_target": self.rate_target,
            "rate_achieved": round(self.rate_achieved, 1),
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "p50_ms": ms(self.p50_ms),
            "p99_ms": ms(self.p99_ms),
            "lag_p99_ms": ms(self.lag_p99_ms),
            "by_version": {
                str(v): {"count": s.count, "failed": s.failed, "p50_ms": ms(s.p50_ms), "p99_ms": ms(s.p99_ms)}
                for v, s in self.by_version.items()
            },
            "failures_sample": [
                {"version": f.version, "status": f.status, "error": f.error} for f in self.failures[:10]
            ],
        }


class _Closed(Exception):
    """The server closed the connection; `clean` when not a byte of the answer had arrived."""

    def __init__(self, clean: bool) -> None:
        super().__init__("connection closed by the server" + ("" if clean else " mid-answer"))
        self.clean = clean


class _Engine:
    def __init__(
        self,
        url: str,
        rate_per_s: float,
        connections: int,
        headers: Mapping[str, str],
        timeout_s: float,
        method: str,
        version_header: str,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"LoadGenerator needs an http(s) URL, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        given = {k.lower() for k in headers}
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"Host: {parts.netloc}"] if "host" not in given else []
        lines += [f"User-Agent: {USER_AGENT}"] if "user-agent" not in given else []
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.head_only = method.upper() == "HEAD"
        self.rate = rate_per_s
        self.connections = connections
        self.timeout_s = timeout_s
        self.version_header = version_header.lower().encode("latin-1")
        self.records: list[RequestRecord] = []
        self.started = 0.0
        self.stopped = 0.0
        self.stopping = False
        self._wake: asyncio.Event | None = None

    def request_stop(self) -> None:
        """Stop scheduling (call in the loop's thread)."""
        self.stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self, ready: threading.Event) -> None:
        self._wake = asyncio.Event()
        queue: asyncio.Queue[float | None] = asyncio.Queue()
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.connections)]
        interval = 1.0 / self.rate
        self.started = time.monotonic()
        ready.set()
        i = 0
        try:
            while not self.stopping:
                now = time.monotonic()
                due = self.started + i * interval
                while due <= now:
                    queue.put_nowait(due)
                    i += 1
                    due = self.started + i * interval
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - time.monotonic())):
                        await self._wake.wait()
        finally:
            self.stopped = time.monotonic()
            for _ in workers:
                queue.put_nowait(None)
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, queue: asyncio.Queue[float | None]) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                scheduled = await queue.get()
                if scheduled is None:
                    return
                record, conn = await self._one(scheduled, conn)
                self.records.append(record)
        finally:
            if conn is not None:
                conn[1].close()

    async def _one(
        self, scheduled: float, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None
    ) -> tuple[RequestRecord, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        deadline = scheduled + self.timeout_s
        start = time.monotonic()
        if start >= deadline:
            error = f"timeout: waited {self.timeout_s:g}s for a free connection"
            return RequestRecord(scheduled, None, start, None, error, None), conn
        retried = False
        while True:
            reused = conn is not None
            try:
                async with asyncio.timeout_at(deadline):
                    if conn is None:
                        conn = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
                    reader, writer = conn
                    writer.write(self.request)
                    status, version, close = await self._read_response(reader)
            except (_Closed, ConnectionError) as e:
                if conn is not None:
                    conn[1].close()
                    conn = None
                clean = e.clean if isinstance(e, _Closed) else True
                if reused and clean and not retried:
                    retried = True
                    continue
                return RequestRecord(scheduled, start, time.monotonic(), None, _describe(e), None), None
            except TimeoutError:
                if conn is not None:
                    conn[1].close()
                error = f"timeout: no answer within {self.timeout_s:g}s"
                return RequestRecord(scheduled, start, time.monotonic(), None, error, None), None
            except (OSError, ValueError, IndexError, asyncio.LimitOverrunError) as e:
                if conn is not None:
                    conn[1].close()
                return RequestRecord(scheduled, start, time.monotonic(), None, _describe(e), None), None
            if close:
                conn[1].close()
                conn = None
            return RequestRecord(scheduled, start, time.monotonic(), status, None, version), conn

    async def _read_response(self, reader: asyncio.StreamReader) -> tuple[int, str | None, bool]:
        """(status, version header, whether the server closes the connection)."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            raise _Closed(clean=not e.partial) from None
        lines = head.split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        http_version, status = status_line[0], int(status_line[1])
        length: int | None = None
        chunked = False
        version: str | None = None
        connection = b""
        for line in lines[1:]:
            if not line:
                continue
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                connection = value.strip().lower()
            elif key == self.version_header:
                version = value.strip().decode("latin-1")
        close = connection == b"close" or (http_version == b"HTTP/1.0" and connection != b"keep-alive")
        try:
            if self.head_only or status in (204, 304) or 100 <= status < 200:
                pass
            elif chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass  # trailers
                        break
                    await reader.readexactly(size + 2)
            elif length is not None:
                await reader.readexactly(length)
            else:
                await reader.read()  # the body runs to the end of the connection
                close = True
        except asyncio.IncompleteReadError:
            raise _Closed(clean=False) from None
        return status, version, close


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class LoadGenerator:
    """Sends `rate_per_s` requests per second to `url` until stopped; see the module's docstring."""

    def __init__(
        self,
        url: str,
        rate_per_s: float,
        *,
        connections: int = 8,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 5,
        method: str = "GET",
        version_header: str = "X-Version",
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, not {rate_per_s}")
        if connections < 1:
            raise ValueError(f"connections must be at least 1, not {connections}")
        self.url = url
        self.rate_per_s = rate_per_s
        self._engine = _Engine(
            url, rate_per_s, connections, dict(headers or {}), timeout_s, method, version_header
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self.report: LoadReport | None = None
        """The final report, once stopped."""

    def start(self) -> LoadGenerator:
        if self._thread is not None:
            raise RuntimeError("this LoadGenerator was already started")
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._engine.run(ready))
            except BaseException as e:  # surfaced by stop()
                self._error = e
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="shipyard-loadgen", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def snapshot(self) -> LoadReport:
        """A report of the requests completed so far (while it runs)."""
        now = time.monotonic()
        return LoadReport.of(list(self._engine.records), self._engine.started, now, self.rate_per_s)

    def stop(self) -> LoadReport:
        """Stop scheduling, wait for requests in flight (at most `timeout_s`), return the report."""
        if self.report is not None:
            return self.report
        if self._thread is None:
            raise RuntimeError("this LoadGenerator was not started")
        if self._loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._engine.request_stop)
        self._thread.join(self._engine.timeout_s + 30)
        if self._error is not None:
            raise RuntimeError(f"the load generator failed: {self._error!r}") from self._error
        if self._thread.is_alive():  # pragma: no cover - a request outlived its own timeout
            raise RuntimeError("the load generator did not stop")
        engine = self._engine
        self.report = LoadReport.of(engine.records, engine.started, engine.stopped, self.rate_per_s)
        return self.report

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
