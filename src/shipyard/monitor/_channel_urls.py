"""The notification channels' URLs as they resolve where this process runs, checked before use.

A channel's `url` is a reference (`${env:NAME}` or a `secretRef`), so the spec's loader cannot see
where it points; `shipyard validate` resolves the references set in its environment and reports a
URL that `spec.url_problem` refuses (another scheme than http(s), a link-local or cloud metadata
address) as a spec problem naming the field, and delivery refuses it again (`_channels.deliver`).

A DNS name is resolved at delivery, by the HTTP client's connection itself (`checked_transport`):
every address the name resolves to is checked with `spec.address_problem`, a name with a refused
one is refused (`RefusedAddress`, naming the name and the address), and the connection goes to
an address that was checked, never to the name again. So a name whose answer changes between a
check and the connection (DNS rebinding) cannot lead the request to a refused address. Through
an HTTP proxy (`HTTPS_PROXY`), the proxy resolves the name: only the URL's own host is checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping

import httpcore
import httpx

from ..spec import Channel, address_problem, url_problem
from ._secrets import reference_variable, resolve

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]
"""(host, port) -> the addresses to connect to, in order; OSError when the name does not resolve.
The system's by default; a test or an embedding program may give its own (`_channels.deliver`)."""

URL_FIELDS = {"webhook": ("url",), "slack": ("url",), "telegram": ("api_url",), "email": ()}
"""The fields of each channel kind that hold a URL notifications are posted to."""


def channel_url_problems(
    channels: Mapping[str, Channel], environ: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(`notifications.<name>.<field>`, why) for each channel URL that resolves here to a refused
    address; a reference not set here is not checked (the process that delivers may have it)."""
    problems = []
    for name, channel in channels.items():
        for field in URL_FIELDS[channel.kind]:
            reference = getattr(channel, field)
            value = resolve(reference, environ) if reference is not None else None
            problem = url_problem(value) if value else None
            if problem is not None:
                variable = reference_variable(reference)
                source = f" (read from ${variable})" if variable else ""
                problems.append((f"notifications.{name}.{field}", f"the URL{source} {problem}"))
    return problems


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses `getaddrinfo` gives for `host` (the hosts file, DNS ...), each once, in order."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])  # fe80::1%eth0: the zone aside
        if address not in found:
            found.append(address)
    return found


class RefusedAddress(Exception):
    """A channel's host resolves to an address notifications may not go to; nothing was sent."""

    def __init__(self, host: str, address: IPAddress, problem: str) -> None:
        super().__init__(f"{host} resolves to {address}, {problem}")
        self.host = host
        self.address = address
        self.problem = problem


def checked_addresses(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """The addresses `host` resolves to, all allowed; RefusedAddress for the first that is not
    (one refused answer refuses the name: a rebinding name may mix a good address with a bad one);
    httpcore.ConnectError (a retryable delivery failure) when it does not resolve."""
    try:
        addresses = resolver(host, port)
    except OSError as exc:  # socket.gaierror: no such name, or no DNS answer now
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    if not addresses:
        raise httpcore.ConnectError(f"{host} resolves to no address")
    for address in addresses:
        problem = address_problem(address)
        if problem is not None:
            raise RefusedAddress(host, address, problem)
    return addresses


class _CheckedBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, opened to the addresses `checked_addresses` allowed (TLS still
    verifies the certificate for the URL's host: httpcore passes that name to `start_tls`)."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        failed: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in checked_addresses(host, port, self._resolver):
            try:
                return self._sockets.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (
                httpcore.ConnectError,
                httpcore.ConnectTimeout,
            ) as exc:  # the next address, as a browser does
                failed = exc
        assert failed is not None  # checked_addresses gives at least one
        raise failed

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:  # pragma: no cover - channels post over TCP
        return self._sockets.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        self._sockets.sleep(seconds)


def checked_transport(resolver: Resolver = system_resolver) -> httpx.HTTPTransport:
    """httpx's transport, with its connections opened by `_CheckedBackend` (httpx takes no network
    backend of its own: the pool it built is replaced by one with the same defaults that has it)."""
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=100,  # httpx's DEFAULT_LIMITS
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=_CheckedBackend(resolver),
    )
    return transport
