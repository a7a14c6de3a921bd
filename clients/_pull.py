"""Acks for fetched (polled) deliveries: coalesced into ``Acknowledge`` calls per durable."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence

from lockgate.clients._errors import LockgateError
from lockgate.clients._message import Message

__all__ = ["PullAcker"]

log = logging.getLogger("lockgate.client")

Delay = float | dt.timedelta | None
AcknowledgeFn = Callable[[str, Sequence[int], Sequence[int], Delay], Awaitable[None]]
ReplyFn = Callable[[str, object, Message], Awaitable[int]]


class PullAcker:
    """Collects the acks and nacks of fetched messages and sends them in one call per loop turn.

    Errors are logged, not raised: an event whose ack is lost is redelivered after the ack wait.
    Use ``Client.acknowledge`` to ack and see the broker's answer.
    """

    def __init__(self, durable: str, acknowledge: AcknowledgeFn, reply: ReplyFn) -> None:
        self.durable = durable
        self._acknowledge = acknowledge
        self._reply = reply
        self._acks: list[int] = []
        self._nacks: dict[Delay, list[int]] = {}
        self._task: asyncio.Task[None] | None = None

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    def _ack(self, id: int) -> None:
        self._acks.append(id)
        self._schedule()

    def _ack_many(self, ids: list[int]) -> None:
        self._acks.extend(ids)
        self._schedule()

    def _nack(self, id: int, delay: float | dt.timedelta | None) -> None:
        self._nacks.setdefault(delay, []).append(id)
        self._schedule()

    def _nack_many(self, ids: list[int], delay: float | dt.timedelta | None) -> None:
        self._nacks.setdefault(delay, []).extend(ids)
        self._schedule()

    async def _respond(self, reply_to: str, data: object, request: Message) -> int:
        return await self._reply(reply_to, data, request)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # gather every ack of this loop turn
        acks, self._acks = self._acks, []
        nacks, self._nacks = self._nacks, {}
        try:
            if acks:
                await self._acknowledge(self.durable, acks, (), None)
            for delay, ids in nacks.items():
                await self._acknowledge(self.durable, (), ids, delay)
        except LockgateError as exc:
            log.warning(
                "client.fetch.acks_unsent: acks for durable %s were not sent: %s", self.durable, exc
            )

    async def flush(self) -> None:
        """Wait until the queued acks and nacks were sent."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
