"""Serving an aiohttp application: the listener (plain or TLS), its connection guard, the
middlewares a listener adds (mTLS callers, keys on network listeners), the ``Server`` header,
and problem+json for the requests aiohttp refuses itself (``_http_problems``).

Example::

    runner, port = await start_site(build_app(api), "127.0.0.1:0")
    ...
    await runner.cleanup()
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from lockgate.broker.errors import BrokerError
from lockgate.broker.tls import CERTIFIED_CALLER, ClientIdentities, ServerTLS, peer_of_ssl
from lockgate.gateways._http_problems import answer_malformed_requests
from lockgate.gateways._web import api_key, problem
from lockgate.gateways.errors import InvalidParameter, KeyRequired, listen_failed

if TYPE_CHECKING:
    from lockgate.gateways._guard import ConnectionGuard

__all__ = ["SERVER_NAME", "is_loopback_host", "network_call_without_key", "start_site"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a listener's host or a peer's address) is this machine only."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


@web.middleware
async def _network_needs_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a non-loopback listener, keyless calls from other hosts are refused: behind the
    gateway may be a broker in open dev mode, where a keyless caller is the admin. A caller
    that a client certificate names (mTLS) is not keyless."""
    try:
        certified = CERTIFIED_CALLER.get() is not None
        if network_call_without_key(
            request.remote, request.headers, request.query, certified=certified
        ):
            return problem(KeyRequired())
    except BrokerError as err:
        return problem(err)
    return await handler(request)


def network_call_without_key(
    remote: str | None,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    *,
    certified: bool = False,
) -> bool:
    """True for a call from another host that carries no API key and no client certificate
    (refused on a network listener); raises the key's error when the authorization header
    is malformed."""
    if is_loopback_host(remote) or certified:
        return False
    return not (api_key(headers) or query.get("api_key"))


def _certified_caller(identities: ClientIdentities) -> Middleware:
    """The middleware of an mTLS listener: the caller its verified certificate names is the
    request's :data:`~broker.tls.CERTIFIED_CALLER` (LocalAPI authenticates with it)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        try:
            caller = identities.of_peer(peer_of_ssl(ssl_object))
        except BrokerError as err:
            return problem(err)
        token = CERTIFIED_CALLER.set(caller)
        try:
            return await handler(request)
        finally:
            CERTIFIED_CALLER.reset(token)

    return middleware


class _TLSSite(web.BaseSite):
    """A TLS listener whose connections the guard counts from their TCP accept, with a
    bounded handshake (aiohttp's TCPSite hands the context to asyncio, whose server counts
    nothing before a handshake ends and waits 60 s for one)."""

    def __init__(
        self,
        runner: web.AppRunner,
        bind: tuple[str, int],
        guard: ConnectionGuard,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(runner)
        self._bind, self._guard, self._context = bind, guard, context
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self.port = bind[1]

    @property
    def name(self) -> str:
        return f"https://{self._bind[0]}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        host, port = self._bind
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if host == "localhost":
            host = "127.0.0.1"
        listener = socket.create_server((host, port), family=family, backlog=128)
        listener.setblocking(False)
        self._listener, self.port = listener, int(listener.getsockname()[1])
        self._accepting = asyncio.get_running_loop().create_task(
            self._guard.serve_tls(listener, server, self._context), name="gateway-tls-accept"
        )

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
        self._guard.cancel_handshakes()
        await super().stop()


SERVER_NAME = "lockgate"
"""The ``Server`` header of every answer: aiohttp's default names its version and Python's,
which tells a scanner which advisories to try."""


def _hide_server_version() -> None:
    # aiohttp fills ``Server`` from this module global when a response has none, for its own
    # answers too (a 400 for a bad request head comes from inside aiohttp, before any
    # handler, middleware or on_response_prepare signal): the one place that covers them all.
    # tests/gateways/test_server_header.py fails if an aiohttp upgrade moves it.
    import aiohttp.web_response

    aiohttp.web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]


async def start_site(
    app: web.Application,
    listen: str,
    guard: ConnectionGuard | None = None,
    *,
    tls: ServerTLS | None = None,
    certified_callers: bool = True,
) -> tuple[web.AppRunner, int]:
    """Serves ``app`` on ``listen`` (HOST:PORT, port 0 picks one) within ``guard``'s limits
    (one guard for all the listeners of a process; a new one with the default limits when
    None), over TLS with ``tls``; returns the runner (call ``cleanup()`` to stop) and the
    bound port. With client certificates (mTLS) and ``certified_callers``, the caller a
    certificate names is the request's (in-process gateways; a standalone one only checks
    them, see gateways/cli.py). Raises ``FailedPrecondition`` (LISTEN_FAILED) when the
    address cannot be bound."""
    from lockgate.gateways._guard import LIMITS, ConnectionGuard

    _hide_server_version()
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise InvalidParameter("listen", listen, "HOST:PORT, e.g. 127.0.0.1:8080")
    if tls is not None and tls.identities is not None and certified_callers:
        # First, so that every later middleware and handler sees the caller.
        app.middlewares.insert(0, _certified_caller(tls.identities))
    if not is_loopback_host(host.strip("[]") or "127.0.0.1"):
        app.middlewares.append(_network_needs_key)
    guard = guard or ConnectionGuard()
    app[LIMITS] = guard.limits
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **guard.runner_options())
    await runner.setup()
    assert runner.server is not None  # set by setup()
    guard.install(runner.server)
    answer_malformed_requests(runner.server)
    bind = (host.strip("[]") or "127.0.0.1", int(port or 0))
    site: web.BaseSite
    if tls is not None:
        site = _TLSSite(runner, bind, guard, tls.ssl_context())
    else:
        site = web.TCPSite(runner, *bind)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise listen_failed(listen, exc) from None
    if isinstance(site, _TLSSite):
        return runner, site.port
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else int(port or 0)
    return runner, bound
