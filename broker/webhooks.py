"""Webhook endpoint rules (pure): which URLs a durable subscription may POST to.

Only http and https, with no credentials in the user part (deliveries are signed with the
webhook secret instead), and no ``<redacted>`` (a URL as it reads back, which names no
secret; the durable's own, sent back whole, is taken as the stored one before this check);
and, unless ``webhook_allow_private``
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
from lockgate.broker.redaction import REDACTED, shown_url

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
    """Raises INVALID_ENDPOINT or PRIVATE_ENDPOINT naming the URL as :func:`shown_url` (its
    query may carry a token)."""
    shown = shown_url(url[:1000])
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"endpoint_url {shown!r} is not an http(s) URL",
            reason="INVALID_ENDPOINT",
            hint="use https://host/path",
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(
            "endpoint_url must not carry credentials (user:password@)",  # nor echo them
            reason="INVALID_ENDPOINT",
            hint="deliveries are signed with the webhook secret; verify that signature instead",
        )
    if REDACTED in url:
        raise InvalidArgument(
            f"endpoint_url {shown!r} has {REDACTED} for a secret",
            reason="INVALID_ENDPOINT",
            hint="give the URL in full (the durable's own endpoint_url as it reads back is "
            "taken as the stored one)",
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
                f"endpoint_url {shown!r} points at a private or loopback address",
                reason="PRIVATE_ENDPOINT",
                hint="use a public endpoint, or set webhook_allow_private in the configuration",
            )
