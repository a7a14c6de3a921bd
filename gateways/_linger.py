"""A lingering close for the connections the guard refuses (nginx's ``lingering_close``).

A refused connection is answered before its request is read. Closing its socket with that
request unread makes the kernel send a reset, and a reset can reach the client before it has
read the answer, which it then never sees. So after the answer the write side is shut down
(the client reads the answer, then end of file) and what the client sends is read and dropped
until it closes, for at most ``LINGER_BYTES`` bytes and ``LINGER_SECONDS``; then the socket
closes. At most ``LINGER_SLOTS`` connections linger at once, so a flood holds no more than
that many descriptors past the cap, each for at most ``LINGER_SECONDS``; beyond them a refused
connection is closed at once (as before: its answer may be lost to a reset).

Example::

    lingering = Lingering()
    lingering.close(transport, protocol, b"HTTP/1.1 503 ...")
"""

from __future__ import annotations

import asyncio

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "LINGER_SLOTS", "Lingering"]

LINGER_SECONDS = 1.0
LINGER_BYTES = 8 * 1024
LINGER_SLOTS = 32


class Lingering:
    """Closes refused connections after their answer; counts those still lingering."""

    def __init__(
        self,
        slots: int = LINGER_SLOTS,
        seconds: float = LINGER_SECONDS,
        max_bytes: int = LINGER_BYTES,
    ) -> None:
        self.slots, self.seconds, self.max_bytes = slots, seconds, max_bytes
        self.active = 0
        """Connections lingering now (each holds a descriptor)."""

    def close(
        self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol, answer: bytes
    ) -> None:
        """Writes ``answer`` and closes ``transport``, lingering when a slot is free.
        ``protocol`` (the transport's until now) gets ``connection_lost`` at the end, as it
        would have from a plain close, so that it releases what it holds."""
        transport.write(answer)
        if self.active >= self.slots or not transport.can_write_eof():
            transport.close()
            return
        self.active += 1
        transport.set_protocol(_Drain(self, transport, protocol))
        transport.write_eof()  # after the answer is flushed: the client reads it, then EOF


class _Drain(asyncio.Protocol):
    """Reads and drops a refused connection's bytes until its end of file, the byte budget or
    the deadline, then closes it."""

    def __init__(
        self, owner: Lingering, transport: asyncio.Transport, protocol: asyncio.BaseProtocol
    ) -> None:
        self._owner, self._transport, self._protocol = owner, transport, protocol
        self._left = owner.max_bytes
        # abort, not close: a close waits for unsent bytes to leave, which a client that
        # reads nothing could make last; the deadline is what bounds the descriptor.
        self._deadline = asyncio.get_running_loop().call_later(owner.seconds, transport.abort)

    def data_received(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:  # a large body: stop paying for it (the rest may draw a reset)
            self._transport.close()

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        self._owner.active -= 1
        self._protocol.connection_lost(exc)
