"""Publish timeouts that cost one timer per frame and millisecond, not one per call.

``publish(..., timeout=T)`` waited in ``asyncio.wait_for``: a task, a future and a timer per
call, about two thirds of the client's CPU per event. The publishers of one frame whose
deadlines fall in the same millisecond share a :class:`Deadline` instead: one future they all
await and one timer, both ended as soon as the frame is answered. Deadlines are rounded up to
the millisecond, so a publish gives up at most 1 ms after its timeout, never before.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

__all__ = ["Deadline", "SharedWait", "deadline_key", "wait_again"]


class SharedWait(Protocol):
    """A future many waiters await, replaced when a waiter's cancellation cancelled it."""

    future: asyncio.Future[None]

    def over(self) -> bool:
        """Whether waiting has ended for every waiter (answered, failed or expired)."""
        ...


async def wait_again(shared: SharedWait) -> None:
    """After ``await shared.future`` raised CancelledError: re-raise it if this task was
    cancelled, else another waiter was (awaiting a future and being cancelled cancels the
    future for everybody), so wait again on a fresh one until ``shared.over()``."""
    task = asyncio.current_task()
    if task is None or task.cancelling():
        raise asyncio.CancelledError
    while not shared.over():
        if shared.future.cancelled():
            shared.future = shared.future.get_loop().create_future()
        try:
            await shared.future
        except asyncio.CancelledError:
            if task.cancelling():
                raise


def deadline_key(when: float) -> int:
    """The millisecond of loop time ``when``, rounded up: waiters of one key share a timer."""
    return math.ceil(when * 1000.0)


class Deadline:
    """One timer and one future shared by the waiters of a frame whose deadline is ``key``.

    The future completes when the frame is answered (:meth:`settle`) or when the deadline
    passes first, which sets ``expired`` for good: an answer that comes later changes nothing
    for these waiters.
    """

    __slots__ = ("expired", "future", "handle", "settled")

    def __init__(self, loop: asyncio.AbstractEventLoop, key: int) -> None:
        self.expired = False
        self.settled = False
        self.future: asyncio.Future[None] = loop.create_future()
        self.handle = loop.call_at(key / 1000.0, self._expire)

    def _expire(self) -> None:
        if self.settled:
            return
        self.expired = True
        if not self.future.done():
            self.future.set_result(None)

    def settle(self) -> None:
        """The frame has its answer (or failed): wake the waiters and drop the timer."""
        self.settled = True
        self.handle.cancel()
        if not self.future.done():
            self.future.set_result(None)

    def over(self) -> bool:
        return self.settled or self.expired
