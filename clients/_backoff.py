"""Exponential backoff with jitter: the one rule for reconnect and retry loops.

The client's publish and subscribe streams and the gateways' ingest loops wait with it between
attempts (a gRPC channel's own reconnects are configured in ``clients._channel``).

Example::

    backoff = Backoff()
    while True:
        try:
            await work()
            backoff.reset()
        except ConnectionError:
            await backoff.sleep()
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(
    attempt: int, *, initial: float = 0.1, maximum: float = 2.0, jitter: float = 0.5
) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): ``initial`` doubled per attempt up
    to ``maximum``, times a random factor in ``[1 - jitter, 1 + jitter]`` so that many clients
    that lost one broker do not come back in step.

    >>> backoff_delay(1, jitter=0), backoff_delay(3, jitter=0), backoff_delay(99, jitter=0)
    (0.1, 0.4, 2.0)
    """
    base = min(maximum, initial * 2.0 ** min(max(attempt, 1) - 1, 62))
    return base * (1.0 - jitter + 2.0 * jitter * random.random())


@dataclass(slots=True)
class Backoff:
    """Counts consecutive failures and says how long to wait after the next one."""

    initial: float = 0.1
    maximum: float = 2.0
    jitter: float = 0.5
    failures: int = 0

    def next_delay(self) -> float:
        """Count one more failure and return the delay before the next attempt."""
        self.failures += 1
        return backoff_delay(
            self.failures, initial=self.initial, maximum=self.maximum, jitter=self.jitter
        )

    async def sleep(self) -> float:
        """Count a failure and sleep its delay; returns the seconds slept."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        """An attempt worked: the next failure starts from ``initial`` again."""
        self.failures = 0
