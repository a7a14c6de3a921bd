"""Reading a conversation's messages back: from where a member may read, and the newest N.

Example::

    events = await newest(host.read_stored, org, subject, floor_of(rec, agent), 0, 20)
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable

from lockgate.broker.conversations.rules import MAX_PAGE, now_ms
from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.store import ConversationRecord
from lockgate.broker.v1 import broker_pb2

__all__ = ["ReadStored", "floor_of", "newest"]

ReadStored = Callable[
    [str, str, int, int, int], Awaitable[tuple[list[broker_pb2.StoredEvent], int]]
]
"""(org, subject, after_id, start_ms, limit) -> events oldest first, and the cursor (0: the end)."""

# How far back a "last N" read first looks (see newest).
_FIRST_WINDOW_MS = 60_000


def floor_of(rec: ConversationRecord, agent: str) -> int:
    """The id after which the member reads: its join, unless history is open to it."""
    if rec.history_for_new_members:
        return 0
    joined = next(m.joined_ms for m in rec.members if m.agent == agent)
    return max(0, id_for_time_ms(joined) - 1)


async def newest(
    read: ReadStored, org: str, subject: str, floor: int, start_ms: int, n: int
) -> list[broker_pb2.StoredEvent]:
    """The newest ``n`` messages above ``floor``. The log reads oldest first, so the read
    starts a minute back and widens eightfold until it holds ``n`` or reaches the floor:
    its cost follows the recent traffic, not the length of the conversation."""
    window = _FIRST_WINDOW_MS
    while True:
        since = id_for_time_ms(now_ms() - window) - 1
        after = max(floor, since)
        keep: collections.deque[broker_pb2.StoredEvent] = collections.deque(maxlen=n)
        while True:
            page, cursor = await read(org, subject, after, start_ms, MAX_PAGE)
            keep.extend(page)
            if not cursor:
                break
            after = cursor
        if len(keep) >= n or since <= floor:
            return list(keep)
        window *= 8
