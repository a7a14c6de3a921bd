"""The JetStream log's append path: one writer task sends batches in call order without
waiting for acks; the acks, arriving in order, settle the calls in call order, and a batch
not acknowledged within ``timeout`` fails with STORE_UNAVAILABLE."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lockgate.broker.backbone.logformat import encode_batch
from lockgate.broker.errors import BrokerError, InvalidArgument, Unavailable
from lockgate.broker.store import Batch
from lockgate.broker.store.jetstream_stream import JsStream, _unavailable
from lockgate.broker.v1.reasons import Reason

__all__ = ["JsAppender"]

_HEADER_ROOM = 1024
"""Bytes of a log message's max_payload kept for its headers."""


@dataclass(slots=True)
class _Append:
    future: asyncio.Future[list[int]]
    seqs: list[int]
    left: int
    error: BrokerError | None = None
    ids: list[int] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class JsAppender(JsStream):
    """Appends to the stream (``_writer`` and ``_on_ack`` are started by the log's open)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._queue: deque[_Append] = deque()
        self._waiting: dict[int, tuple[_Append, int]] = {}
        self._outbox: deque[list[tuple[int, str, dict[str, str], bytes]]] = deque()
        self._wake = asyncio.Event()
        self._numbers = itertools.count(1)

    def append(self, batches: Sequence[Batch]) -> asyncio.Future[list[int]]:
        """Queues ``batches`` now, in call order; the future gives their stream sequences
        once JetStream has stored them all (STORE_UNAVAILABLE when one failed or timed out)."""
        loop = asyncio.get_running_loop()
        entry = _Append(loop.create_future(), [0] * len(batches), len(batches))
        self._queue.append(entry)
        if self._nc is None:
            entry.error = _unavailable("store a batch", "the log is not open")
            self._settle()
            return entry.future
        msgs = []
        room = self._nc.max_payload - _HEADER_ROOM
        for batch in batches:
            if len(batch.body) > room:
                # Not retryable: the same batch never fits (a NATS server's max_payload is
                # 1 MiB unless configured; a publish frame near max_message_bytes needs more).
                entry.error = InvalidArgument(
                    f"a batch of {len(batch.body)} bytes is larger than the NATS server's "
                    f"max_payload of {self._nc.max_payload} bytes",
                    reason=Reason.EVENT_TOO_LARGE,
                    hint="publish smaller frames, or raise max_payload in the NATS server's "
                    "configuration (8MB is usual) above max_message_bytes",
                    metadata={"size": str(len(batch.body)), "limit": str(room)},
                )
                self._settle()
                return entry.future
        for n, batch in enumerate(batches):
            number = next(self._numbers)
            self._waiting[number] = (entry, n)
            entry.ids.append(number)
            msgs.append((number, *encode_batch(batch, prefix=self.root)))
        if msgs:
            self._outbox.append(msgs)
            self._wake.set()
            entry.timer = loop.call_later(self.timeout, self._expire, entry)
        else:
            self._settle()
        return entry.future

    async def _writer(self) -> None:
        """Sends queued messages in call order, without waiting for their acks."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                for number, subject, headers, body in self._outbox.popleft():
                    waiting = self._waiting.get(number)
                    if waiting is None:
                        continue  # its call failed already (timed out)
                    try:
                        await self._nc.publish(
                            subject, body, reply=f"{self._inbox}.a.{number}", headers=headers
                        )
                    except Exception as exc:
                        self._fail(waiting[0], _unavailable("send a batch", exc))

    async def _on_ack(self, msg: Any) -> None:
        number = int(msg.subject.rpartition(".")[2])
        waiting = self._waiting.pop(number, None)
        if waiting is None:
            return
        entry, n = waiting
        status = (msg.headers or {}).get("Status")
        if status:  # 503: no stream takes these subjects (or none has a leader now)
            reason = f"no JetStream stream answered (status {status})"
            self._fail(entry, _unavailable("store a batch", reason))
            return
        try:
            ack = json.loads(msg.data)
        except ValueError:
            ack = {"error": {"description": "an unreadable acknowledgement"}}
        if "error" in ack or "seq" not in ack:
            error = ack.get("error", {}).get("description", "no sequence")
            self._fail(entry, _unavailable("store a batch", error))
            return
        seq = int(ack["seq"])
        entry.seqs[n] = seq
        if seq > self._committed:
            self._committed = seq
        entry.left -= 1
        if entry.left == 0:
            self._settle()

    def _fail(self, entry: _Append, error: Unavailable) -> None:
        if entry.error is None:
            entry.error = error
        for number in entry.ids:
            self._waiting.pop(number, None)
        self._settle()

    def _expire(self, entry: _Append) -> None:
        if entry.left and entry.error is None:
            waited = f"no acknowledgement within {self.timeout:g} s"
            self._fail(entry, _unavailable("store a batch", waited))

    def _settle(self) -> None:
        """Completes finished calls from the oldest, so callers hear in call order."""
        queue = self._queue
        while queue and (queue[0].left == 0 or queue[0].error is not None):
            entry = queue.popleft()
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.future.done():
                continue
            if entry.error is not None:
                entry.future.set_exception(entry.error)
            else:
                entry.future.set_result(entry.seqs)
