"""The dedup window: which ``(org, source, id)`` were accepted lately, and under which id.

A publisher that retries an event it already sent gets the first id back instead of a second
copy. :class:`MemoryDedupWindow` is the embedded window (one process); the shared one
(:class:`broker.dedup_redis.RedisDedupWindow`) implements the same :class:`DedupWindow`
Protocol for many nodes.

Example::

    window = MemoryDedupWindow(120.0, max_bytes=64 << 20)
    await window.remember([(("acme", "src", "e1"), 42)])
    assert await window.lookup([("acme", "src", "e1")]) == [42]
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import is_, itemgetter
from typing import Protocol

from lockgate.broker.ids import id_for_time_ms, time_ms_of
from lockgate.broker.store import Batch
from lockgate.broker.v1 import broker_pb2

__all__ = [
    "BATCH_BYTES",
    "DEFAULT_MAX_BYTES",
    "ENTRY_BYTES",
    "DedupKey",
    "DedupWindow",
    "MemoryDedupWindow",
    "RecentLog",
]

log = logging.getLogger("lockgate.dedup")

ENTRY_BYTES = 140
"""Memory of one entry of :class:`MemoryDedupWindow` (its hash, its id, the dict slot and the
reference in its batch), measured with tracemalloc on CPython 3.11 at 115-138 bytes, whatever
the lengths of ``id`` and ``source`` (test_dedup measures it)."""
BATCH_BYTES = 170
"""Memory of one remembered batch beyond its entries (a single-event publish costs both)."""
DEFAULT_MAX_BYTES = 256 << 20
"""``dedup_max_bytes``: about 1.9 million entries; 127,000 events/s fill it in 15 s."""
_WARN_EVERY = 60.0
_BY_BATCH = 32
"""Lookups of at least this many keys enter the new ones at once, and their batches keep
their ids once per batch (see ``_claim``); smaller ones are looked up and then entered one
id per key, where a batch's own bookkeeping would outweigh its entries."""

DedupKey = tuple[str, str, str]
"""``(org, source, id)``: the identity of an event for deduplication."""


_first = itemgetter(0)
_second = itemgetter(1)


class RecentLog(Protocol):
    """The part of the store a window rebuilds from."""

    async def recent_batches(self, after_id: int) -> list[Batch]: ...


class DedupWindow(Protocol):
    """Accepted keys and their ids for ``window`` seconds.

    The publish pipeline calls :meth:`lookup` for a batch's keys, stages the new events,
    :meth:`remember` s their ids, and :meth:`forget` s them again when the store write fails,
    so a retry of an event that was never acknowledged is accepted.

    Between ``lookup`` and ``remember`` the embedded window cannot be raced (neither
    suspends, and one event loop runs the node). A shared window can (two nodes may see the
    same key at the same instant), so a shared window *claims* in ``lookup`` every key it
    answers 0 for: the caller then appends that event and must ``remember`` or ``forget``
    the key, and a concurrent ``lookup`` of a claimed key elsewhere waits for that outcome
    (see :mod:`broker.dedup_redis`). Claiming before the append is what stores a publish
    retried through another node once.
    """

    claims: bool
    """Whether :meth:`lookup` claims the keys it answers 0 for (a shared window). Then the
    caller need not wait for :meth:`remember` before its next lookup: a lookup of a claimed
    key waits for the outcome anyway."""

    async def open(self, log: RecentLog) -> None:
        """Loads the keys of the events the log stored within the window (at start)."""

    async def close(self) -> None: ...

    async def lookup(self, keys: Sequence[DedupKey]) -> list[int]:
        """The id accepted for each key, 0 where the key is not in the window (a shared
        window claims those keys for the caller)."""

    async def record(self, keys: Sequence[DedupKey]) -> list[int]:
        """:meth:`lookup` for the keys of a fresh frame (ids its client generated for this
        first send), with the same answers: a shared window may claim them without the
        round trips a lookup takes, since they are almost never there."""

    async def remember(self, entries: Sequence[tuple[DedupKey, int]]) -> None:
        """Records accepted keys with their ids (one call per batch)."""

    async def forget(self, keys: Sequence[DedupKey]) -> None:
        """Drops keys whose events were not stored after all."""

    def stored(self, keys: Sequence[DedupKey]) -> None:
        """The store committed the events of these remembered keys. A shared window answers
        a key as a duplicate only from then on (until then a node that dies before its
        commit would leave an id with no event behind it); it may record that in the
        background."""


