"""At-most-once subscriptions.

An ephemeral subscriber whose outbox overflows is cut off with ``RESOURCE_EXHAUSTED`` /
``SLOW_CONSUMER`` (as NATS does with slow consumers): it never slows the publisher.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from lockgate.broker.auth import Principal
from lockgate.broker.delivery.outbox import Outbox
from lockgate.broker.errors import ResourceExhausted

__all__ = ["EphemeralSubscription"]

_names = itertools.count(1)


class EphemeralSubscription:
    """At-most-once: routed frames go straight to the outbox, up to ``buffer`` events."""

    def __init__(
        self,
        org: str,
        pattern: str,
        queue: str,
        buffer: int,
        max_message_bytes: int,
        reader: Principal | None = None,
    ) -> None:
        self.org = org
        self.reader = reader
        """Who subscribed: routing checks their read permission per subject."""
        self.pattern = pattern
        self.queue = queue
        self.name = f"eph-{next(_names)}"
        self.outbox = Outbox(max_message_bytes)
        self._limit = buffer
        self.on_slow: Callable[[EphemeralSubscription], None] | None = None

    def offer(self, frames: bytes, count: int, ids: list[int] | None) -> bool:
        if self.outbox.closed:
            return False
        if self.outbox.buffered + count > self._limit:
            self.outbox.close(
                ResourceExhausted(
                    f"subscriber fell {self.outbox.buffered} events behind, more than its buffer "
                    f"of {self._limit}, and was disconnected",
                    reason="SLOW_CONSUMER",
                    hint="consume faster, raise max_in_flight, or use a durable subscription",
                )
            )
            if self.on_slow is not None:
                self.on_slow(self)
            return False
        self.outbox.put(frames, count)
        return True
