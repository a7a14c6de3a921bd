"""At-most-once subscriptions, and the one rule that judges a slow consumer.

An ephemeral subscriber is judged as NATS judges one: by what waits for it, not by a count of
events. It is cut off with ``RESOURCE_EXHAUSTED`` / ``SLOW_CONSUMER`` when the frames queued for
it would pass its byte budget (``subscriber_max_bytes``), or when frames have waited for
``subscriber_write_deadline`` seconds without its stream taking any (NATS's write deadline). A
reading subscriber takes all the time, so a burst never cuts it however many events it holds
for a moment; one that never reads (or a raw HTTP/2 client that never opens its flow-control
window: grpc then stops taking from the outbox) is cut on the next event after the deadline,
and holds at most the budget meanwhile. The publisher never waits for a subscriber.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from lockgate.broker.auth import Principal
from lockgate.broker.delivery.outbox import Outbox
from lockgate.broker.errors import ResourceExhausted

__all__ = ["EphemeralSubscription"]

_names = itertools.count(1)


class EphemeralSubscription:
    """At-most-once: routed frames go straight to the outbox, while it is not slow."""

    def __init__(
        self,
        org: str,
        pattern: str,
        queue: str,
        max_message_bytes: int,
        max_bytes: int = 64 << 20,
        write_deadline: float = 10.0,
        reader: Principal | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.org = org
        self.reader = reader
        """Who subscribed: routing checks their read permission per subject."""
        self.pattern = pattern
        self.queue = queue
        self.name = f"eph-{next(_names)}"
        self.outbox = Outbox(max_message_bytes, clock)
        self._max_bytes = max_bytes
        self._deadline = write_deadline
        self.on_slow: Callable[[EphemeralSubscription], None] | None = None

    def offer(self, frames: bytes, count: int, ids: list[int] | None) -> bool:
        box = self.outbox
        if box.closed:
            return False
        if box.bytes + len(frames) > self._max_bytes:
            why = f"more than its budget of {self._max_bytes} bytes would wait for it"
        elif box.stalled() > self._deadline:
            why = f"it took nothing for {box.stalled():.1f} s (write deadline {self._deadline:g} s)"
        else:
            box.put(frames, count)
            return True
        box.close(
            ResourceExhausted(
                f"subscriber fell {box.buffered} events ({box.bytes} bytes) behind: {why}; "
                "it was disconnected",
                reason="SLOW_CONSUMER",
                hint="consume faster (Subscription.batches() is the cheapest way), or use a "
                "durable subscription",
                metadata={
                    "max_bytes": str(self._max_bytes),
                    "write_deadline": f"{self._deadline:g}",
                },
            )
        )
        if self.on_slow is not None:
            self.on_slow(self)
        return False
