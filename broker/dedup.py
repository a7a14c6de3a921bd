"""The dedup window: which ``(org, source, id)`` were accepted lately, and under which id.

A publisher that retries an event it already sent gets the first id back instead of a second
copy. :class:`MemoryDedupWindow` is the embedded window (one process); a shared one (NATS KV,
Redis) implements the same :class:`DedupWindow` Protocol for many nodes.

Example::

    window = MemoryDedupWindow(120.0)
    await window.remember([(("acme", "src", "e1"), 42)])
    assert await window.lookup([("acme", "src", "e1")]) == [42]
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from lockgate.broker.ids import id_for_time_ms, time_ms_of
from lockgate.broker.store import Batch
from lockgate.broker.v1 import broker_pb2

__all__ = ["DedupKey", "DedupWindow", "MemoryDedupWindow", "RecentLog"]

DedupKey = tuple[str, str, str]
"""``(org, source, id)``: the identity of an event for deduplication."""


class RecentLog(Protocol):
    """The part of the store a window rebuilds from."""

    async def recent_batches(self, after_id: int) -> list[Batch]: ...


class DedupWindow(Protocol):
    """Accepted keys and their ids for ``window`` seconds.

    The publish pipeline calls :meth:`lookup` for a batch's keys, stages the new events,
    :meth:`remember` s their ids, and :meth:`forget` s them again when the store write fails,
    so a retry of an event that was never acknowledged is accepted.

    Between ``lookup`` and ``remember`` the embedded window cannot be raced (neither
    suspends, and one event loop runs the node). A shared window can: two nodes may accept
    the same key at the same instant, so a shared implementation should make ``remember``
    first-writer-wins per key and the pipeline may then report the loser as a duplicate.
    """

    async def open(self, log: RecentLog) -> None:
        """Loads the keys of the events the log stored within the window (at start)."""

    async def close(self) -> None: ...

    async def lookup(self, keys: Sequence[DedupKey]) -> list[int]:
        """The id accepted for each key, 0 where the key is not in the window."""

    async def remember(self, entries: Sequence[tuple[DedupKey, int]]) -> None:
        """Records accepted keys with their ids (one call per batch)."""

    async def forget(self, keys: Sequence[DedupKey]) -> None:
        """Drops keys whose events were not stored after all."""


class MemoryDedupWindow:
    """:class:`DedupWindow` in this process's memory, expired by age.

    The bookkeeping is one dict entry per event and one deque entry per batch; expiry walks
    the deque from its old end, so it costs nothing while nothing is old.
    """

    def __init__(self, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._ids: dict[DedupKey, int] = {}
        self._order: collections.deque[tuple[float, list[DedupKey]]] = collections.deque()

    def __len__(self) -> int:
        return len(self._ids)

    async def open(self, log: RecentLog) -> None:
        since = id_for_time_ms(int((time.time() - self.window) * 1000))
        now = self._clock()
        for b in await log.recent_batches(since):
            keys = []
            for d in broker_pb2.SubscribeResponse.FromString(b.body).deliveries:
                key = (b.org, d.event.source, d.event.id)
                self._ids[key] = d.id
                keys.append(key)
            age = max(0.0, time.time() - time_ms_of(b.last_id) / 1000)
            self._order.append((now - age, keys))

    async def close(self) -> None:
        return None

    def expire(self) -> None:
        horizon = self._clock() - self.window
        order = self._order
        ids = self._ids
        while order and order[0][0] < horizon:
            for key in order.popleft()[1]:
                ids.pop(key, None)

    async def lookup(self, keys: Sequence[DedupKey]) -> list[int]:
        self.expire()
        get = self._ids.get
        return [get(k, 0) for k in keys]

    async def remember(self, entries: Sequence[tuple[DedupKey, int]]) -> None:
        ids = self._ids
        for key, event_id in entries:
            ids[key] = event_id
        self._order.append((self._clock(), [k for k, _ in entries]))

    async def forget(self, keys: Sequence[DedupKey]) -> None:
        ids = self._ids
        for key in keys:
            ids.pop(key, None)
