"""At-most-once subscriptions.

An ephemeral subscriber whose outbox overflows (more events than its buffer, or more bytes
than ``subscriber_max_bytes``) is cut off with ``RESOURCE_EXHAUSTED`` / ``SLOW_CONSUMER`` (as
NATS does with slow consumers): it never slows the publisher, and a subscriber that never
reads (or a raw HTTP/2 client that never opens its flow-control window: grpc then stops
taking from the outbox) holds at most that many bytes of the broker's memory.
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
        max_bytes: int = 64 << 20,
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
        self._max_bytes = max_bytes
        self.on_slow: Callable[[EphemeralSubscription], None] | None = None

    def offer(self, frames: bytes, count: int, ids: list[int] | None) -> bool:
        box = self.outbox
        if box.closed:
            return False
        if box.buffered + count > self._limit or box.bytes + len(frames) > self._max_bytes:
            box.close(
                ResourceExhausted(
                    f"subscriber fell {box.buffered} events ({box.bytes} bytes) behind, more "
                    f"than its buffer of {self._limit} events or {self._max_bytes} bytes, and "
                    "was disconnected",
                    reason="SLOW_CONSUMER",
                    hint="consume faster, raise max_in_flight, or use a durable subscription",
                    metadata={"buffer": str(self._limit), "max_bytes": str(self._max_bytes)},
                )
            )
            if self.on_slow is not None:
                self.on_slow(self)
            return False
        box.put(frames, count)
        return True
