"""A server with SDKs following its event stream still stops at once on SIGTERM."""

from __future__ import annotations

import pytest

from shipyard.flags.client import FlagsClient
from support.flag_server import FlagServer

pytestmark = pytest.mark.integration

CUT = "timeout graceful shutdown exceeded"
"""What uvicorn logs when it cancels responses still open after its graceful timeout."""


def test_sigterm_ends_open_streams_instead_of_waiting_for_them(flag_server: FlagServer) -> None:
    clients = [FlagsClient(flag_server.url, flag_server.client_token, "production") for _ in range(3)]
    try:
        for client in clients:
            assert client.wait_until_ready(30)
        assert [client.stats.stream_connects for client in clients] == [1, 1, 1]  # open and idle
        flag_server.stop(grace=60.0)
        assert flag_server.killed == 0, "SIGTERM did not end the server"
        # The server ended the streams itself: uvicorn did not wait out its graceful timeout
        # (3 s) and cut them. How long a stop takes is not asserted here.
        assert CUT not in flag_server.log(), flag_server.log()
    finally:
        for client in clients:
            client.close()
