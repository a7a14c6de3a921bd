"""The most recent committed batches in memory, shared by a node's durable consumers.

A durable consumer takes each commit from memory while it is at the head of the log. One
that falls behind (its subscriber is slower than the publishers for a moment, or it was
busy while a batch committed) reads from here instead of the store as long as it is within
the window: a bytes-free step, no thread hop, and it catches up with the head at once, so
it goes back to taking commits as they come. Only a consumer further behind than the
window reads the store.

The window holds consecutive sequences only: a sequence missing (its publisher's coroutine
never handed it over) empties it, so that a read never skips a batch.

Example::

    recent = RecentCommits()
    recent.add(batch, seq, frames)          # in commit order
    recent.since(seq, limit=64)             # None: older than the window, read the store
"""

from __future__ import annotations

import itertools
from collections import deque

from lockgate.broker.store import Batch

__all__ = ["RecentCommits"]

Commit = tuple[int, Batch, list[tuple[int, bytes]]]
"""A committed batch: its sequence, the batch, and its ``(id, frame)`` pairs."""

_PER_EVENT = 120
"""Bytes a held event costs beyond its frame (the tuple, the int and the bytes header)."""


class RecentCommits:
    """Committed batches with consecutive sequences, newest last, within a memory budget."""

    def __init__(self, budget_bytes: int = 32 << 20, max_batches: int = 4096) -> None:
        self.budget_bytes = budget_bytes
        self.max_batches = max_batches
        self._held: deque[Commit] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._held)

    @property
    def first_seq(self) -> int:
        """The oldest sequence held (0 when empty)."""
        return self._held[0][0] if self._held else 0

    @property
    def last_seq(self) -> int:
        """The newest sequence held (0 when empty)."""
        return self._held[-1][0] if self._held else 0

    def add(self, batch: Batch, seq: int, frames: list[tuple[int, bytes]]) -> None:
        """Holds the batch committed at ``seq`` (called in commit order), dropping the oldest
        beyond the budget."""
        held = self._held
        if held and seq != held[-1][0] + 1:
            held.clear()
            self._bytes = 0
        held.append((seq, batch, frames))
        self._bytes += len(batch.body) + _PER_EVENT * batch.count
        while len(held) > 1 and (self._bytes > self.budget_bytes or len(held) > self.max_batches):
            _, old, _ = held.popleft()
            self._bytes -= len(old.body) + _PER_EVENT * old.count

    def since(self, seq: int, limit: int) -> list[Commit] | None:
        """Up to ``limit`` held batches from sequence ``seq`` on, in commit order: empty when
        none past ``seq`` is held yet, None when ``seq`` is older than the window (or the
        window is empty) and the store must be read."""
        held = self._held
        if not held or seq < held[0][0]:
            return None
        start = seq - held[0][0]
        if start >= len(held):
            return []
        return list(itertools.islice(held, start, start + limit))
