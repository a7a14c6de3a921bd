"""The cluster's log: a NATS JetStream stream, one message per stored batch.

``JetStreamLog`` is the tailing part of :class:`broker.store.EventLog` (append, the commit
sequence, reads in commit order, start positions, retention). History queries by id
(``read_batches``, ``scan_batches``, ``batch_containing``) are the message logger's, served
from PostgreSQL; the cluster store puts the two together.

- **append**: each batch is one message on ``<root>.<org>.<subject>`` (the format is
  ``broker.backbone.logformat``), ``Nats-Msg-Id`` its first id, so a retried batch is stored
  once. One writer task sends in call order and never waits for an ack before sending the
  next message: many batches are in flight, and the acks, arriving in order, settle the
  calls in call order. A batch whose ack does not come within ``timeout`` (NATS down, no
  stream leader) fails with STORE_UNAVAILABLE: it is never acknowledged unstored. The
  stream's sequence is ``Batch.seq``.
- **reads** create a short-lived pull consumer (no acks, in memory) filtered server-side by
  org, and by the subscription's pattern when the caller names it, and pull bounded steps.
- **committed_seq** follows every node's commits: its own acks, a push consumer tailing the
  stream, and a poll of the stream's last sequence every second behind it (at once after a
  reconnect, when the tail is replaced).
- **follow_commits**: the tail hands every batch it receives, with its events, to the listeners
  in stream order: a node's durable consumers take every node's commits from
  memory as they are stored, rather than each reading the log back through a consumer of
  its own per step. Without listeners the tail carries headers only. A batch the tail
  missed (a slow connection, the tail replaced) is a gap in the sequences the listeners
  see; they read what they missed from the log.
- **retention**: the stream's ``max_age`` is the longest rule's when a ``>`` rule bounds
  every subject; narrower rules purge per subject by filter.

The parts are modules with one job each: ``jetstream_stream`` (the stream and its API),
``jetstream_append``, ``jetstream_tail`` (commit following), ``jetstream_reads`` and
``jetstream_retention``; this module puts them together and runs the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from lockgate.broker.backbone.logformat import LOG_PREFIX
from lockgate.broker.config import redact_url
from lockgate.broker.errors import Unavailable
from lockgate.broker.store.jetstream_append import JsAppender
from lockgate.broker.store.jetstream_reads import JsReads
from lockgate.broker.store.jetstream_retention import (
    JsRetention,
    events_past_age,
    events_past_count,
)
from lockgate.broker.store.jetstream_stream import _unavailable, log
from lockgate.broker.store.jetstream_tail import JsTail

__all__ = ["JetStreamLog", "events_past_age", "events_past_count"]


class JetStreamLog(JsAppender, JsTail, JsReads, JsRetention):
    """The log on a JetStream stream (see the module docstring).

    Example::

        log = JetStreamLog("nats://127.0.0.1:4222", stream="LOCKGATE_LOG", replicas=3)
        await log.open()
        (seq,) = await log.append([batch])
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = "LOCKGATE_LOG",
        root: str = LOG_PREFIX,
        replicas: int = 1,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(url, stream=stream, root=root, replicas=replicas, timeout=timeout)
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle -------------------------------------------------------------------------

    @property
    def nc(self) -> Any:
        """The NATS connection (open): the message logger shares it."""
        return self._nc

    async def open(self) -> None:
        from nats.aio.client import Client

        nc = Client()
        try:
            # nats-py retries a first connect for ever with max_reconnect_attempts=-1:
            # the whole opening is bounded, as the backbone's is.
            await asyncio.wait_for(
                nc.connect(
                    servers=self.url.split(","),
                    name=f"lockgate-log-{self.stream}",
                    connect_timeout=max(1, int(self.timeout)),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect,
                ),
                self.timeout,
            )
        except Exception as exc:  # nats raises several kinds (OSError, NoServersError)
            with contextlib.suppress(Exception):
                await nc.close()
            shown = redact_url(self.url, user_is_secret=True)
            raise _unavailable(f"connect to {shown}", exc) from exc
        self._nc = nc
        self._inbox = self._nc.new_inbox()
        await self._nc.subscribe(self._inbox + ".a.*", cb=self._on_ack)
        await self._nc.subscribe(self._inbox + ".t", cb=self._on_tail)
        # A NATS cluster that has just started answers JetStream requests once it has
        # elected its meta leader: nodes started with it wait a little.
        deadline = asyncio.get_running_loop().time() + max(self.timeout, 15.0)
        while True:
            try:
                await self._ensure_stream()
                break
            except Unavailable as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.info("store.jetstream.waiting: %s", exc)
                await asyncio.sleep(0.25)
        self._committed = max(self._committed, await self._last_seq())
        with contextlib.suppress(Unavailable):  # the poll retries it
            await self._start_tail()
        self._tasks = [
            asyncio.create_task(self._writer(), name="jetstream-log-writer"),
            asyncio.create_task(self._poll(), name="jetstream-log-poll"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for entry in list(self._queue):
            if entry.error is None and entry.left:
                entry.error = _unavailable("store a batch", "the log was closed")
        self._settle()
        if self._nc is not None and self._tail:
            await self._drop(self._tail)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    async def _on_error(self, exc: Exception) -> None:
        log.warning("store.jetstream.error: %s", exc)

    async def _on_disconnect(self) -> None:
        if self._tasks:  # not at close
            log.warning(
                "store.jetstream.disconnected from %s", redact_url(self.url, user_is_secret=True)
            )
