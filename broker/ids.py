"""Snowflake-style 64-bit ids: time-ordered, unique across nodes, safe when the clock steps back.

Layout (most significant first): 41 bits of milliseconds since 2024-01-01 UTC (69 years),
10 bits of worker id (0-1023, one per broker node), 12 bits of sequence (4096 ids per
millisecond per worker). When the wall clock steps back, the generator keeps issuing ids
from the last millisecond it used (borrowing sequence space, then the next millisecond), so
ids never repeat and never go backwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["EPOCH_MS", "MAX_ID", "IdGenerator", "id_for_time_ms", "parse_decimal", "time_ms_of"]

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_WORKER_BITS = 10
_SEQ_BITS = 12
_TIME_SHIFT = _WORKER_BITS + _SEQ_BITS
_SEQ_MASK = (1 << _SEQ_BITS) - 1
MAX_WORKER = (1 << _WORKER_BITS) - 1
MAX_ID = (1 << 63) - 1
"""The largest id (41 + 10 + 12 bits; the stores hold signed 64-bit integers)."""


def parse_decimal(text: str, hi: int) -> int | None:
    """``text`` as a number from 0 to ``hi`` when it is ASCII digits only, else None.

    ``str.isdigit`` alone lets "²" (which ``int`` refuses) and other scripts' digits through,
    and ``int`` refuses more than 4,300 digits: callers got ``ValueError`` where they meant
    to answer INVALID_ARGUMENT.

    >>> parse_decimal("42", 100), parse_decimal("²", 100), parse_decimal("101", 100)
    (42, None, None)
    """
    if not text.isascii() or not text.isdigit() or len(text) > len(str(hi)):
        return None
    value = int(text)
    return value if value <= hi else None


def time_ms_of(event_id: int) -> int:
    """The unix milliseconds at which ``event_id`` was assigned."""
    return (event_id >> _TIME_SHIFT) + EPOCH_MS


def id_for_time_ms(unix_ms: int) -> int:
    """The smallest id that could be assigned at ``unix_ms`` (for time-range queries);
    :data:`MAX_ID` for a time after the id space ends (2093)."""
    return min(MAX_ID, max(0, unix_ms - EPOCH_MS) << _TIME_SHIFT)


class IdGenerator:
    """Issues ids for one worker; not thread-safe (the broker calls it from its event loop)."""

    __slots__ = ("_clock", "_guard", "_last_ms", "_seq", "_worker")

    def __init__(
        self,
        worker_id: int = 0,
        *,
        clock: Callable[[], float] | None = None,
        floor: int = 0,
        guard: Callable[[], None] | None = None,
    ) -> None:
        if not 0 <= worker_id <= MAX_WORKER:
            raise ValueError(f"worker id {worker_id} is outside 0..{MAX_WORKER}")
        self._worker = worker_id << _SEQ_BITS
        # ``guard``: raises when the worker id may not be used now (its lease is not held).
        self._guard = guard
        self._clock = clock or time.time
        # ``floor``: the highest id already stored, so a restart after the clock stepped back
        # still issues larger ids.
        self._last_ms = max(0, (floor >> _TIME_SHIFT)) if floor else 0
        self._seq = _SEQ_MASK if floor else -1

    def next_block(self, count: int) -> list[int]:
        """``count`` consecutive-in-order ids (the publish path takes one block per batch)."""
        if self._guard is not None:
            self._guard()
        out: list[int] = []
        now_ms = int(self._clock() * 1000) - EPOCH_MS
        last = self._last_ms
        seq = self._seq
        if now_ms > last:
            last, seq = now_ms, -1
        worker = self._worker
        while count:
            room = _SEQ_MASK - seq
            if room <= 0:
                last += 1  # borrow the next millisecond rather than wait or repeat
                seq = -1
                room = _SEQ_MASK + 1
            take = room if room < count else count
            base = (last << _TIME_SHIFT) | worker
            out.extend(range(base + seq + 1, base + seq + 1 + take))
            seq += take
            count -= take
        self._last_ms, self._seq = last, seq
        return out

    def next(self) -> int:
        return self.next_block(1)[0]
