"""A channel's host name is resolved when a notification is sent, and each address it resolves to
is checked: a name that resolves to a link-local or cloud metadata address is refused (nothing is
sent, no retry), and the request goes to the address that was checked, never to the name again,
so an answer that changes in between (DNS rebinding) cannot lead it elsewhere.

The receiver is a real HTTP server on 127.0.0.1. Names that resolve to a refused address come from
a resolver given to `deliver` (this machine's hosts file is not ours to edit); `localhost` goes
through the system's resolver.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from shipyard.monitor import DeliveryFailed, Event, deliver
from shipyard.monitor._channel_urls import IPAddress, Resolver, checked_addresses
from shipyard.spec import Channel
from support.webhook import recording_server

EVENT = Event("backup.failed", "shop (production): files failed", "page", {"set": "s1"})
LOOPBACK = ipaddress.ip_address("127.0.0.1")
NAME = "hooks.example.test"


def _answers(*answers: list[str]) -> tuple[Resolver, list[str]]:
    """A resolver giving each answer in turn (the last one again after that), and the names asked."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[IPAddress]:
        answer = answers[min(len(asked), len(answers) - 1)]
        asked.append(host)
        return [ipaddress.ip_address(a) for a in answer]

    return resolve, asked


def _hook(url: str) -> tuple[Channel, dict[str, str]]:
    return Channel(kind="webhook", url="${env:SHOP_HOOK}"), {"SHOP_HOOK": url}


@pytest.mark.parametrize(
    "refused",
    [
        "169.254.169.254",  # AWS, GCP, Azure metadata
        "169.254.0.1",
        "fe80::1",
        "::ffff:169.254.169.254",  # the same, as IPv6
        "fd00:ec2::254",  # AWS metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud metadata
    ],
)
def test_a_name_resolving_to_a_refused_address_is_refused_and_nothing_is_sent(refused: str) -> None:
    with recording_server() as receiver:
        # A good address beside the bad one does not make the name good: it names both.
        resolver, asked = _answers([str(LOOPBACK), refused])
        channel, environ = _hook(f"http://{NAME}:{receiver.port}/hook")

        with pytest.raises(DeliveryFailed) as caught:
            deliver(channel, EVENT, environ=environ, resolver=resolver)

        assert caught.value.retryable is False
        message = caught.value.message
        assert f"names {NAME}, which resolves to {ipaddress.ip_address(refused)}" in message, message
        assert "link-local or cloud metadata address" in message
        assert "nothing was sent" in message
        assert asked == [NAME]
        assert receiver.requests == []
        assert receiver.refused == []


def test_the_request_goes_to_the_address_checked_not_to_a_new_answer() -> None:
    """DNS rebinding: the first answer is a good address, every later one the metadata service."""
    with recording_server() as receiver:
        resolver, asked = _answers([str(LOOPBACK)], ["169.254.169.254"])
        channel, environ = _hook(f"http://{NAME}:{receiver.port}/hook")

        deliver(channel, EVENT, environ=environ, resolver=resolver)

        assert asked == [NAME]  # resolved once: the connection went to that answer
        assert [request.json()["event"] for request in receiver.requests] == ["backup.failed"]
        assert receiver.requests[0].headers["Host"] == f"{NAME}:{receiver.port}"  # still the name's request
        # The next send asks again (the receiver closed the connection), and is refused this time.
        with pytest.raises(DeliveryFailed, match=r"resolves to 169\.254\.169\.254"):
            deliver(channel, EVENT, environ=environ, resolver=resolver)
        assert len(receiver.requests) == 1


def test_localhost_goes_through_the_system_resolver_to_a_checked_address() -> None:
    with recording_server() as receiver:
        channel, environ = _hook(f"http://localhost:{receiver.port}/hook")

        deliver(channel, EVENT, environ=environ)  # ::1 first on some hosts: the next address then

        assert [request.json()["event"] for request in receiver.requests] == ["backup.failed"]


def test_a_name_that_does_not_resolve_is_a_failure_a_retry_may_mend() -> None:
    channel, environ = _hook("http://no-such-host.invalid/hook")  # .invalid never resolves (RFC 6761)

    with pytest.raises(DeliveryFailed) as caught:
        deliver(channel, EVENT, environ=environ)

    assert caught.value.retryable is True
    assert "no-such-host.invalid" in caught.value.message


def test_checked_addresses_keeps_the_resolvers_order_and_refuses_any_refused_one() -> None:
    def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in ("::1", "127.0.0.1", "10.0.0.7")]

    assert [str(a) for a in checked_addresses(NAME, 443, resolver)] == ["::1", "127.0.0.1", "10.0.0.7"]

    def failing(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(Exception, match=f"cannot resolve {NAME}: Name or service not known"):
        checked_addresses(NAME, 443, failing)
