"""The SDK and the OpenFeature provider when the flag server cannot be reached: a port that
refuses connections, or one that takes them and never answers. (Against a live server, see
test_client_server.py; with no network at all, tests/unit/flags/.)"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.provider import ProviderStatus

from shipyard.flags.client import ConnectionState, FlagsClient
from shipyard.flags.openfeature import ShipyardProvider
from unit.flags.test_client import ENV, FLAGS, TOKEN
from unit.flags.test_client_openfeature import BOOTSTRAP

DEADLINE_S = 60.0


def dead_url() -> str:
    """A loopback URL nothing listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A loopback URL whose port takes connections (into its backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    # closing the listener resets what waits in its backlog: a worker still waiting there ends


def test_construction_does_not_wait_for_the_server(black_hole: str) -> None:
    flags = FlagsClient(black_hole, TOKEN, ENV, bootstrap=FLAGS, request_timeout=600)
    try:
        # Returned while its first request is still unanswered: nothing came back, nothing failed.
        stats = flags.stats
        assert (stats.polls, stats.stream_connects, stats.errors) == (0, 0, 0)
        assert flags.connection == ConnectionState.CONNECTING
        assert not flags.ready.is_set()
        assert flags.is_enabled("new-checkout", {"role": "ADMIN"}) is True  # the bootstrap, at once
    finally:
        flags.close(timeout=0)


def test_an_unreachable_server_keeps_the_bootstrap_and_close_stops_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    states: list[ConnectionState] = []
    flags = FlagsClient(dead_url(), TOKEN, ENV, bootstrap=FLAGS, min_retry_delay=0.05, max_retry_delay=0.1)
    worker = flags._thread
    try:
        flags.add_state_listener(lambda state, _message: states.append(state))
        assert flags.is_enabled("new-checkout", {"role": "ADMIN"}) is True
        assert flags.wait_until_ready(0.3) is False  # ready means: downloaded from the server
        deadline = time.monotonic() + DEADLINE_S
        while flags.connection != ConnectionState.DISCONNECTED and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flags.connection == ConnectionState.DISCONNECTED
        assert flags.stats.errors >= 1
        assert flags.is_enabled("new-checkout", {"role": "ADMIN"}) is True
        assert flags.version == 7
    finally:
        flags.close()
    # close() stopped the worker (it did not give up waiting for it).
    assert worker is not None
    assert not worker.is_alive()
    assert ConnectionState.DISCONNECTED in states
    assert flags.connection.value == "CLOSED"
    # The token shows nowhere: not in the repr, the stats, the logs.
    assert TOKEN not in repr(flags)
    assert TOKEN not in str(flags.stats)
    assert TOKEN not in caplog.text
    assert "Connect" in (flags.stats.last_error or "")


def test_a_provider_without_a_flag_set_and_without_a_server_reports_an_error() -> None:
    provider = ShipyardProvider(
        url=dead_url(),
        token=TOKEN,
        environment=ENV,
        init_timeout=0.2,
        min_retry_delay=0.05,
        max_retry_delay=0.1,
    )
    errors: list[EventDetails] = []
    got_error = threading.Event()

    def on_error(details: EventDetails) -> None:
        errors.append(details)
        got_error.set()

    try:
        api.set_provider(provider, "shipyard-down")
        client = api.get_client("shipyard-down")
        client.add_handler(ProviderEvent.PROVIDER_ERROR, on_error)
        assert got_error.wait(DEADLINE_S)
        assert client.get_provider_status() == ProviderStatus.ERROR
        details = client.get_boolean_details("new-checkout", True)
        assert details.value is True
        assert details.error_code == ErrorCode.PROVIDER_NOT_READY
        assert all(TOKEN not in (e.message or "") for e in errors)
    finally:
        api.clear_providers()
    assert provider.client.connection.value == "CLOSED"  # it made the client: it closed it


def test_an_unreachable_server_makes_a_bootstrapped_provider_stale() -> None:
    flags = FlagsClient(
        dead_url(), TOKEN, ENV, bootstrap=BOOTSTRAP, min_retry_delay=0.05, max_retry_delay=0.1
    )
    worker = flags._thread
    stale = threading.Event()
    try:
        api.set_provider_and_wait(ShipyardProvider(flags), "shipyard-stale")
        client = api.get_client("shipyard-stale")
        client.add_handler(ProviderEvent.PROVIDER_STALE, lambda _details: stale.set())
        assert stale.wait(DEADLINE_S)
        assert client.get_provider_status() == ProviderStatus.STALE
        # the last good set is still served
        assert client.get_boolean_value(
            "new-checkout", False, EvaluationContext(attributes={"role": "ADMIN"})
        )
    finally:
        api.clear_providers()
        flags.close()
    assert worker is not None
    assert not worker.is_alive()  # closed: its worker stopped
