"""Bounds on the HTTP and WebSocket listeners of a process (slowloris and connection floods).

One :class:`ConnectionGuard` per process counts the open connections of all its listeners,
in total and per client address; a connection beyond ``http_max_connections`` or
``http_max_connections_per_address`` is answered ``503`` (problem+json, reason
RESOURCE_EXHAUSTED) before its request is read, and closed without a reset (``_linger``).
The caps come from the file-descriptor budget (``broker.fdbudget``), so the gRPC port keeps
descriptors however many sockets the gateways are offered.

The time bounds are aiohttp's and ours:

- ``http_header_timeout`` is aiohttp's ``keepalive_timeout``: aiohttp arms it when a
  connection opens and after every response, and closes a connection that has not sent a
  complete request head by then (bytes that trickle in do not rearm it);
- ``http_body_timeout`` bounds reading a request body (``read_body``); the answer is 408 and
  the connection closes;
- aiohttp bounds a request's head in size (``max_line_size``, ``max_field_size``,
  ``max_headers``: 8 KiB lines and fields, 128 headers) and reads what a refused body still
  sends for at most ``lingering_time``;
- on a TLS listener a connection is counted from its TCP accept, before its handshake, and
  ``http_tls_handshake_timeout`` bounds the handshake (asyncio's default is 60 s): a client
  that connects and never sends a ClientHello holds its descriptor that long at most, and
  within the limits; one beyond them is closed at once (it has no TLS yet for a 503);
- a WebSocket is pinged every ``heartbeat`` and closed when the pong does not come;
- ``http_send_timeout`` bounds a slow read: a connection whose unsent answer has not shrunk
  for that long (a peer that reads nothing while an answer larger than the socket buffers
  waits) is aborted by a watchdog that looks at every connection once a second.

Example::

    guard = ConnectionGuard(config.listener_limits())
    runner, port = await start_site(app, "0.0.0.0:8080", guard)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from lockgate.broker.config import ListenerLimits
from lockgate.broker.fdbudget import gateway_connection_cap, open_file_limit
from lockgate.gateways._json import dumps
from lockgate.gateways._linger import Lingering
from lockgate.gateways._web import problem_json
from lockgate.gateways.errors import BodyTimeout, BodyTooLarge, TooManyConnections

__all__ = ["LIMITS", "ConnectionGuard", "read_body"]

log = logging.getLogger("lockgate.gateways")
LIMITS = web.AppKey("lockgate_listener_limits", ListenerLimits)
LINGERING_TIME = 2.0
"""Seconds aiohttp goes on reading (and dropping) a body its handler did not read."""


class _PeerErrors(logging.Filter):
    """aiohttp logs each malformed request (huge head, bad syntax) at ERROR with a traceback:
    a flood of them would be a flood of tracebacks. Here they are one line each, a warning,
    at most one a second, with the count of those left out."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0.0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next:
            self._dropped += 1
            return False
        self._next = now + 1.0
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):  # the peer's fault, not ours: no traceback
            record.msg = f"gateway.request.malformed: {record.getMessage()}: {exc}"[:400]
            record.args = ()
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if self._dropped:
            record.msg = f"{record.msg} ({self._dropped} more since, not logged)"
            self._dropped = 0
        return True


PROTOCOL_LOG = logging.getLogger("lockgate.gateways.protocol")
PROTOCOL_LOG.addFilter(_PeerErrors())


