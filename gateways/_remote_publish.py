"""Encoded events to a remote broker on long-lived ``Publish`` streams (``RemoteAPI``'s
``publish_encoded``, the ingest gateways' path).

One stream per API key, run by the client's :class:`~clients._publisher.Publisher`: frames are
written on a stream that stays open, several in flight (its window), answered in order, and
resent with the same event ids after the stream breaks (the broker's dedup window stores them
once). Opening a ``Publish`` call per batch, as :meth:`RemoteAPI.publish` does, cost about
1.2 µs per event of a 500-event batch in grpc's call setup alone.

A broken stream is retried (on the next target, with several) for ``FAILOVER_SECONDS``; what
is still unanswered then fails with UNAVAILABLE, as a publish call would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from lockgate.broker import errors as be
from lockgate.broker.api import PublishResult
from lockgate.clients._errors import LockgateError, error_for_reason
from lockgate.clients._publisher import Publisher
from lockgate.clients._wire import entry
from lockgate.gateways._slices import FRAMING, MessageTooLarge

__all__ = ["EncodedPublishers"]

_SUBJECT_BYTES = 4 * 256
"""The most a subject of MAX_SUBJECT_LENGTH (policy.subjects) characters takes in UTF-8."""


class EncodedPublishers:
    """The ``Publish`` streams of one ``RemoteAPI``, by API key."""

    def __init__(
        self,
        open_call: Callable[[str | None], tuple[Callable[[], Any], Callable[[], None]]],
        *,
        max_message_bytes: int,
        overhead: int,
        timeout: float,
        to_broker_error: Callable[[LockgateError], be.BrokerError],
    ) -> None:
        """``open_call(key)`` gives the opener of a ``Publish`` stream call for ``key`` (on the
        current target, writing bytes) and the report that its connection broke."""
        self._open_call = open_call
        self.max_message_bytes = max_message_bytes
        self._overhead = overhead
        self._timeout = timeout
        self._to_broker_error = to_broker_error
        self._publishers: dict[str | None, Publisher] = {}

    def _publisher(self, key: str | None) -> Publisher:
        publisher = self._publishers.get(key)
        if publisher is None:
            opener, broken = self._open_call(key)
            publisher = self._publishers[key] = Publisher(
                opener,
                publish_timeout=self._timeout,
                max_frame_bytes=max(self.max_message_bytes - _SUBJECT_BYTES - self._overhead, 1),
                on_broken=broken,
            )
        return publisher

    async def publish(
        self, key: str | None, subject: str, events: Sequence[bytes]
    ) -> PublishResult:
        """Publishes ``events`` (``CloudEvent`` wire bytes) in frames under the broker's
        ``max_message_bytes``; an event that alone exceeds it is refused (EVENT_TOO_LARGE)
        and never sent. Outcomes are by position; a stream error raises when nothing was
        stored yet, else it becomes the error of each event of the frames it failed."""
        publisher = self._publisher(key)
        budget = self.max_message_bytes - len(subject.encode()) - self._overhead
        errors: list[tuple[int, be.BrokerError]] = []
        sent: list[int] = []  # the positions of the events in frames, in order
        for i, raw in enumerate(events):
            n = len(raw) + FRAMING
            if n > budget:
                errors.append((i, MessageTooLarge(n, budget)))
            else:
                sent.append(i)
        await publisher.room()
        entries = [entry(events[i]) for i in sent]
        batches = publisher.queue(subject, entries)
        ids = [0] * len(events)
        duplicates: list[int] = []
        failure: be.BrokerError | None = None
        at = 0
        for batch in batches:
            positions = sent[at : at + len(batch)]
            at += len(batch)
            try:
                try:
                    await batch.future
                except asyncio.CancelledError:
                    await batch.rewait()
            except LockgateError as exc:
                failure = self._to_broker_error(exc)
                errors.extend((i, failure) for i in positions)
                continue
            if not batch.errors:
                for i, event_id in zip(positions, batch.ids, strict=False):
                    ids[i] = event_id
            for pos, i in enumerate(positions if batch.errors else ()):
                rejected = batch.errors.get(pos)
                if rejected is not None:
                    err = error_for_reason(rejected.reason, rejected.message)
                    errors.append((i, self._to_broker_error(err)))
                    continue
                ids[i] = batch.ids[pos]
            duplicates.extend(positions[pos] for pos in sorted(batch.duplicates))
        if failure is not None and not any(ids):
            raise failure
        errors.sort(key=lambda e: e[0])
        return PublishResult(ids, duplicates, errors)

    async def close(self) -> None:
        publishers, self._publishers = list(self._publishers.values()), {}
        for publisher in publishers:
            await publisher.close(timeout=0)
