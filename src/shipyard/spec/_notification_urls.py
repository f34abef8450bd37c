"""Where a notification may be sent: http(s) only, and never to a link-local or cloud metadata address.

A webhook URL is configuration that makes the server send requests: pointed at a cloud's
instance metadata service (169.254.169.254, fd00:ec2::254, metadata.google.internal, …) it
would hand out the machine's credentials to whoever reads the channel's replies or errors, and
a `file:` or `gopher:` URL has no business in an HTTP client at all. So each URL is checked when
the spec is loaded (a literal such as a Telegram `api_url`) or validated (`shipyard validate`
resolves the channels' `url` references set where it runs), with an error naming the field, and
again before each delivery, since a reference may change after validation.

Only the URL's own host is checked here (a pure check: no resolution). A DNS name that resolves
to such an address is caught at delivery, where `monitor._channel_urls` resolves it, checks every
address with `address_problem`, and connects only to an address it checked.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("http", "https")

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)
_METADATA_NAMES = frozenset({
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.tencentyun.com",
    "metadata.platformequinix.com",
})  # fmt: skip
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_problem(address: IPAddress) -> str | None:
    """What `address` is, when a notification may not be sent there (a link-local or cloud metadata
    address, an IPv4 one written as IPv6 too), or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in _LINK_LOCAL) or address in _METADATA_ADDRESSES:
        return "a link-local or cloud metadata address"
    return None


def _address(host: str) -> IPAddress | None:
    """The IP address a URL's host is, in any form a resolver accepts (`2852039166`,
    `0xa9.254.169.254`, `[::ffff:169.254.169.254]`); None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _LEGACY_IPV4.match(host):
            return None
        try:  # the shorthand and octal/hex forms getaddrinfo still accepts
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def url_problem(url: str) -> str | None:
    """Why a notification may not be sent to `url` (never quoting the URL, which may hold a
    secret), or None when it may."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        shown = f"{parts.scheme}:" if parts.scheme and len(parts.scheme) <= 16 else "no scheme"
        return f"must be an http:// or https:// URL (it has {shown})"
    if not host:
        return "names no host"
    host = host.rstrip(".").lower()
    if host in _METADATA_NAMES:
        return f"points at a cloud metadata service ({host}); give the address of a real receiver"
    address = _address(host)
    problem = address_problem(address) if address is not None else None
    if problem is None:
        return None
    return f"points at {problem} ({address}); give the address of a real receiver"


def checked_url(url: str) -> str:
    """`url` when a notification may be sent there; ValueError (pydantic's field error) otherwise."""
    problem = url_problem(url)
    if problem is not None:
        raise ValueError(f"the URL {problem}")
    return url