def _refusal(err: TooManyConnections) -> bytes:
    body = dumps(problem_json(err)).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """Counts the connections of every listener it is installed on (one guard per process)."""

    def __init__(self, limits: ListenerLimits | None = None, *, soft_limit: int = -1) -> None:
        self.limits = limits or ListenerLimits()
        soft = open_file_limit() if soft_limit < 0 else soft_limit
        self.max_connections = gateway_connection_cap(self.limits.max_connections, soft)
        self.per_address = self.limits.max_connections_per_address
        self.open = 0
        self.refused = 0
        self.stalled = 0
        """Connections aborted for a slow read."""
        self._by_address: collections.Counter[str] = collections.Counter()
        self._admitted: dict[object, tuple[str, asyncio.Transport | None]] = {}
        """Counted connections: the address, and the transport (None during a handshake)."""
        self._unsent: dict[object, tuple[int, float]] = {}  # buffered bytes, and since when
        self._watchdog: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self.lingering = Lingering()
        """Refused connections closing after their 503 (bounded in number and time)."""
        self._total_refusal = _refusal(
            TooManyConnections("http_max_connections", self.max_connections)
        )
        self._address_refusal = _refusal(
            TooManyConnections("http_max_connections_per_address", self.per_address)
        )

    def runner_options(self) -> dict[str, Any]:
        """The ``web.AppRunner`` options that carry the time bounds."""
        return {
            "keepalive_timeout": self.limits.header_timeout,
            "lingering_time": LINGERING_TIME,
            "logger": PROTOCOL_LOG,
        }

    def install(self, server: web.Server) -> None:
        """Counts ``server``'s connections (a runner's, after ``setup()``) and refuses those
        beyond the limits."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            if handler in self._admitted:  # counted at its TCP accept (TLS): now encrypted
                self._admitted[handler] = (self._admitted[handler][0], transport)
            else:
                self._admit(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self._release(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    async def serve_tls(
        self, listener: socket.socket, server: web.Server, context: ssl.SSLContext
    ) -> None:
        """Accepts ``listener``'s connections until cancelled: each is counted (or closed,
        beyond the limits) at its TCP accept, then its handshake runs within
        ``tls_handshake_timeout`` and ``server``'s HTTP handler takes over."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors (EMFILE): give the others a moment
                log.warning("gateway.accept.failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            handler = server()
            if self._count(handler, address, None) is not None:
                conn.close()  # no TLS yet to carry a 503
                continue
            task = loop.create_task(self._handshake(conn, handler, context))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(
        self, conn: socket.socket, handler: asyncio.Protocol, context: ssl.SSLContext
    ) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: handler,
                conn,
                ssl=context,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout,
            )
        except BaseException as exc:  # timeout, a bad ClientHello, a reset, cancellation
            # The handler never started, so nothing else releases its place.
            self._release(handler)
            conn.close()
            if not isinstance(exc, Exception):
                raise
            log.debug("gateway.tls.handshake.failed: %s", exc)

    def _admit(self, handler: asyncio.Protocol, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self._count(handler, address, transport)
        if refusal is not None:
            self.lingering.close(transport, handler, refusal)

    def _count(
        self, handler: object, address: str, transport: asyncio.Transport | None
    ) -> bytes | None:
        """Counts a connection of ``address``; beyond the limits, it is not counted and the
        answer to refuse it with is returned."""
        refusal = None
        if self.open >= self.max_connections:
            refusal = self._total_refusal
        elif self._by_address[address] >= self.per_address:
            refusal = self._address_refusal
        if refusal is not None:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, 8...: a flood logs little
                log.warning(
                    "gateway.connection.refused: %d connection(s) refused so far "
                    "(open %d of %d; %s has %d of %d)",
                    self.refused,
                    self.open,
                    self.max_connections,
                    address,
                    self._by_address[address],
                    self.per_address,
                )
            return refusal
        self.open += 1
        self._by_address[address] += 1
        self._admitted[handler] = (address, transport)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch(), name="gateway-send-watchdog"
            )
        return None

    def _release(self, handler: object) -> None:
        admitted = self._admitted.pop(handler, None)
        self._unsent.pop(handler, None)
        if admitted is None:
            return
        address = admitted[0]
        if not self._admitted and self._watchdog is not None:  # nothing left to watch
            self._watchdog.cancel()
            self._watchdog = None
        self.open -= 1
        self._by_address[address] -= 1
        if not self._by_address[address]:
            del self._by_address[address]

    def cancel_handshakes(self) -> None:
        """Ends the handshakes under way (a listener stops)."""
        for task in list(self._handshakes):
            task.cancel()

    async def _watch(self) -> None:
        """Aborts connections whose unsent bytes have not shrunk for ``send_timeout``; ends
        when no connection is left (the next one starts it again)."""
        loop = asyncio.get_running_loop()
        timeout = self.limits.send_timeout
        while self._admitted:
            await asyncio.sleep(min(1.0, timeout / 4))
            now = loop.time()
            for handler, (address, transport) in list(self._admitted.items()):
                if transport is None:  # handshaking: its own timeout bounds it
                    continue
                size = transport.get_write_buffer_size()
                last = self._unsent.get(handler)
                if not size:
                    self._unsent.pop(handler, None)
                elif last is None or size < last[0]:
                    self._unsent[handler] = (size, now)  # moving: the clock starts again
                elif now - last[1] >= timeout:
                    self.stalled += 1
                    log.warning(
                        "gateway.connection.stalled: %s read none of %d bytes for %gs; aborted",
                        address,
                        size,
                        timeout,
                    )
                    self._unsent.pop(handler, None)
                    transport.abort()


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes (else :class:`BodyTooLarge`) and within
    the listener's ``http_body_timeout`` (else :class:`BodyTimeout`)."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit)
    seconds = request.app.get(LIMITS, _DEFAULT).body_timeout
    buf = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_chunked(1 << 16):
                buf += chunk
                if len(buf) > limit:
                    raise BodyTooLarge(limit)
    except TimeoutError:
        raise BodyTimeout(seconds) from None
    return bytes(buf)


_DEFAULT = ListenerLimits()
