"""The demo app's behaviours, each set from its environment, and its graceful drain."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from support.demo_app import requests_waiting, running_demo_app, wait_http

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE_S:g} s"
        time.sleep(0.02)


def _connects(port: int) -> bool:
    """Whether the port still takes connections: False once one is refused (a connection reset
    as the listener closes is the moment in between: ask again)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S).close()
    except ConnectionRefusedError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_error_rate_version_header_and_repeatability() -> None:
    statuses: list[list[int]] = []
    for _ in range(2):
        with (
            running_demo_app("v2", error_rate=0.2) as app,
            httpx.Client(base_url=app.url, timeout=5) as client,
        ):
            answers = [client.get(f"/orders/{n}") for n in range(1000)]
        assert all(a.headers["x-version"] == "v2" for a in answers)
        assert {a.status_code for a in answers} == {200, 500}
        failed = [a for a in answers if a.status_code == 500]
        assert 0.15 <= len(failed) / len(answers) <= 0.25
        assert failed[0].json()["version"] == "v2"
        statuses.append([a.status_code for a in answers])
    assert statuses[0] == statuses[1]  # seeded: the same requests fail every run


def test_failing_health_fails_only_the_health_check() -> None:
    with running_demo_app("v3", fail_health=True, wait=False) as app:
        health = wait_http(f"{app.url}healthz")
        assert health.status_code == 503
        assert health.headers["x-version"] == "v3"
        assert health.json()["reason"] == "FAIL_HEALTH is set"
        assert httpx.get(app.url, timeout=5).status_code == 200


def test_added_latency_slows_the_work_but_not_the_health_check() -> None:
    with (
        running_demo_app("v1", added_latency_ms=3000) as app,
        httpx.Client(timeout=DEADLINE_S) as client,
        socket.create_connection(("127.0.0.1", app.port), timeout=DEADLINE_S) as work,
    ):
        began = time.monotonic()
        work.sendall(b"GET /orders/1 HTTP/1.1\r\nHost: demo\r\n\r\n")
        _wait_until(lambda: requests_waiting(app.process.pid) == 1, "the work request to wait")
        # The health check is answered while the work request still waits out its latency.
        assert client.get(f"{app.url}healthz").status_code == 200
        assert select.select([work], [], [], 0)[0] == [], "the work was answered first"
        answer = work.recv(65536)
        work_took = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert work_took >= 2.95  # a lower bound: a busy host only makes the wait longer


def test_startup_delay_keeps_the_port_closed_for_a_while() -> None:
    began = time.monotonic()
    with running_demo_app("v1", startup_delay_s=3, wait=False) as app:
        with pytest.raises(httpx.ConnectError):
            httpx.get(app.url, timeout=2)
        wait_http(f"{app.url}healthz")
        assert time.monotonic() - began >= 2.95  # a lower bound: a busy host only makes it later


def test_sigterm_drains_in_flight_requests_and_closes_idle_connections() -> None:
    with running_demo_app("v1", added_latency_ms=1000) as app:
        idle = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: demo\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")  # now an idle keep-alive connection
        busy = socket.create_connection(("127.0.0.1", app.port), timeout=DEADLINE_S)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: demo\r\n\r\n")
        _wait_until(lambda: requests_waiting(app.process.pid) == 1, "the slow request to be in flight")
        app.process.send_signal(15)
        _wait_until(lambda: not _connects(app.port), "the app to stop accepting")
        idle.settimeout(DEADLINE_S)
        assert idle.recv(65536) == b""  # closed by the server, not left to time out
        answer = b""
        while chunk := busy.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"Connection: close" in answer
        assert app.process.wait(DEADLINE_S) == 0
        idle.close()
        busy.close()


def test_keep_alive_serves_pipelined_head_and_get_on_one_connection() -> None:
    with running_demo_app("v5") as app, socket.create_connection(("127.0.0.1", app.port), timeout=10) as conn:
        conn.sendall(b"HEAD / HTTP/1.1\r\nHost: demo\r\n\r\nGET /healthz HTTP/1.1\r\nHost: demo\r\n\r\n")
        answer = b""
        while answer.count(b"HTTP/1.1 200 OK") < 2 or not answer.endswith(b"}\n"):
            chunk = conn.recv(65536)
            assert chunk, answer
            answer += chunk
    head, get = answer.split(b"HTTP/1.1 200 OK")[1:]
    assert head.endswith(b"\r\n\r\n")  # no body after a HEAD
    assert b"X-Version: v5" in head
    assert get.endswith(b'{"version": "v5", "status": "ok"}\n')
