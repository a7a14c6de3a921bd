"""A fault-injecting TCP proxy for connection-loss tests (asyncpg's habit).

It sits between a client and any TCP server (a broker, Redis, NATS, PostgreSQL):

>>> async with TcpProxy("127.0.0.1:50051") as proxy:   # doctest: +SKIP
...     client = Client(proxy.target)
...     await proxy.cut()          # drop every open connection; new ones still work
...     proxy.stall()              # keep every connection open but forward nothing more
...     proxy.stall(to_server=False)  # the server gets requests, its answers are dropped
...     proxy.resume()             # new connections forward again (stalled ones stay stalled)
...     await proxy.down()         # the server is gone: open connections drop, new ones refused
...     proxy.up()                 # new connections are accepted again
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from types import TracebackType

__all__ = ["TcpProxy"]


@dataclass(eq=False)
class _Link:
    """One proxied connection: whether each direction drops what it reads.

    Compared by identity: ``links.remove(link)`` must drop this connection's own link, not
    the first one with equal flags (which left a live connection's link out of ``links``, so
    ``stall()`` missed it when a client had reconnected before the stall).
    """

    drop_to_server: bool = False
    drop_to_client: bool = False


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` (``target``) to ``upstream`` (``host:port``)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.links: list[_Link] = []
        #: Connections accepted so far (refused ones included): a client reconnected when
        #: this grows.
        self.connections = 0
        #: Bytes that stalled connections read and forgot: proof that a stall took effect.
        self.dropped = 0
        self._new = _Link()  # the state new connections start in
        self._refusing = False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> TcpProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.server is not None:
            self.server.close()
        await self.cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        link = _Link(self._new.drop_to_server, self._new.drop_to_client)
        self.links.append(link)
        self.writers |= {writer, up_writer}

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, to_server: bool
        ) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if link.drop_to_server if to_server else link.drop_to_client:
                        self.dropped += len(data)
                        continue  # a stalled connection: read and forget
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self.writers -= {writer, up_writer}
        self.links.remove(link)

    def stall(self, *, to_server: bool = True, to_client: bool = True) -> None:
        """Stop forwarding on every connection, open and new, without closing any: a server
        that accepts but never answers (or, with ``to_server=False``, that acts on what it is
        sent but whose answers never arrive)."""
        self._new = _Link(to_server, to_client)
        for link in self.links:
            link.drop_to_server |= to_server
            link.drop_to_client |= to_client

    def resume(self) -> None:
        """New connections forward again. A stalled connection has lost bytes, so it stays
        stalled: ``cut()`` it to make the client reconnect."""
        self._new = _Link()

    async def cut(self) -> None:
        """Drop every connection now open (both sides see a reset)."""
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        await asyncio.sleep(0)  # one loop turn, so the aborts reach the pipes before we return

    async def down(self) -> None:
        """The server is gone: open connections drop and new ones are reset at once."""
        self._refusing = True
        await self.cut()

    def up(self) -> None:
        """The server is back: new connections are forwarded again."""
        self._refusing = False
