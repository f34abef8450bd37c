"""A server with SDKs following its event stream still stops at once on SIGTERM."""

from __future__ import annotations

import time

import pytest

from shipyard.flags.client import FlagsClient
from support.flag_server import FlagServer

pytestmark = pytest.mark.integration


def test_sigterm_ends_open_streams_instead_of_waiting_for_them(flag_server: FlagServer) -> None:
    clients = [FlagsClient(flag_server.url, flag_server.client_token, "production") for _ in range(3)]
    try:
        for client in clients:
            assert client.wait_until_ready(10)
        time.sleep(0.5)  # the streams are open and idle
        started = time.monotonic()
        flag_server.stop(grace=2.0)
        assert flag_server.killed == 0, "SIGTERM did not end the server within 2 s"
        assert time.monotonic() - started < 2.0
    finally:
        for client in clients:
            client.close()
