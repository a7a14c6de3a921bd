"""The dedup window shared by the nodes of a cluster, in Redis.

A publish retried through another node (the client failing over) must be stored once, and a
publish whose append failed must not be remembered. Each event's key ``(org, source, id)``
is one Redis key holding the id it was stored under, expiring after the window (Redis's
clock, so the nodes' clocks need not agree):

1. :meth:`RedisDedupWindow.lookup` *claims* every new key before the batch is appended:
   ``SET key 0 NX PX claim GET``, pipelined (one round trip per batch). The node whose
   ``SET`` wins appends the event; a node that finds an id answers the duplicate with it; a
   node that finds a claim (``0``: another node is appending that event right now) waits
   until the claim becomes an id or goes away, then decides again.
2. :meth:`RedisDedupWindow.remember` replaces the claims by the ids for the whole window.
3. :meth:`RedisDedupWindow.forget` deletes them when the append failed, so a retry is
   accepted. A claim whose node died before 2 or 3 runs out after ``claim`` seconds.

Keys are compact: a 128-bit BLAKE2b digest of the key under the prefix, whatever the lengths
of ``source`` and ``id`` (about 90 bytes of Redis memory per event).

Example::

    window = RedisDedupWindow("redis://127.0.0.1:6379/0", 120.0)
    assert await window.lookup([("acme", "src", "e1")]) == [0]  # claimed: append it
    await window.remember([(("acme", "src", "e1"), 42)])
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lockgate.broker.dedup import DedupKey, RecentLog
from lockgate.broker.errors import Unavailable
from lockgate.broker.redisconn import REDIS_ERRORS, connect, redis_failed

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["DEFAULT_CLAIM", "RedisDedupWindow"]

DEFAULT_CLAIM = 5.0
"""Seconds a claim holds when its node neither remembers nor forgets it (it died between
the claim and the append); a retry waits at most this long for such a claim."""
_WHAT = "the Redis dedup window"


class RedisDedupWindow:
    """:class:`~broker.dedup.DedupWindow` in Redis under ``prefix``, shared by every node.

    The window outlives the nodes, so :meth:`open` loads nothing from the log.
    """

    def __init__(
        self,
        url: str,
        window: float,
        *,
        prefix: str = "lockgate:",
        claim: float = DEFAULT_CLAIM,
    ) -> None:
        self.window = window
        self._redis: redis.asyncio.Redis = connect(url, _WHAT)
        self._prefix = (prefix + "dd:").encode()
        self._window_ms = max(1, int(window * 1000))
        self._claim_ms = max(1, min(self._window_ms, int(claim * 1000)))
        self.waits = 0
        """How many times a lookup met a key claimed elsewhere and waited for its outcome."""

    def _key(self, key: DedupKey) -> bytes:
        org, source, eid = key
        # Length-prefixed, so no two keys encode alike.
        raw = f"{len(org)}:{org}{len(source)}:{source}{eid}".encode()
        return self._prefix + hashlib.blake2b(raw, digest_size=16).digest()

    async def open(self, log: RecentLog) -> None:
        return None

    async def close(self) -> None:
        await self._redis.aclose()

    async def lookup(self, keys: Sequence[DedupKey]) -> list[int]:
        """The id stored for each key, or 0 for a key this call claimed (the caller appends
        its event, then :meth:`remember` s or :meth:`forget` s it)."""
        rkeys = [self._key(k) for k in keys]
        found: dict[bytes, int] = {}
        todo = list(dict.fromkeys(rkeys))  # a key twice in one batch is claimed once
        deadline = time.monotonic() + self._claim_ms / 1000 + 1.0
        pause = 0.005
        while todo:
            try:
                pipe = self._redis.pipeline(transaction=False)
                for k in todo:
                    pipe.set(k, b"0", nx=True, px=self._claim_ms, get=True)
                answers = await pipe.execute()
            except REDIS_ERRORS as exc:
                raise redis_failed(_WHAT, exc) from exc
            waiting = []
            for k, old in zip(todo, answers, strict=True):
                stored = 0 if old is None else int(old)
                if old is not None and not stored:
                    waiting.append(k)  # another publish of this event is being appended
                else:
                    found[k] = stored
            todo = waiting
            if todo:
                self.waits += 1
                if time.monotonic() > deadline:
                    raise Unavailable(
                        "an event with the same source and id is still being published "
                        "through another node",
                        hint="retry the publish",
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.1)
        return [found[k] for k in rkeys]

    async def remember(self, entries: Sequence[tuple[DedupKey, int]]) -> None:
        if not entries:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, event_id in entries:
                pipe.set(self._key(key), str(event_id), px=self._window_ms)
            await pipe.execute()
        except REDIS_ERRORS as exc:
            raise redis_failed(_WHAT, exc) from exc

    async def forget(self, keys: Sequence[DedupKey]) -> None:
        if not keys:
            return
        try:
            await self._redis.delete(*[self._key(k) for k in keys])
        except REDIS_ERRORS as exc:
            raise redis_failed(_WHAT, exc) from exc
