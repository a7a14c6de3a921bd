"""The pending table of one durable consumer: delivered, unacknowledged events and their state.

States of one pending id: *in flight* (held by a session until its deadline), *waiting*
(nacked with a delay: a deadline, no session), *due* (queued for redelivery, deadline 0).
A deadline that passes makes it due; the consumer redelivers due ids, with the ack wait
doubling per attempt (capped at 32x), and dead-letters those past ``max_deliveries``.
Only memory here: the consumer records each change in the store.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Holder", "Pending", "PendingTable", "backoff_factor"]


class Holder(Protocol):
    """What holds in-flight deliveries (a durable session): it counts them."""

    in_flight: int


@dataclass(slots=True)
class Pending:
    attempt: int
    deadline: float
    """When an in-flight delivery (or a nack's delay) runs out; 0.0 while due."""
    frame: bytes | None
    """The stored delivery frame, kept for a redelivery (None after a restart)."""
    session: Holder | None


def backoff_factor(attempt: int, most: int = 32) -> int:
    """How many ack waits delivery ``attempt`` may stay unacked: 1, 2, 4, ... up to ``most``
    (32 by default; the config store's ``backoff``)."""
    return min(1 << max(0, min(attempt - 1, 16)), max(1, most))


class PendingTable:
    """Pending ids in delivery order, and the queue of those due again."""

    def __init__(self, attempts: Mapping[int, int]) -> None:
        # After a restart nothing is in flight: every pending id is due again.
        self.entries: dict[int, Pending] = {
            i: Pending(a, 0.0, None, None) for i, a in attempts.items()
        }
        self.due: deque[int] = deque(sorted(attempts))
        self.bytes = 0
        """Bytes of the frames held for redelivery (what ``max_in_flight_bytes`` bounds)."""

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.entries

    def __iter__(self) -> Iterator[int]:
        return iter(self.entries)

    def missing(self, ids: list[int]) -> list[int]:
        return [i for i in ids if i not in self.entries]

    def hand_out(self, event_id: int, frame: bytes, holder: Holder, deadline: float) -> bool:
        """A first delivery; False (nothing done) when the id is already pending."""
        if event_id in self.entries:
            return False
        self.entries[event_id] = Pending(1, deadline, frame, holder)
        self.bytes += len(frame)
        return True

    def settle(self, ids: list[int]) -> list[Pending]:
        """Removes ``ids`` (acked or dead-lettered) and frees their holders."""
        out = []
        for i in ids:
            p = self.entries.pop(i)
            if p.session is not None:
                p.session.in_flight -= 1
            if p.frame is not None:
                self.bytes -= len(p.frame)
            out.append(p)
        return out

    def _free(self, p: Pending) -> None:
        if p.session is not None:
            p.session.in_flight -= 1
            p.session = None

    def nack(self, ids: list[int], delay: float, now: float) -> None:
        """Due at once (``delay`` <= 0) or waiting until ``now + delay``."""
        for i in ids:
            p = self.entries[i]
            self._free(p)
            if delay <= 0:
                p.deadline = 0.0
                self.due.append(i)
            else:
                p.deadline = now + delay

    def stop_clocks(self, ids: list[int]) -> None:
        """Frees ``ids`` from their holders and deadlines (before a dead letter)."""
        for i in ids:
            p = self.entries[i]
            self._free(p)
            p.deadline = 0.0

    def release(self, holder: Holder, *, keep: bool) -> None:
        """``holder`` went away: what it held is due now, or with ``keep`` (a poll) waits
        for its deadline."""
        for i, p in self.entries.items():
            if p.session is holder:
                p.session = None
                if not keep:
                    p.deadline = 0.0
                    self.due.append(i)

    def restore(self, ids: list[int]) -> dict[int, int]:
        """Dead-lettered ``ids`` come back pending and due, at attempt 0; returns them."""
        back = {i: 0 for i in ids if i not in self.entries}
        for i in back:
            self.entries[i] = Pending(0, 0.0, None, None)
            self.due.append(i)
        return back

    def expire(self, now: float) -> bool:
        """Makes ids whose deadline passed due again; whether there were any."""
        found = False
        for i, p in self.entries.items():
            if p.deadline and p.deadline <= now:
                self._free(p)
                p.deadline = 0.0
                self.due.append(i)
                found = True
        return found

    def next_due(self) -> tuple[int, Pending] | None:
        """The next id due for redelivery (skipping ids acked or handed out meanwhile)."""
        while self.due:
            i = self.due.popleft()
            p = self.entries.get(i)
            if p is not None and p.session is None and not p.deadline:
                return i, p
        return None

    def redeliver(
        self, p: Pending, frame: bytes, holder: Holder, now: float, wait: float, most: int = 32
    ) -> None:
        """Hands ``p`` out again: the next attempt, with the backed-off deadline (at most
        ``most`` ack waits)."""
        p.attempt += 1
        if p.frame is None:
            self.bytes += len(frame)
        p.frame = frame
        p.session = holder
        p.deadline = now + wait * backoff_factor(p.attempt, most)
        holder.in_flight += 1
