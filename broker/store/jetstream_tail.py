"""The JetStream log's commit following: a push consumer tailing the stream moves
``committed_seq`` with every node's commits and hands batches to the followers, and a poll
of the stream's last sequence behind it replaces a tail that lost its way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from lockgate.broker.errors import Unavailable
from lockgate.broker.store import Batch
from lockgate.broker.store.jetstream_stream import JsStream, _Msg, log

__all__ = ["JsTail"]

_POLL_S = 1.0
"""How often the newest stream sequence is read, so that ``committed_seq`` follows other
nodes' commits even when the tail (below) missed them. A reconnect, the usual way the tail
misses some, polls at once; at 250 ms the poll was an eighth of an idle node's CPU."""


class JsTail(JsStream):
    """Follows the stream's commits (``_poll`` is started by the log's open)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._poll_now = asyncio.Event()
        self._tail = ""
        self._tail_lost = False
        self._tail_seq = 0
        """The newest sequence the tail brought (or the stream's when it started)."""
        self._followers: list[Callable[[Batch, int], None]] = []

    def follow_commits(self, listener: Callable[[Batch, int], None]) -> None:
        """Hands ``listener`` every batch the tail receives and its sequence, in stream order
        (called before :meth:`open`, so the tail carries the events)."""
        self._followers.append(listener)

    async def _on_reconnect(self) -> None:
        # What was stored while the connection was down never reached the tail: a new
        # tail, and the stream's last sequence, now rather than at the next poll.
        self._tail_lost = True
        self._poll_now.set()

    async def _start_tail(self) -> None:
        """A push consumer of every batch from now on (headers only when nobody follows):
        other nodes' commits move ``committed_seq`` as they are stored, and reach the
        followers. Replaced when the poll finds it behind (a reconnect, a NATS server
        lost)."""
        if self._tail:
            await self._drop(self._tail)
        made = await self._api(
            f"CONSUMER.CREATE.{self.stream}",
            {
                "stream_name": self.stream,
                "config": {
                    "deliver_policy": "new",
                    "ack_policy": "none",
                    "filter_subject": f"{self.root}.>",
                    "deliver_subject": self._inbox + ".t",
                    "headers_only": not self._followers,
                    "mem_storage": True,
                    "num_replicas": 1,
                    "inactive_threshold": int(10e9),
                },
            },
        )
        self._tail = str(made.get("name", ""))
        self._tail_seq = max(self._tail_seq, self._committed)  # it brings what comes next

    async def _on_tail(self, msg: Any) -> None:
        if not msg.reply:  # heartbeats and flow control carry no reply subject
            return
        try:
            seq = int(msg.metadata.sequence.stream)
        except Exception:  # not a JetStream delivery: nothing to learn from it
            return
        if seq > self._committed:
            self._committed = seq
        if seq > self._tail_seq:
            self._tail_seq = seq
        if self._followers:
            batch = self._decode(_Msg(msg.subject, msg.headers, msg.data, seq, 0))
            if batch is not None:
                for listener in self._followers:
                    listener(batch, seq)

    async def _poll(self) -> None:
        delay = _POLL_S
        seen = 0  # the stream's last sequence at the previous poll
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), delay)
            self._poll_now.clear()
            try:
                last = await self._last_seq()
                self._committed = max(self._committed, last)
                # A tail that has not brought, a whole poll later, what the stream held at
                # the previous poll has lost its way: a new one.
                if seen > self._tail_seq or not self._tail or self._tail_lost:
                    self._tail_lost = False
                    await self._start_tail()
                seen = last
                delay = _POLL_S
            except Unavailable as exc:
                log.warning("store.jetstream.poll: %s", exc)
                delay = min(delay * 2, 2.0)
