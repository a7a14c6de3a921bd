"""Webhook endpoint rules (pure): which URLs a durable subscription may POST to.

Only http and https; and, unless ``webhook_allow_private`` is set, no loopback, private,
link-local or otherwise non-public address, so a tenant cannot point the broker at the
services behind it (SSRF). Host names are resolved and every address is checked.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse

from broker.errors import InvalidArgument

__all__ = ["check_endpoint_url"]


def _public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_endpoint_url(url: str, *, allow_private: bool = False) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"endpoint_url {url!r} is not an http(s) URL",
            reason="INVALID_ENDPOINT",
            hint="use https://host/path",
        )
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError:
        raise InvalidArgument(
            f"endpoint_url host {parts.hostname!r} does not resolve",
            reason="INVALID_ENDPOINT",
        ) from None
    for info in infos:
        if not _public(str(info[4][0])):
            raise InvalidArgument(
                f"endpoint_url {url!r} points at a private or loopback address",
                reason="PRIVATE_ENDPOINT",
                hint="use a public endpoint, or set webhook_allow_private in the configuration",
            )
