"""The worker id a node puts into its ids, held under a lease so no two nodes share one.

Two nodes issuing ids with one worker id could issue the same id. So a node issues ids only
while it holds the lease ``worker-id/N`` (see :mod:`broker.leases`): with a pinned id
(setting ``worker_id``) it takes that one or refuses to start; otherwise, in cluster mode, it
takes the first free one from a random start (so nodes starting together rarely contend).

The lease is renewed by the node's lease loop (:meth:`WorkerIds.renew`). The node counts its
lease as held until ``ttl`` after it *sent* the last successful renewal (the lease server's
TTL starts later, when it receives it), so the node stops issuing ids before the lease can be
anybody else's: while it cannot renew (Redis down) or after it lost the lease,
:meth:`WorkerIds.check` raises ``UNAVAILABLE`` and publishes fail closed. A node that lost an
unpinned id takes another free one.

Example::

    worker = WorkerIds(leases, node_id, pinned=None, shared=True)
    await worker.take()                        # at start
    ids = IdGenerator(worker.worker_id, guard=worker.check)
    await worker.renew()                       # every few seconds
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from lockgate.broker.config import ConfigError
from lockgate.broker.errors import BrokerError, Unavailable
from lockgate.broker.ids import MAX_WORKER
from lockgate.broker.leases import Leases, worker_id_lease

__all__ = ["WORKER_LEASE_TTL", "WorkerIds"]

WORKER_LEASE_TTL = 15.0
"""Seconds a worker id's lease lasts unless renewed (the node renews it every 5 s)."""
log = logging.getLogger("lockgate.workerid")


class WorkerIds:
    """Which worker id this node may issue ids with, and until when.

    ``pinned``: the ``worker_id`` setting when given (>= 0); ``shared``: whether the leases
    are shared by several nodes (cluster mode), which is when an unpinned node searches for
    a free id; one node alone (the embedded default) uses 0.
    """

    def __init__(
        self,
        leases: Leases,
        holder: str,
        *,
        pinned: int | None,
        shared: bool,
        ttl: float = WORKER_LEASE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = leases
        self._holder = holder
        self._pinned = pinned
        self._shared = shared
        self._ttl = ttl
        self._clock = clock
        self.worker_id = pinned if pinned is not None else 0
        """The id held (or last held); valid only while :meth:`check` passes."""
        self._until = -1.0  # local time until which the lease is surely ours
        self._problem = "it has not taken one yet"
        self._reason: str | None = None
        """The reason of the lease server's failure, when that is why none is held (an
        unreachable Redis: LIMITER_UNAVAILABLE, as the limiter's own refusals say)."""
        self.on_change: Callable[[int], None] = lambda _: None
        """Called with the new worker id when the node moves to another one."""

    def check(self) -> None:
        """Raises ``UNAVAILABLE`` unless this node holds its worker id's lease now."""
        if self._clock() < self._until:
            return
        raise Unavailable(
            f"this node holds no worker id to issue ids with ({self._problem})",
            reason=self._reason,
            hint="publish through another node; this one resumes when it holds a worker id",
        )

    @property
    def held(self) -> bool:
        return self._clock() < self._until

    async def take(self) -> None:
        """Takes a worker id at start. A pinned id in use by another node is a
        :class:`ConfigError`; an unreachable lease server is logged and retried by
        :meth:`renew` (until then, :meth:`check` fails)."""
        try:
            if self._pinned is None and self._shared:
                await self._search()
            elif not await self._acquire(self.worker_id):
                raise ConfigError(
                    f"worker id {self.worker_id} is in use by another node",
                    hint="give every node its own --worker-id (0-1023), or leave it unset "
                    "in cluster mode (each node then leases a free one)",
                )
        except Unavailable as exc:
            self._problem, self._reason = exc.message, exc.reason
            log.error("worker.lease.unavailable: %s", exc.message)

    async def renew(self) -> bool:
        """Renews the lease (or takes a new free id when the old one went to another
        node and this one is not pinned); False when the node holds none afterwards."""
        try:
            if await self._acquire(self.worker_id):
                return True
            self._until = -1.0
            self._problem = f"the lease on worker id {self.worker_id} went to another node"
            self._reason = None
            log.error("worker.lease.lost: %s", self._problem)
            if self._pinned is None and self._shared:
                return await self._search()
        except (Unavailable, ConfigError) as exc:
            self._problem = exc.message
            self._reason = exc.reason if isinstance(exc, Unavailable) else None
            log.error("worker.lease.unavailable: %s", exc.message)
        return False

    async def release(self) -> None:
        self._until = -1.0
        self._problem, self._reason = "it is stopping", None
        try:
            await self._leases.release(worker_id_lease(self.worker_id), self._holder)
        except BrokerError as exc:  # it runs out on its own
            log.warning("worker.lease.release_failed: %s", exc.message)

    async def _acquire(self, worker: int) -> bool:
        sent = self._clock()
        if not await self._leases.acquire(worker_id_lease(worker), self._holder, self._ttl):
            return False
        self._until = sent + self._ttl
        return True

    async def _search(self) -> bool:
        """Takes the first free id from a random start; ConfigError when none is free."""
        count = MAX_WORKER + 1
        start = random.randrange(count)
        for n in range(count):
            worker = (start + n) % count
            if await self._acquire(worker):
                if worker != self.worker_id:
                    self.worker_id = worker
                    self.on_change(worker)
                return True
        self._problem = f"all {count} worker ids are held by other nodes"
        raise ConfigError(
            f"all {count} worker ids are held by other nodes",
            hint="stop nodes that no longer run, or wait for their leases to run out (15 s)",
        )
