"""The SDK and the OpenFeature provider following a real `shipyard serve` (no mock of it)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.provider import ProviderStatus

from shipyard.flags.client import ConnectionState, FlagsClient
from shipyard.flags.openfeature import ShipyardProvider
from support.flag_server import FlagServer

pytestmark = pytest.mark.integration

ENV = "production"
CHECKOUT: dict[str, Any] = {
    "key": "checkout",
    "default_value": False,
    "environments": {ENV: {"enabled": False, "value": True}},
}
COLOUR: dict[str, Any] = {
    "key": "colour",
    "type": "string",
    "default_value": "blue",
    "environments": {ENV: {"enabled": True, "value": "green"}},
}
DEADLINE_S = 30.0
"""How long a test waits for something that should happen at once (a loaded host is slow)."""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until it holds; the seconds it took. Fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)
    return time.monotonic() - started


@contextlib.contextmanager
def no_network_from_this_thread() -> Iterator[None]:
    """Fail any connection the calling thread opens (the client's worker has a thread of its own)."""
    caller = threading.get_ident()
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if threading.get_ident() == caller:
            raise AssertionError(f"the caller's thread connected to {address}")
        real_connect(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        yield


@pytest.fixture
def server(flag_server: FlagServer) -> FlagServer:
    flag_server.create_flag(CHECKOUT)
    flag_server.create_flag(COLOUR)
    return flag_server


@pytest.fixture
def follow(server: FlagServer) -> Iterator[Callable[..., FlagsClient]]:
    """Make clients of `server` (fast retries), closed after the test."""
    clients: list[FlagsClient] = []

    def make(**options: Any) -> FlagsClient:
        options = {"min_retry_delay": 0.05, "max_retry_delay": 0.3, **options}
        client = FlagsClient(server.url, server.client_token, ENV, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_a_change_reaches_a_streaming_client_through_the_stream(
    server: FlagServer, follow: Callable[..., FlagsClient]
) -> None:
    # How fast a change arrives is measured by bench/flags_server_bench.py, not asserted here.
    changes: list[tuple[int | None, int]] = []
    client = follow(on_change=lambda old, new: changes.append((old, new)), poll_interval=3600)
    assert client.wait_until_ready(DEADLINE_S)
    assert client.version == server.version()
    assert client.is_enabled("checkout", {}) is False
    assert client.get_value("colour", "red") == "green"

    version = server.set_enabled("checkout", True)
    wait_for(lambda: client.is_enabled("checkout", {}), DEADLINE_S, "the client to see the flag on")
    wait_for(lambda: client.version == version, DEADLINE_S, "the new version")
    assert changes[-1] == (version - 1, version)
    stats = client.stats
    assert stats.stream_connects == 1
    assert stats.stream_events == 2  # the set on connecting, then the change, pushed
    assert stats.polls == 0  # the stream alone did it (a poll would come after an hour)


def test_the_client_survives_a_server_restart(server: FlagServer, follow: Callable[..., FlagsClient]) -> None:
    states: list[ConnectionState] = []
    server.set_enabled("checkout", True)
    client = follow()
    client.add_state_listener(lambda state, _message: states.append(state))
    assert client.wait_until_ready(DEADLINE_S)
    version = client.version
    assert client.is_enabled("checkout", {}) is True

    server.stop()
    wait_for(lambda: client.connection == ConnectionState.DISCONNECTED, DEADLINE_S, "the client to notice")
    # the last good set is served from memory: nothing the caller does waits for the network
    # (how fast an evaluation is, bench/flags_bench.py measures)
    with no_network_from_this_thread():
        for _ in range(10_000):
            assert client.is_enabled("checkout", {}) is True
        assert client.get_value("colour", "red") == "green"
        assert client.version == version

    server.start()  # same port, same database
    wait_for(lambda: client.connection == ConnectionState.CONNECTED, DEADLINE_S, "the client to reconnect")
    new_version = server.set_enabled("checkout", False)
    wait_for(lambda: not client.is_enabled("checkout", {}), DEADLINE_S, "the change after the restart")
    assert client.version == new_version
    assert client.stats.stream_connects >= 2
    assert states[:3] == [ConnectionState.CONNECTED, ConnectionState.DISCONNECTED, ConnectionState.CONNECTED]


def test_polling_uses_etags_and_sees_changes(server: FlagServer, follow: Callable[..., FlagsClient]) -> None:
    not_modified_before = server.requests_served("/feature-flags", 304)
    client = follow(stream=False, poll_interval=0.1)
    assert client.wait_until_ready(DEADLINE_S)
    wait_for(lambda: client.stats.not_modified >= 3, DEADLINE_S, "304 answers to If-None-Match")
    # The server's own count of 304s agrees: it was asked with If-None-Match and had nothing new.
    assert server.requests_served("/feature-flags", 304) - not_modified_before >= 3
    before = client.stats
    answered_304 = server.requests_served("/feature-flags", 304)

    version = server.set_enabled("checkout", True)
    wait_for(lambda: client.is_enabled("checkout", {}), DEADLINE_S, "the polling client to see the flag on")
    assert client.version == version
    seen = client.stats
    assert seen.stream_connects == 0
    assert seen.updates == before.updates + 1
    # Then the new set's ETag is what it sends: 304s again, and the new set was downloaded once.
    wait_for(lambda: client.stats.not_modified >= seen.not_modified + 3, DEADLINE_S, "304s for the new set")
    after = client.stats
    assert (after.polls - after.not_modified) - (before.polls - before.not_modified) == 1  # one 200
    assert server.requests_served("/feature-flags", 304) - answered_304 >= 3
    assert client.version == version


def test_a_bootstrapped_client_moves_to_the_servers_set(
    server: FlagServer, follow: Callable[..., FlagsClient]
) -> None:
    bootstrap = {
        "version": 999,
        "flags": [dict(CHECKOUT, environments={ENV: {"enabled": True, "value": True}})],
    }
    changes: list[tuple[int | None, int]] = []
    client = follow(bootstrap=bootstrap, on_change=lambda old, new: changes.append((old, new)), start=False)
    assert client.is_enabled("checkout", {}) is True  # before any request
    assert client.get_value("colour", "red") == "red"  # not in the bootstrap
    client.start()
    assert client.wait_until_ready(DEADLINE_S)
    assert client.is_enabled("checkout", {}) is False
    assert client.get_value("colour", "red") == "green"
    assert changes == [(999, server.version())]


def test_a_refused_token_is_reported_without_the_token(
    server: FlagServer, follow: Callable[..., FlagsClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="shipyard")
    secret = "shy_client_not-a-real-token-but-secret-anyway"
    client = FlagsClient(server.url, secret, ENV, min_retry_delay=0.05, max_retry_delay=0.2)
    try:
        assert client.wait_until_ready(1) is False
        wait_for(lambda: client.connection == ConnectionState.DISCONNECTED, DEADLINE_S, "the refusal")
        assert "401" in (client.stats.last_error or "")
    finally:
        client.close()
    assert secret not in caplog.text
    assert secret not in repr(client)
    assert secret not in str(client.stats)


def test_a_forked_child_follows_changes_made_after_the_fork(
    server: FlagServer, follow: Callable[..., FlagsClient]
) -> None:
    client = follow()
    assert client.wait_until_ready(DEADLINE_S)
    assert client.is_enabled("checkout", {}) is False
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's cleanup
        code = 1
        try:
            os.close(read_end)
            report: dict[str, Any] = {"before": client.is_enabled("checkout", {})}
            deadline = time.monotonic() + DEADLINE_S
            while not client.is_enabled("checkout", {}) and time.monotonic() < deadline:
                time.sleep(0.005)
            thread = client._thread
            report |= {
                "seen": client.is_enabled("checkout", {}),
                "version": client.version,
                "own_worker": thread is not None and thread.is_alive() and client._pid == os.getpid(),
                "stream_connects": client.stats.stream_connects,
            }
            os.write(write_end, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        version = server.set_enabled("checkout", True)
        ready, _, _ = select.select([read_end], [], [], 2 * DEADLINE_S)
        assert ready, f"the child did not report within {2 * DEADLINE_S:g} s"
        report = json.loads(os.read(read_end, 65536).decode())
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report["before"] is False
    assert report["seen"] is True, report
    assert report["version"] == version
    assert report["own_worker"] is True
    assert report["stream_connects"] == 2  # the parent's, inherited, and its own
    # the parent is unaffected
    wait_for(lambda: client.is_enabled("checkout", {}), DEADLINE_S, "the parent to see the change")
    assert client.stats.stream_connects == 1


@pytest.fixture
def provider(server: FlagServer) -> Iterator[ShipyardProvider]:
    provider = ShipyardProvider(
        url=server.url, token=server.client_token, environment=ENV, min_retry_delay=0.05, max_retry_delay=0.3
    )
    yield provider
    api.clear_providers()
    provider.client.close()


class Events:
    """OpenFeature events seen by a client's handlers, waitable."""

    def __init__(self) -> None:
        self.seen: list[tuple[ProviderEvent, EventDetails]] = []
        self._cond = threading.Condition()

    def handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def handle(details: EventDetails) -> None:
            with self._cond:
                self.seen.append((event, details))
                self._cond.notify_all()

        return handle

    def wait(self, predicate: Callable[[ProviderEvent, EventDetails], bool], timeout: float) -> EventDetails:
        with self._cond:
            deadline = time.monotonic() + timeout
            while True:
                for event, details in self.seen:
                    if predicate(event, details):
                        return details
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such event within {timeout} s; seen {self.seen}")
                self._cond.wait(left)


def test_the_provider_announces_changes(server: FlagServer, provider: ShipyardProvider) -> None:
    api.set_provider_and_wait(provider, "shipyard-it")
    client = api.get_client("shipyard-it")
    assert client.get_provider_status() == ProviderStatus.READY
    events = Events()
    client.add_handler(
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        events.handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED),
    )
    assert client.get_boolean_value("checkout", False) is False

    version = server.set_enabled("checkout", True)
    details = events.wait(
        lambda event, _details: event == ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, DEADLINE_S
    )
    assert details.flags_changed == ["checkout"]
    assert details.metadata["version"] == version
    assert client.get_boolean_value("checkout", False) is True
    resolved = client.get_boolean_details("checkout", False, EvaluationContext("u1"))
    assert resolved.flag_metadata == {"flagSetVersion": version}


def test_the_provider_goes_stale_and_comes_back(server: FlagServer, provider: ShipyardProvider) -> None:
    api.set_provider_and_wait(provider, "shipyard-it")
    client = api.get_client("shipyard-it")
    events = Events()
    for event in (ProviderEvent.PROVIDER_STALE, ProviderEvent.PROVIDER_READY):
        client.add_handler(event, events.handler(event))
    events.wait(lambda event, _details: event == ProviderEvent.PROVIDER_READY, DEADLINE_S)  # at once: ready
    events.seen.clear()

    server.stop()
    events.wait(lambda event, _details: event == ProviderEvent.PROVIDER_STALE, DEADLINE_S)
    assert client.get_provider_status() == ProviderStatus.STALE
    assert client.get_string_value("colour", "red") == "green"  # the last good set

    server.start()
    events.wait(lambda event, _details: event == ProviderEvent.PROVIDER_READY, DEADLINE_S)
    assert client.get_provider_status() == ProviderStatus.READY
