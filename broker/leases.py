"""Work that one node must do alone (retention, holding a worker id) runs under a lease.

A lease is a name held by one node for a while: :meth:`Leases.acquire` takes it or renews it
for the same holder, and refuses while another holder's lease runs; a holder that stops
renewing loses it when the time is up. :class:`LocalLeases` serves the nodes of one process;
:class:`RedisLeases` the nodes of a cluster, with the time kept by the Redis server (so the
nodes' clocks need not agree).

Example::

    if await leases.acquire("retention", node_id, ttl=15.0):
        await store.trim(rules, now_ms)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from lockgate.broker.redisconn import REDIS_ERRORS, connect, redis_failed

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["Leases", "LocalLeases", "RedisLeases", "worker_id_lease"]


def worker_id_lease(worker_id: int) -> str:
    """The lease a node holds while it issues ids with ``worker_id``."""
    return f"worker-id/{worker_id}"


class Leases(Protocol):
    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Takes ``name`` for ``holder`` for ``ttl`` seconds, or renews it if ``holder``
        already has it; False while another holder's lease runs."""

    async def release(self, name: str, holder: str) -> None:
        """Gives ``name`` up now (nothing happens unless ``holder`` has it)."""

    async def holder(self, name: str) -> str | None:
        """Who holds ``name`` now (None: nobody)."""

    async def close(self) -> None: ...


class LocalLeases:
    """:class:`Leases` in this process's memory."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, tuple[str, float]] = {}

    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        now = self._clock()
        current = self._held.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._held[name] = (holder, now + ttl)
        return True

    async def release(self, name: str, holder: str) -> None:
        current = self._held.get(name)
        if current is not None and current[0] == holder:
            del self._held[name]

    async def holder(self, name: str) -> str | None:
        current = self._held.get(name)
        if current is None or current[1] <= self._clock():
            return None
        return current[0]

    async def close(self) -> None:
        self._held.clear()


# Take with SET NX PX; renew only what ``holder`` holds (compare and set, in one script so
# that nobody's lease is extended or deleted between the compare and the set).
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_WHAT = "the Redis leases"


class RedisLeases:
    """:class:`Leases` in Redis under ``prefix`` (``url`` like ``redis://127.0.0.1:6379/0``).

    A lease is one key whose value is its holder and whose expiry (``PX``) is the Redis
    server's: a holder that stops renewing loses it when its TTL runs out there, whatever the
    nodes' clocks say. When Redis cannot be reached, :meth:`acquire` raises ``UNAVAILABLE``
    (``LIMITER_UNAVAILABLE``) rather than answer; the holder must then act as if it had lost
    the lease once its own TTL has run out.
    """

    def __init__(self, url: str, *, prefix: str = "lockgate:") -> None:
        self._redis: redis.asyncio.Redis = connect(url, _WHAT)
        self._prefix = prefix + "lease:"
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)

    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        try:
            got = await self._acquire(
                keys=[self._prefix + name], args=[holder, max(1, int(ttl * 1000))]
            )
        except REDIS_ERRORS as exc:
            raise redis_failed(_WHAT, exc) from exc
        return bool(got)

    async def release(self, name: str, holder: str) -> None:
        try:
            await self._release(keys=[self._prefix + name], args=[holder])
        except REDIS_ERRORS as exc:
            raise redis_failed(_WHAT, exc) from exc

    async def holder(self, name: str) -> str | None:
        try:
            value = await self._redis.get(self._prefix + name)
        except REDIS_ERRORS as exc:
            raise redis_failed(_WHAT, exc) from exc
        return None if value is None else value.decode() if isinstance(value, bytes) else value

    async def close(self) -> None:
        await self._redis.aclose()
