"""Large publishes in slices: one HTTP batch may hold 100,000 events, more than one gRPC
message may carry (``max_message_bytes``, 1 MiB by default) and more than the event loop
should process at one go (a single 100,000-event batch held it for over a second).

:func:`by_count` and :func:`by_bytes` cut a batch into slices; :func:`publish_in_slices`
publishes them one after the other and puts the per-event outcomes back in the batch's order.

Example::

    result = await publish_in_slices(lambda evs: api.publish(key, subject, evs),
                                     events, by_count(len(events), 1000))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from lockgate.broker.api import CloudEvent, PublishResult
from lockgate.broker.errors import BrokerError, InvalidArgument, Reason

__all__ = [
    "FRAMING",
    "SLICE_EVENTS",
    "MessageTooLarge",
    "by_bytes",
    "by_count",
    "by_sizes",
    "publish_in_slices",
]

E = TypeVar("E", CloudEvent, bytes)
"""An event as a message or as its wire bytes."""

SLICE_EVENTS = 1000
"""Events per slice of an HTTP batch (a few milliseconds of the broker's loop each)."""
FRAMING = 6
"""A repeated field's tag and length prefix, at most: an event's bytes in a request."""


class MessageTooLarge(InvalidArgument):
    """An event that no gRPC message to the broker can carry (``max_message_bytes``)."""

    default_reason: str = Reason.EVENT_TOO_LARGE

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"event of {size} bytes exceeds the broker's max_message_bytes of {limit} bytes",
            hint="split the payload (or raise max_message_bytes on the broker, and give the "
            "gateway the same: LOCKGATE_MAX_MESSAGE_BYTES or its --config)",
            metadata={"size": str(size), "limit": str(limit)},
        )


def by_count(n: int, size: int = SLICE_EVENTS) -> list[range]:
    """Positions ``0..n-1`` in slices of at most ``size``."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def by_bytes(
    events: Sequence[CloudEvent], budget: int
) -> tuple[list[list[int]], list[tuple[int, BrokerError]]]:
    """Positions in slices whose events serialize to at most ``budget`` bytes together, and
    the events that alone exceed it (refused with :class:`MessageTooLarge`)."""
    return by_sizes([ev.ByteSize() for ev in events], budget)


def by_sizes(
    sizes: Sequence[int], budget: int
) -> tuple[list[list[int]], list[tuple[int, BrokerError]]]:
    """:func:`by_bytes` for events of serialised ``sizes``."""
    slices: list[list[int]] = []
    too_large: list[tuple[int, BrokerError]] = []
    current: list[int] = []
    size = 0
    for i, serialized in enumerate(sizes):
        n = serialized + FRAMING
        if n > budget:
            too_large.append((i, MessageTooLarge(n, budget)))
            continue
        if current and size + n > budget:
            slices.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        slices.append(current)
    return slices, too_large


async def publish_in_slices(
    publish: Callable[[list[E]], Awaitable[PublishResult]],
    events: Sequence[E],
    slices: Iterable[Sequence[int]],
    refused: Sequence[tuple[int, BrokerError]] = (),
) -> PublishResult:
    """Publishes ``events`` slice by slice; the result is in the order of ``events``, with
    ``refused`` (events never sent) among the errors. A whole-call error (unauthenticated,
    unavailable) raises when no event was stored yet; after that it becomes the error of
    every event not yet published, so the caller still learns which ones were stored."""
    ids = [0] * len(events)
    duplicates: list[int] = []
    errors: list[tuple[int, BrokerError]] = list(refused)
    stored = False
    pending = list(slices)
    for n, positions in enumerate(pending):
        try:
            result = await publish([events[i] for i in positions])
        except BrokerError as err:
            if not stored:
                raise
            errors.extend((i, err) for rest in pending[n:] for i in rest)
            break
        for pos, event_id in enumerate(result.ids):
            ids[positions[pos]] = event_id
            stored = stored or bool(event_id)
        duplicates.extend(positions[pos] for pos in result.duplicates)
        errors.extend((positions[pos], err) for pos, err in result.errors)
    errors.sort(key=lambda e: e[0])
    return PublishResult(ids, sorted(duplicates), errors)
