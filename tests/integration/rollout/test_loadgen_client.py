"""The load generator's HTTP client against canned answers from a server on loopback (its report
arithmetic is unit-tested in tests/unit/rollout/test_loadgen.py)."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from shipyard.host import free_port
from shipyard.rollout._loadgen import LoadGenerator

DEADLINE_S = 30.0


def _until_sent(load: LoadGenerator, count: int) -> None:
    """Wait until `count` requests are done (answered or failed), however slow the host is."""
    deadline = time.monotonic() + DEADLINE_S
    while load.snapshot().total < count:
        assert time.monotonic() < deadline, f"fewer than {count} requests in {DEADLINE_S:g} s"
        time.sleep(0.02)


CANNED = {
    b"/length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Version: v1\r\n\r\nhello",
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-version: v2\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\n",
    b"/close": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
    b"/eof": b"HTTP/1.0 200 OK\r\nX-Version: v3\r\n\r\nuntil the end",
    b"/once": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Version: v4\r\n\r\nok",
}


class CannedHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                byte = self.rfile.read(1)
                if not byte:
                    return
                head += byte
            path = head.split(b" ")[1]
            if path == b"/mute":
                return  # close without a word
            self.wfile.write(CANNED[path])
            self.wfile.flush()
            if path in (b"/close", b"/eof", b"/once"):  # /once: closes without saying so
                return


@pytest.fixture(scope="module")
def canned() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), CannedHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "status", "version"),
    [
        ("/length", 200, "v1"),
        ("/chunked", 200, "v2"),
        ("/close", 503, None),
        ("/eof", 200, "v3"),
        ("/once", 200, "v4"),
    ],
)
def test_the_client_reads_each_kind_of_answer(
    canned: str, path: str, status: int, version: str | None
) -> None:
    with LoadGenerator(canned + path, 100, connections=2, timeout_s=10) as load:
        _until_sent(load, 20)
    report = load.report
    assert report is not None
    assert report.total >= 20
    assert {r.status for r in report.records} == {status}
    assert {r.version for r in report.records} == {version}
    assert report.failed == (report.total if status >= 500 else 0)


def test_a_connection_closed_without_an_answer_is_a_failure_not_a_retry_loop(canned: str) -> None:
    load = LoadGenerator(canned + "/mute", 50, connections=1, timeout_s=10).start()
    _until_sent(load, 10)
    report = load.stop()
    assert report.total >= 10
    assert report.failed == report.total
    assert all(f.version is None and f.error for f in report.failures)


def test_a_refused_connection_is_a_failure_without_a_version() -> None:
    with LoadGenerator(f"http://127.0.0.1:{free_port()}/", 50, connections=2, timeout_s=10) as load:
        _until_sent(load, 10)
    report = load.report
    assert report is not None
    assert report.total >= 10
    assert report.failed == report.total
    assert report.by_version[None].failed == report.total
    assert "ConnectionRefusedError" in (report.failures[0].error or "")
    assert report.first_failure_time == pytest.approx(report.started, abs=0.05)