class MemoryDedupWindow:
    """:class:`DedupWindow` in this process's memory, expired by age, within a memory budget.

    The index keeps a 64-bit hash of each ``(org, source, id)`` instead of the strings, so an
    entry costs about :data:`ENTRY_BYTES` whatever the lengths of ``id`` and ``source``. Python's
    string hash is SipHash keyed per process (the window is rebuilt from the log at start, so
    the keys need not survive a restart); two keys of one window share a hash with odds of
    about ``entries / 2**64`` per event, which would report a new event as a duplicate (one in
    10^13 events at a full default budget). A publisher cannot aim at a collision: it does not
    know the key.

    When the entries would pass ``max_bytes``, the oldest batches leave early: the window is
    shortened, with a warning (``dedup.window.shortened``, at most once a minute), instead of
    growing; :attr:`shortened_to` says how long it reaches back then.

    The bookkeeping is one dict entry per event and one deque entry per batch; expiry walks
    the deque from its old end, so it costs nothing while nothing is old. A batch of new
    keys looked up together and then remembered together (the publish path) enters them in
    its lookup, under the batch's number, and keeps its ids once (the first of consecutive
    ones): one probe of the table per event instead of two, and no id object per entry.
    """

    def __init__(
        self,
        window: float,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.claims = False
        self.max_bytes = max_bytes
        self.shortened_to: float | None = None
        """Seconds the window reached back when the budget last shortened it (None: never)."""
        self._clock = clock
        self._ids: dict[int, int] = {}
        """Hash -> the accepted id, or ``-n`` for the keys of batch ``n`` (see ``_batches``)."""
        self._order: collections.deque[tuple[float, list[int], int]] = collections.deque()
        """Per remembered batch, oldest first: when, its hashes, its number (0: none)."""
        self._batches: dict[int, tuple[list[int], int | list[int]]] = {}
        """Batch number -> its hashes and its ids (the first of consecutive ones, or all)."""
        self._claim: tuple[Sequence[DedupKey], list[int], int, bool] | None = None
        """The last lookup (its keys, their hashes, its batch number, whether all were new)
        until remember settles it: lookup enters each new key under its batch's number in
        the same dict operation that looks it up, so remember writes nothing per key (the
        dict, not Python, was the cost: two probes of a large table per event)."""
        self._batch_no = 0
        self._warned = -math.inf

    def __len__(self) -> int:
        self._settle()
        return len(self._ids)

    def size(self) -> int:
        """The estimated bytes of the index (what ``max_bytes`` bounds)."""
        return len(self._ids) * ENTRY_BYTES + len(self._order) * BATCH_BYTES

    async def open(self, log: RecentLog) -> None:
        since = id_for_time_ms(int((time.time() - self.window) * 1000))
        now = self._clock()
        for b in await log.recent_batches(since):
            keys = []
            for d in broker_pb2.SubscribeResponse.FromString(b.body).deliveries:
                key = hash((b.org, d.event.source, d.event.id))
                self._ids[key] = d.id
                keys.append(key)
            age = max(0.0, time.time() - time_ms_of(b.last_id) / 1000)
            self._order.append((now - age, keys, 0))
        if self.size() > self.max_bytes:
            self._shorten()

    async def close(self) -> None:
        return None

    def expire(self) -> None:
        horizon = self._clock() - self.window
        order = self._order
        while order and order[0][0] < horizon:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, hashes, number = self._order.popleft()
        ids = self._ids
        for key in hashes:
            ids.pop(key, None)
        if number:
            del self._batches[number]

    def _shorten(self) -> None:
        """Drops the oldest batches until the entries are 90% of the budget (so that this
        runs once per many batches), and warns."""
        order = self._order
        ids = self._ids
        keep = self.max_bytes * 9 // 10
        while order and len(ids) * ENTRY_BYTES + len(order) * BATCH_BYTES > keep:
            self._drop_oldest()
        now = self._clock()
        reach = now - order[0][0] if order else 0.0
        self.shortened_to = reach
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning(
                "dedup.window.shortened: the dedup index reached its budget of %.1f MiB "
                "(%d entries); it now reaches back %.1fs instead of dedup_window %gs "
                "(raise dedup_max_bytes, or publish fewer distinct events per window)",
                self.max_bytes / (1 << 20),
                len(ids),
                reach,
                self.window,
            )

    async def record(self, keys: Sequence[DedupKey]) -> list[int]:
        # In memory a lookup costs next to nothing (and the flag is only the client's word).
        return await self.lookup(keys)

    async def lookup(self, keys: Sequence[DedupKey]) -> list[int]:
        self._settle()
        self.expire()
        # C-level maps: this runs for every published event. A new key is entered under
        # this batch's number at once (one probe, not a lookup and then an insert); the
        # next remember keeps it, anything else first takes it out again (_settle).
        hashes = list(map(hash, keys))
        if len(hashes) < _BY_BATCH:
            found = list(map(self._ids.get, hashes, repeat(0, len(hashes))))
            return found if min(found, default=0) >= 0 else self._resolve(hashes, found, 0)
        self._batch_no += 1
        mine = -self._batch_no
        found = list(map(self._ids.setdefault, hashes, repeat(mine, len(hashes))))
        fresh = found.count(mine) == len(found)  # the usual batch: all new
        self._claim = (keys, hashes, mine, fresh)
        return [0] * len(found) if fresh else self._resolve(hashes, found, mine)

    def _resolve(self, hashes: list[int], found: list[int], mine: int) -> list[int]:
        """The ids of the keys found (rare: retries), 0 for this lookup's new keys (those
        ``found`` under ``mine``, or 0)."""
        out = [0] * len(found)
        index: dict[int, dict[int, int]] = {}  # per batch found in: hash -> its id
        for k, (key, value) in enumerate(zip(hashes, found, strict=True)):
            if value == mine:
                continue
            if value > 0:
                out[k] = value
                continue
            at = index.get(value)
            if at is None:
                batch, first = self._batches[-value]
                ids = range(first, first + len(batch)) if isinstance(first, int) else first
                at = index[value] = dict(zip(batch, ids, strict=True))
            out[k] = at[key]
        return out

    def _settle(self) -> None:
        """Takes out the keys a lookup entered when no remember of its keys followed."""
        claim = self._claim
        if claim is not None:
            self._claim = None
            ids = self._ids
            mine = claim[2]
            for key in claim[1]:
                if ids.get(key) == mine:
                    del ids[key]

    async def remember(self, entries: Sequence[tuple[DedupKey, int]]) -> None:
        ids = self._ids
        order = self._order
        claim = self._claim
        if (
            claim is not None
            and claim[3]
            and len(entries) == len(claim[0])
            and all(map(is_, map(_first, entries), claim[0]))
        ):
            # The keys of the last lookup, which were all new: they are in already, under
            # the batch's number; its ids are kept once per batch.
            self._claim = None
            got = list(map(_second, entries))
            consecutive = got[-1] - got[0] == len(got) - 1 and got == list(
                range(got[0], got[-1] + 1)
            )  # a batch's ids, unless policy routes gave some another subject's
            first: int | list[int] = got[0] if consecutive else got
            self._batches[-claim[2]] = (claim[1], first)
            order.append((self._clock(), claim[1], -claim[2]))
        else:
            self._settle()
            batch = list(map(hash, map(_first, entries)))
            ids.update(zip(batch, map(_second, entries), strict=True))
            order.append((self._clock(), batch, 0))
        if len(ids) * ENTRY_BYTES + len(order) * BATCH_BYTES > self.max_bytes:
            self._shorten()

    def stored(self, keys: Sequence[DedupKey]) -> None:
        return None  # one process: its ids and its log die together

    async def forget(self, keys: Sequence[DedupKey]) -> None:
        self._settle()
        ids = self._ids
        for key in keys:
            ids.pop(hash(key), None)
