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

from collections.abc import Collection, Mapping

from lockgate.broker.store import LogPosition

__all__ = ["StateChanges"]


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
