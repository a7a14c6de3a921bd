"""The write-behind rule of consumer state, shared by every store that writes it behind
(SQLite and PostgreSQL): changes queued between two writes merge into one
:class:`StateChanges` per consumer, and a delivery acked before its row was written cancels
out, so under load most deliveries never touch the disk as rows; only the position moves.

Example::

    ch = StateChanges()
    ch.record(delivered=[41, 42])
    ch.record(drop=[41])            # acked before written: no row, no delete
    assert ch.put == {42: 1} and not ch.drop
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping

from lockgate.broker.store import LogPosition

__all__ = ["ChangeQueue", "StateChanges"]

_log = logging.getLogger("lockgate.store")

Changes = dict[tuple[str, str], "StateChanges"]
"""Every consumer's changes of one write, by (org, name)."""


class StateChanges:
    """Consumer-state changes not yet written, for one consumer."""

    __slots__ = ("drop", "fresh", "position", "put")

    def __init__(self) -> None:
        self.put: dict[int, int] = {}
        """Pending ids to write with their attempts."""
        self.fresh: set[int] = set()
        """Ids first put since the last write: no row exists for them yet."""
        self.drop: set[int] = set()
        """Ids whose rows must go."""
        self.position: tuple[int, int, int] | None = None
        """(seq, id, delivered id) to write, when the position moved."""

    def record(
        self,
        *,
        delivered: Collection[int] = (),
        put: Mapping[int, int] | None = None,
        drop: Collection[int] = (),
        position: LogPosition | None = None,
        delivered_id: int = 0,
    ) -> None:
        """Merges one ``change_consumer`` call (see ``ConsumerStateStore``) into these."""
        for i in delivered:
            if i not in self.drop:
                self.fresh.add(i)
            self.put[i] = 1
        if put:
            for i, attempt in put.items():
                self.drop.discard(i)
                self.put[i] = attempt
        for i in drop:
            self.put.pop(i, None)
            if i in self.fresh:
                self.fresh.discard(i)  # never written: nothing to delete
            else:
                self.drop.add(i)
        if position is not None:
            self.position = (position.seq, position.id, delivered_id)


def _log_failure(fut: asyncio.Future[object]) -> None:
    # Acks on a stream are not awaited by anyone: the failure is logged here, and the
    # deliveries they settled come again after a takeover or restart (at-least-once).
    if not fut.cancelled() and fut.exception() is not None:
        _log.error("store.consumer_state.write_failed: %s", fut.exception())


class ChangeQueue:
    """The changes collecting for a store's next write, and that write's future.

    ``record`` merges a call into its consumer's :class:`StateChanges` and, for the first
    change since the last write, schedules one through ``schedule``: it gets a list that
    :meth:`before_commit` fills with the changes at the moment its transaction starts, so
    the changes made meanwhile go into that write and later ones into the next.
    """

    __slots__ = ("_future", "_taken", "changes")

    def __init__(self) -> None:
        self.changes: Changes = {}
        self._taken: list[Changes] | None = None
        self._future: asyncio.Future[object] | None = None

    def forget(self, org: str, name: str) -> None:
        """Drops a consumer's unwritten changes (it is being rewritten or deleted)."""
        self.changes.pop((org, name), None)

    def record(
        self,
        org: str,
        name: str,
        schedule: Callable[[list[Changes]], asyncio.Future[object]],
        *,
        delivered: Collection[int] = (),
        put: Mapping[int, int] | None = None,
        drop: Collection[int] = (),
        position: LogPosition | None = None,
        delivered_id: int = 0,
    ) -> asyncio.Future[None]:
        """Queues one ``change_consumer`` call; the future of the write that will hold it."""
        ch = self.changes.get((org, name))
        if ch is None:
            ch = self.changes[(org, name)] = StateChanges()
        ch.record(
            delivered=delivered, put=put, drop=drop, position=position, delivered_id=delivered_id
        )
        if self._future is None:
            taken: list[Changes] = []
            self._taken = taken
            self._future = schedule(taken)
            self._future.add_done_callback(_log_failure)
        return self._future  # type: ignore[return-value]

    def before_commit(self) -> None:
        """Called as a write's transaction starts: hands it the changes made until now."""
        if self._taken is not None:
            self._taken.append(self.changes)
            self.changes, self._taken, self._future = {}, None, None
