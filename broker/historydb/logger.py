"""The message logger: copies the cluster log (JetStream) into PostgreSQL, one row per event.

Every node runs one :class:`MessageLogger`; they share the durable pull consumer
``lockgate-logger``, so JetStream hands each batch message to one of them. A logger fetches
messages, decodes them into rows (``broker.historydb.rows``), writes them in one transaction
(``broker.historydb.writer``: COPY, then INSERT ... ON CONFLICT DO NOTHING) and acks the
messages only after the commit. PostgreSQL down: the write is retried with backoff (the
messages are kept in progress meanwhile, so JetStream does not hand them to another logger),
nothing is acked, and publishing is not affected (the logger is off the publish path). A
logger that dies before its ack leaves its messages to be handed out again after the ack
wait; the rows they hold are already there or not, never twice.

A message that is not a batch (a foreign publisher on the log's subjects, a damaged body) is
logged and terminated: retrying it would block the logger for ever.

The lag is the number of log messages (batches) stored but not yet logged: the stream's last
sequence minus the consumer's ack floor, refreshed every ``lag_interval`` seconds, and every
``_IDLE_ROUNDS`` intervals while it is 0 and this logger fetches nothing (an idle node made
two JetStream requests a second for a lag of 0; its next fetch refreshes it at once).

Example::

    logger = MessageLogger(nc, pool)
    await logger.start()
    ...
    print(logger.lag)
    await logger.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

import asyncpg
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from lockgate.broker.backbone.logformat import LOG_PREFIX, LOG_STREAM, BadLogMessage, decode_batch
from lockgate.broker.errors import BrokerError
from lockgate.broker.historydb.rows import BadBatch, EventRow, event_rows
from lockgate.broker.historydb.writer import HistoryWriter
from lockgate.broker.telemetry import Telemetry

__all__ = ["LOGGER_DURABLE", "LoggerStats", "MessageLogger"]

LOGGER_DURABLE = "lockgate-logger"

_YIELD_EVERY = 256
_IDLE_ROUNDS = 5
"""Events decoded between two yields to the event loop."""

_log = logging.getLogger("lockgate.history.logger")

# PostgreSQL gone or refusing (asyncpg's errors, a socket's, a timeout, the engine's
# translation of them), and a schema this version cannot use (BrokerError): retried.
_WRITE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
    BrokerError,
)


@dataclass(slots=True)
class LoggerStats:
    """What one logger did since it started (for status and tests)."""

    messages: int = 0
    """Log messages (batches) written and acked."""
    events: int = 0
    """Rows inserted (an event written before by any logger is not counted again)."""
    skipped: int = 0
    """Messages terminated because they are not batches."""
    write_failures: int = 0
    """Failed write attempts (each retried)."""
    last_error: str = ""


@dataclass(slots=True)
class _Work:
    msgs: list[Msg]
    rows: list[EventRow]


class MessageLogger:
    """Copies the log stream into the history table of ``pool``; see the module."""

    def __init__(
        self,
        nc: Client,
        pool: asyncpg.Pool,
        *,
        stream: str = LOG_STREAM,
        prefix: str = LOG_PREFIX,
        durable: str = LOGGER_DURABLE,
        fetch_size: int = 256,
        ack_wait: float = 30.0,
        retry_min: float = 0.1,
        retry_max: float = 5.0,
        lag_interval: float = 1.0,
        writers: int = 2,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.writer = HistoryWriter(pool)
        self.stream = stream
        self.prefix = prefix
        """The log's subject prefix (``backbone_prefix`` + ``log``)."""
        self.durable = durable
        self.fetch_size = fetch_size
        self.ack_wait = ack_wait
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.lag_interval = lag_interval
        self.stats = LoggerStats()
        self.lag: int | None = None
        """Batches stored in the stream but not yet logged (None until first measured)."""
        self.stored_seq = 0
        """The stream's last sequence at the last measurement."""
        self.logged_seq = 0
        """The consumer's ack floor at the last measurement."""
        self.writers = max(1, writers)
        # Decoded batches waiting for a writer: while PostgreSQL runs one transaction per
        # writer, the next fetch is decoded (this is the pipeline, and its memory bound).
        self._queue: asyncio.Queue[_Work] = asyncio.Queue(maxsize=self.writers)
        self._prepared = False
        self._prepare_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._fetched = asyncio.Event()
        """Set when this logger fetches messages (the lag is measured again)."""
        self._sub: JetStreamContext.PullSubscription | None = None
        if telemetry is not None:
            telemetry.observe_history_lag(lambda: self.lag)

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Starts fetching and writing in the background (returns at once: PostgreSQL or
        the stream being unavailable now is retried, not an error)."""
        self._tasks = [
            asyncio.create_task(self._fetch_loop(), name="history-logger-fetch"),
            *(
                asyncio.create_task(self._write_loop(), name=f"history-logger-write-{n}")
                for n in range(self.writers)
            ),
            asyncio.create_task(self._lag_loop(), name="history-logger-lag"),
        ]

    async def stop(self) -> None:
        """Stops; what was fetched and not committed is handed out again by JetStream."""
        for t in self._tasks:
            t.cancel()
        for outcome in await asyncio.gather(*self._tasks, return_exceptions=True):
            if not isinstance(outcome, (asyncio.CancelledError, type(None))):
                _log.error("history.logger.loop_failed: %r", outcome)
        self._tasks = []
        if self._sub is not None:
            # The consumer stays (it is shared and durable); this client's interest goes.
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._sub.unsubscribe()
            self._sub = None

    # -- the loops ----------------------------------------------------------------------------
    async def _sleep(self, attempt: int) -> None:
        """Backoff before retry ``attempt`` (0, 1, ...): doubling up to ``retry_max``, with
        jitter so that nodes coming back do not retry in step."""
        backoff = self.retry_min * 2 ** min(attempt, 30)  # no float overflow, ever
        await asyncio.sleep(min(self.retry_max, backoff) * (0.5 + random.random() / 2))

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=max(1000, self.fetch_size * 8),
            filter_subject=f"{self.prefix}.>",
        )
        attempt = 0
        while True:
            try:
                return await self.js.pull_subscribe(
                    f"{self.prefix}.>", durable=self.durable, stream=self.stream, config=config
                )
            except (nats.errors.Error, OSError) as exc:
                _log.warning("history.logger.subscribe_failed: %s %s", type(exc).__name__, exc)
                await self._sleep(attempt)
                attempt += 1

    async def _fetch_loop(self) -> None:
        sub = self._sub = await self._subscribe()
        attempt = 0
        while True:
            try:
                msgs = await sub.fetch(self.fetch_size, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):  # nothing to fetch: idle
                attempt = 0
                continue
            except (nats.errors.Error, OSError) as exc:
                _log.warning("history.logger.fetch_failed: %s %s", type(exc).__name__, exc)
                await self._sleep(attempt)
                attempt += 1
                continue
            attempt = 0
            self._fetched.set()
            await self._queue.put(await self._decode(msgs))

    async def _decode(self, msgs: list[Msg]) -> _Work:
        good: list[Msg] = []
        rows: list[EventRow] = []
        since_yield = 0
        for m in msgs:
            seq = 0
            try:
                seq = m.metadata.sequence.stream
                batch = decode_batch(m.subject, m.headers, m.data, seq, prefix=self.prefix)
                rows += event_rows(batch)
            except (BadLogMessage, BadBatch) as exc:
                _log.error("history.logger.bad_message: %s (stream seq %s)", exc, seq)
                self.stats.skipped += 1
                with contextlib.suppress(nats.errors.Error, OSError):
                    await m.term()
                continue
            good.append(m)
            since_yield += batch.count
            if since_yield >= _YIELD_EVERY:
                # The logger shares the node's event loop with the publish path: a fetch of
                # tens of thousands of events is decoded in slices of about a millisecond.
                since_yield = 0
                await asyncio.sleep(0)
        return _Work(good, rows)

    async def prepare(self) -> None:
        """Migrates the history schema and creates the partitions ahead now (the write
        loops do it at their first write otherwise, retrying while PostgreSQL is away)."""
        async with self._prepare_lock:
            if not self._prepared:
                await self.writer.prepare()
                self._prepared = True

    async def _write_loop(self) -> None:
        while True:
            work = await self._queue.get()
            attempt = 0
            while True:
                try:
                    await self.prepare()
                    inserted = await self.writer.write(work.rows)
                    break
                except Exception as exc:
                    self.stats.write_failures += 1
                    self.stats.last_error = str(exc) or type(exc).__name__
                    if isinstance(exc, _WRITE_ERRORS):
                        _log.warning("history.logger.write_failed: %s", self.stats.last_error)
                    else:  # a bug, not an outage: say so loudly, and keep the loop alive
                        _log.exception("history.logger.write_error")
                    # Keep the messages ours while we retry (or JetStream gives them to
                    # another logger after the ack wait, which is harmless but wasted).
                    for m in work.msgs:
                        with contextlib.suppress(nats.errors.Error, OSError):
                            await m.in_progress()
                    await self._sleep(attempt)
                    attempt += 1
            await self._ack(work.msgs)
            self.stats.messages += len(work.msgs)
            self.stats.events += inserted

    async def _ack(self, msgs: list[Msg]) -> None:
        """Acks ``msgs``, whose rows are committed."""
        for m in msgs:
            try:
                await m.ack()
            except (nats.errors.Error, OSError) as exc:
                # Not acked: handed out again later, and written again as nothing.
                _log.warning("history.logger.ack_failed: %s", exc or type(exc).__name__)

    async def _lag_loop(self) -> None:
        while True:
            self._fetched.clear()
            await self.measure_lag()
            await asyncio.sleep(self.lag_interval)
            if self.lag == 0 and not self._fetched.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._fetched.wait(), self.lag_interval * (_IDLE_ROUNDS - 1)
                    )

    async def measure_lag(self) -> int | None:
        """Reads the stream's last sequence and the consumer's ack floor now; returns the
        lag (None when the stream or the consumer cannot be read)."""
        try:
            stream = await self.js.stream_info(self.stream)
            try:
                consumer = await self.js.consumer_info(self.stream, self.durable)
                floor = consumer.ack_floor.stream_seq if consumer.ack_floor is not None else 0
            except nats.js.errors.NotFoundError:
                floor = 0  # no logger has started yet: nothing is logged
        except (nats.errors.Error, nats.js.errors.Error, OSError):
            return self.lag
        self.stored_seq = stream.state.last_seq
        self.logged_seq = floor or 0
        # Before the first message, or when old ones were purged, the floor is behind the
        # stream's first sequence: what was purged is not lag.
        first = max(stream.state.first_seq - 1, 0)
        self.lag = max(0, self.stored_seq - max(self.logged_seq, first))
        return self.lag
