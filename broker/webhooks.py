"""Webhook endpoint rules (pure): which URLs a durable subscription may POST to.

Only http and https, with no credentials in the URL (it is listed back to admins and logged;
deliveries are signed with the webhook secret instead); and, unless ``webhook_allow_private``
is set, no loopback, private, link-local, shared (100.64/10, where some clouds keep their
metadata service) or otherwise non-global address, so a tenant cannot point the broker at the
services behind it (SSRF). Host names are resolved and every address is checked; an IPv4
address inside an IPv6 one (``::ffff:a.b.c.d``, 6to4) is judged as the IPv4 address it reaches.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse

from lockgate.broker.errors import InvalidArgument

__all__ = ["check_endpoint_url", "is_public_address"]


def is_public_address(addr: str) -> bool:
    """Whether an IP address is one a webhook may reach without ``webhook_allow_private``."""
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return is_public_address(str(embedded))
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_endpoint_url(url: str, *, allow_private: bool = False) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"endpoint_url {url!r} is not an http(s) URL",
            reason="INVALID_ENDPOINT",
            hint="use https://host/path",
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(
            "endpoint_url must not carry credentials (user:password@)",  # nor echo them
            reason="INVALID_ENDPOINT",
            hint="deliveries are signed with the webhook secret; verify that signature instead",
        )
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port or 443, proto=socket.IPPROTO_TCP)
    except OSError:
        raise InvalidArgument(
            f"endpoint_url host {parts.hostname!r} does not resolve",
            reason="INVALID_ENDPOINT",
        ) from None
    for info in infos:
        if not is_public_address(str(info[4][0])):
            raise InvalidArgument(
                f"endpoint_url {url!r} points at a private or loopback address",
                reason="PRIVATE_ENDPOINT",
                hint="use a public endpoint, or set webhook_allow_private in the configuration",
            )
