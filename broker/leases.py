"""Work that one node must do alone (retention, holding a worker id) runs under a lease.

A lease is a name held by one node for a while: :meth:`Leases.acquire` takes it or renews it
for the same holder, and refuses while another holder's lease runs; a holder that stops
renewing loses it when the time is up. :class:`LocalLeases` serves the nodes of one process;
a cluster implementation keeps the same promise in a shared service (Redis, NATS KV).

Example::

    if await leases.acquire("retention", node_id, ttl=15.0):
        await store.trim(rules, now_ms)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Leases", "LocalLeases", "worker_id_lease"]


def worker_id_lease(worker_id: int) -> str:
    """The lease a node holds while it issues ids with ``worker_id``."""
    return f"worker-id/{worker_id}"


class Leases(Protocol):
    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Takes ``name`` for ``holder`` for ``ttl`` seconds, or renews it if ``holder``
        already has it; False while another holder's lease runs."""

    async def release(self, name: str, holder: str) -> None:
        """Gives ``name`` up now (nothing happens unless ``holder`` has it)."""

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

    async def close(self) -> None:
        self._held.clear()
