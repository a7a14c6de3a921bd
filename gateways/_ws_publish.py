"""A WebSocket's publishes, coalesced: the frames that arrive while the broker stores the
previous ones go to it together, one ``publish`` call per run of one subject.

The socket's reader hands each publish to :meth:`PublishCoalescer.add` and reads on; a
flusher task publishes what gathered and answers every publish with its own frame (its ids
and ``duplicate``, or its error), in the order the publishes came. Anything else the socket
asks waits for :meth:`drain` first, so answers keep the order of the frames. Before, each
publish was a broker call of its own and the socket read nothing until it was answered.

Example::

    coalescer = PublishCoalescer(api, key, answer)
    await coalescer.add(ref, "orders.eu", event)   # returns at once while there is room
    await coalescer.drain()                        # every publish so far answered
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from lockgate.broker.api import BrokerAPI, CloudEvent
from lockgate.broker.errors import BrokerError
from lockgate.gateways._cejson import JsonValue

__all__ = ["MAX_PENDING", "MAX_PENDING_BYTES", "PublishCoalescer"]

MAX_PENDING = 1000
"""Publishes a socket may have unanswered; the reader waits (reads nothing) beyond."""

MAX_PENDING_BYTES = 4 << 20
"""Frame bytes a socket may have queued and not yet handed to the broker; the reader waits
beyond. Without it, :data:`MAX_PENDING` frames of up to ``max_frame_bytes`` each (1 MiB)
let one socket hold a gigabyte while the broker is slow."""

Answer = Callable[[JsonValue, "dict[str, JsonValue] | BrokerError"], Awaitable[None]]
"""Sends a publish's answer: its ``ref`` and the ok fields or the error."""


class _Publish(NamedTuple):
    ref: JsonValue
    subject: str
    event: CloudEvent


class PublishCoalescer:
    """One socket's unanswered publishes and the task that publishes them."""

    def __init__(self, api: BrokerAPI, key: str | None, answer: Answer) -> None:
        self._api = api
        self._key = key
        self._answer = answer
        self._pending: list[_Publish] = []
        self._pending_bytes = 0
        self._flusher: asyncio.Task[None] | None = None

    async def add(self, ref: JsonValue, subject: str, event: CloudEvent, size: int = 0) -> None:
        """Queues a publish (``size``: its frame's length); waits while :data:`MAX_PENDING`
        are unanswered or the queue would pass :data:`MAX_PENDING_BYTES`."""
        if len(self._pending) >= MAX_PENDING or (
            self._pending and self._pending_bytes + size > MAX_PENDING_BYTES
        ):
            await self.drain()
        self._pending.append(_Publish(ref, subject, event))
        self._pending_bytes += size
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="ws-publish")

    async def drain(self) -> None:
        """Returns once every publish queued so far is answered."""
        while self._flusher is not None:
            # shielded: a reader cancelled meanwhile must not cut the answers half-way
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        """Stops publishing; what was not published yet is not answered."""
        flusher, self._flusher = self._flusher, None
        self._pending.clear()
        self._pending_bytes = 0
        if flusher is not None:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)

    async def _flush(self) -> None:
        try:
            # One loop turn first: the frames the reader has at hand join this call.
            await asyncio.sleep(0)
            while self._pending:
                batch, self._pending, self._pending_bytes = self._pending, [], 0
                for subject, run in itertools.groupby(batch, key=lambda p: p.subject):
                    await self._publish(subject, list(run))
        finally:
            self._flusher = None

    async def _publish(self, subject: str, run: list[_Publish]) -> None:
        try:
            result = await self._api.publish(self._key, subject, [p.event for p in run])
        except BrokerError as err:
            for p in run:
                await self._answer(p.ref, err)
            return
        errors = dict(result.errors)
        duplicates = set(result.duplicates)
        for pos, p in enumerate(run):
            refused = errors.get(pos)
            if refused is not None:
                await self._answer(p.ref, refused)
            else:
                ids: list[JsonValue] = [str(result.ids[pos])]
                await self._answer(p.ref, {"ids": ids, "duplicate": pos in duplicates})
