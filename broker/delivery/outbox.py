"""The outbox a subscriber stream drains.

An :class:`Outbox` holds encoded delivery frames for one subscriber stream. The stream's
writer task drains it in chunks of up to ``max_message_bytes``; nothing on the publish path
ever waits for a subscriber.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from lockgate.broker.errors import BrokerError

__all__ = ["Outbox"]


class Outbox:
    """Frames waiting to be written to one stream."""

    def __init__(self, max_message_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._chunks: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._max = max_message_bytes
        self.error: BrokerError | None = None
        self.closed = False
        self.buffered = 0
        """Events put and not yet taken."""
        self.bytes = 0
        """Bytes put and not yet taken (what the subscriber's byte budget bounds)."""
        self.last_count = 0
        """Events in the body the last :meth:`take` returned."""
        self._counts: deque[int] = deque()
        self._waiting_since = 0.0  # since when frames wait without the stream taking any

    def stalled(self) -> float:
        """Seconds frames have been waiting without the stream taking any (0 when empty)."""
        return self._clock() - self._waiting_since if self._chunks else 0.0

    def put(self, frames: bytes, count: int = 1) -> None:
        if not self._chunks:
            self._waiting_since = self._clock()
        self._chunks.append(frames)
        self._counts.append(count)
        self.buffered += count
        self.bytes += len(frames)
        self._ready.set()

    def close(self, error: BrokerError | None = None) -> None:
        if not self.closed:
            self.closed = True
            self.error = error
            if error is not None:  # nothing more is sent: free it now, not when the stream ends
                self._chunks.clear()
                self._counts.clear()
                self.buffered = self.bytes = 0
            self._ready.set()

    async def take(self) -> bytes | None:
        """The next response body (joined frames), or None once closed and drained."""
        while not self._chunks:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.closed and self.error is not None:
            return None
        out = [self._chunks.popleft()]
        count = self._counts.popleft()
        size = len(out[0])
        while self._chunks and size + len(self._chunks[0]) <= self._max:
            chunk = self._chunks.popleft()
            count += self._counts.popleft()
            size += len(chunk)
            out.append(chunk)
        self.buffered -= count
        self.bytes -= size
        self.last_count = count
        self._waiting_since = self._clock()
        return out[0] if len(out) == 1 else b"".join(out)
