"""Where a webhook POST may connect: only public addresses (unless ``allow_private``),
checked at every connection, so a name that resolves privately later (DNS rebinding) is refused
then; and a failed POST named with its URL's query <redacted> (it may hold a token)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import urllib.parse

import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from lockgate.broker.redaction import shown_url
from lockgate.broker.webhooks import is_public_address

__all__ = ["GuardedResolver", "PrivateAddress", "failure_text", "literal_refused"]


class PrivateAddress(OSError):
    """The endpoint's name resolved to no address the dispatcher may connect to."""


class GuardedResolver(AbstractResolver):
    """Resolves with ``base`` and keeps only public addresses (unless ``allow_private``), so
    the connector connects to exactly the addresses checked, at every connection: a name
    that resolves privately later (DNS rebinding) is refused at that moment."""

    def __init__(self, allow_private: bool, base: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self.base = base or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.base.resolve(host, port, family)
        if self.allow_private:
            return found
        kept = [r for r in found if is_public_address(r["host"])]
        if not kept:
            raise PrivateAddress(f"{host} resolves to no public address, and private ones are off")
        return kept

    async def close(self) -> None:
        await self.base.close()


def failure_text(exc: BaseException, url: str) -> str:
    """A failed POST as its outcome (and the retry's log line) names it: aiohttp's messages
    may repeat the URL, which is shown as :func:`shown_url` (its query may hold a token)."""
    text = f"{type(exc).__name__}: {exc}"
    shown = shown_url(url)
    with contextlib.suppress(ValueError):  # yarl spells some URLs differently
        text = text.replace(str(yarl.URL(url)), shown)
    return text.replace(url, shown)


def literal_refused(url: str, allow_private: bool) -> str:
    """Why a URL whose host is an IP literal may not be connected to ("" if it may): the
    connector does not resolve literals, so they are checked here."""
    if allow_private:
        return ""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return ""  # a name: the resolver checks it
    return "" if is_public_address(host) else f"{host} is not a public address"
