"""The cluster's store: every role of :class:`broker.store.Store` over three engines.

- the log (append, commit order, tailing, retention): the JetStream stream
  (:class:`~broker.store.jetstream.JetStreamLog`);
- the metadata roles (durables, dead letters, keys, policy versions, audit): PostgreSQL
  (:class:`~broker.store.postgres.PgStore`, which this class is);
- history reads by id (``read_batches``, ``scan_batches``, ``batch_containing``): the
  message logger's table in the same database, which this store also fills: its
  :class:`~broker.historydb.logger.MessageLogger` runs from :meth:`open` to :meth:`close`
  (every node runs one; JetStream hands each batch to one of them).

Example::

    store = ClusterStore("postgresql://lg@db/lockgate", JetStreamLog("nats://n:4222"))
    await store.open()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lockgate.broker.backbone.links import MAX_LINKS
from lockgate.broker.config import redact_url
from lockgate.broker.store import (
    SCAN_BUDGET,
    BackboneRecord,
    Batch,
    LogPosition,
    LogScan,
    OnStored,
    RetentionRule,
    call_when_stored,
)
from lockgate.broker.store.jetstream import JetStreamLog
from lockgate.broker.store.postgres import PgStore
from lockgate.broker.store.routed_log import RoutedLog

if TYPE_CHECKING:
    from lockgate.broker.historydb.logger import MessageLogger

__all__ = ["ClusterStore", "HistoryReads"]

log = logging.getLogger("lockgate.store.cluster")
_LOGGER_ACK_WAIT = 5.0
_DRAIN_S = 30.0
"""How long a pinned log no org uses any more keeps its message logger, to log what it
still holds, before the link closes."""


class HistoryReads(Protocol):
    """What ``broker.history.History`` reads by id, from the message logger's table."""

    async def read_batches(
        self, org: str, after_id: int, *, subject: str | None = None, limit: int = 256
    ) -> list[Batch]: ...

    async def scan_batches(
        self,
        org: str,
        after_id: int,
        match: Callable[[str], bool],
        *,
        before_id: int = 0,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
    ) -> LogScan: ...

    async def batch_containing(self, org: str, event_id: int) -> Batch | None: ...

    async def batches_by_cloudevent_id(
        self, org: str, cloudevent_id: str, after_id: int, *, before_id: int = 0, limit: int = 64
    ) -> list[Batch]: ...


@dataclass(frozen=True, slots=True)
class _PinnedLog:
    """The log on a backbone the registry pins orgs to, and its message logger."""

    log: JetStreamLog
    logger: MessageLogger


class ClusterStore(PgStore):
    """A :class:`broker.store.Store` on JetStream (the log) and PostgreSQL (the rest).

    The log is per org: an org pinned in the registry to another backbone has its log on
    that backbone's JetStream (:class:`~broker.store.routed_log.RoutedLog`, fed by
    :meth:`follow`), and this node runs a message logger on each such log too, so the
    history in PostgreSQL holds every backbone's events."""

    def __init__(
        self, dsn: str, log: JetStreamLog, *, max_size: int = 10, max_links: int = MAX_LINKS
    ) -> None:
        super().__init__(dsn, max_size=max_size)
        self.log = log
        """The node's own backbone's log."""
        self.routes: RoutedLog[_PinnedLog] = RoutedLog(
            log, self._open_pinned, self._close_pinned, max_links=max_links
        )
        self._stopping = False
        self._history: HistoryReads | None = None
        self._logger: object | None = None
        self.logger_lag: Callable[[], int | None] = lambda: None
        """Batches stored in the stream and not yet in PostgreSQL (None: not measured)."""

    async def open(self) -> None:
        from lockgate.broker.historydb.logger import MessageLogger
        from lockgate.broker.historydb.reader import PgHistoryReader
        from lockgate.broker.historydb.writer import HistoryWriter

        await super().open()
        try:
            await self.log.open()
            # The history table exists before the first read (the migration takes an
            # advisory lock: nodes starting together run it once).
            await HistoryWriter(self.pool).prepare()
            self._history = PgHistoryReader(self.pool)
            # A node killed with batches fetched and not written: another node's logger
            # gets them after ack_wait, so it is short (a write retried meanwhile sends
            # in-progress; one written twice is inserted once).
            logger = MessageLogger(
                self.log.nc,
                self.pool,
                stream=self.log.stream,
                prefix=self.log.root,
                ack_wait=_LOGGER_ACK_WAIT,
            )
            await logger.start()
        except BaseException:
            await self.log.close()
            await super().close()
            raise
        self._logger = logger
        self.logger_lag = self._lag

    def _lag(self) -> int | None:
        """The loggers' lag summed over the node's own log and the pinned ones it has open
        (None while the own one is not measured)."""
        from lockgate.broker.historydb.logger import MessageLogger

        if not isinstance(self._logger, MessageLogger) or self._logger.lag is None:
            return None
        pinned = (p.logger.lag for _, p in self.routes.links.open_links())
        return self._logger.lag + sum(lag or 0 for lag in pinned)

    async def _open_pinned(self, endpoint: str) -> _PinnedLog:
        from lockgate.broker.historydb.logger import MessageLogger

        own = self.log
        log = JetStreamLog(
            endpoint, stream=own.stream, root=own.root, replicas=own.replicas, timeout=own.timeout
        )
        await log.open()
        try:
            logger = MessageLogger(
                log.nc, self.pool, stream=log.stream, prefix=log.root, ack_wait=_LOGGER_ACK_WAIT
            )
            await logger.start()
        except BaseException:
            await log.close()
            raise
        return _PinnedLog(log, logger)

    async def _close_pinned(self, pinned: _PinnedLog) -> None:
        """Closes a link no org uses any more, once its logger has logged what the log holds
        (the history stays complete; at most ``_DRAIN_S``), or at once when the node stops
        (the link reopens with the node while an org is pinned there)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DRAIN_S
        lag = pinned.logger.lag
        while not self._stopping and loop.time() < deadline:
            lag = await pinned.logger.measure_lag()
            if lag == 0:
                break
            await asyncio.sleep(0.25)
        if lag and not self._stopping:
            shown = redact_url(pinned.log.url, user_is_secret=True)
            log.warning(
                "history.logger.left_behind: %s batches of the log on %s not logged", lag, shown
            )
        await pinned.logger.stop()
        await pinned.log.close()

    def follow_pins(self, pins: Mapping[str, BackboneRecord]) -> None:
        """``broker.registry.RegistryFollower``: each org's log where the registry pins it."""
        self.routes.follow_pins(pins)

    async def close(self) -> None:
        from lockgate.broker.historydb.logger import MessageLogger

        self._stopping = True
        await self.routes.close()
        if isinstance(self._logger, MessageLogger):
            await self._logger.stop()
        self._logger = None
        await self.log.close()
        await super().close()

    # -- the log: JetStream -----------------------------------------------------------------

    def append(
        self, batches: Sequence[Batch], on_stored: OnStored | None = None
    ) -> Awaitable[list[int]]:
        return call_when_stored(self.routes.append(batches), on_stored)

    def committed_seq(self, org: str = "") -> int:
        return self.routes.committed_seq(org)

    def in_log(self, org: str, seq: int) -> bool:
        return self.routes.in_log(org, seq)

    def follow_commits(self, listener: Callable[[Batch, int], None]) -> None:
        """:class:`broker.store.CommitFeed`: every node's commits to the node's own
        backbone's log, from its tail."""
        self.log.follow_commits(listener)

    def feeds(self, seq: int) -> bool:
        return self.routes.in_own_log(seq)

    async def last_id(self) -> int:
        return await self.log.last_id()

    async def read_log(self, org: str, start: LogPosition, *, limit: int = 256) -> list[Batch]:
        return await self.routes.read_log(org, start, limit=limit)

    async def scan_log(
        self,
        org: str,
        start: LogPosition,
        match: Callable[[str], bool],
        *,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
        pattern: str | None = None,
    ) -> LogScan:
        return await self.routes.scan_log(
            org, start, match, limit=limit, budget=budget, pattern=pattern
        )

    async def position_after_id(self, event_id: int, org: str = "") -> LogPosition:
        return await self.routes.position_after_id(event_id, org)

    async def recent_batches(self, after_id: int) -> list[Batch]:
        return await self.log.recent_batches(after_id)

    async def trim(self, rules: Sequence[RetentionRule], now_ms: int) -> int:
        """The log's retention, and the history's: whole days older than the longest age
        of a rule that bounds every subject (``>``) are dropped."""
        from lockgate.broker.historydb.schema import drop_days_before

        removed = 0
        for log in self.routes.logs():
            removed += await log.trim(rules, now_ms)
        if any(r.pattern == ">" and r.max_age_ms for r in rules):
            longest = max(r.max_age_ms for r in rules)
            await drop_days_before(self.pool, now_ms - longest)
        return removed

    # -- history: the message logger's table ------------------------------------------------

    def _reads(self) -> HistoryReads:
        if self._history is None:
            raise RuntimeError("the cluster store is not open")
        return self._history

    async def read_batches(
        self, org: str, after_id: int, *, subject: str | None = None, limit: int = 256
    ) -> list[Batch]:
        return await self._reads().read_batches(org, after_id, subject=subject, limit=limit)

    async def scan_batches(
        self,
        org: str,
        after_id: int,
        match: Callable[[str], bool],
        *,
        before_id: int = 0,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
    ) -> LogScan:
        return await self._reads().scan_batches(
            org, after_id, match, before_id=before_id, limit=limit, budget=budget
        )

    async def batch_containing(self, org: str, event_id: int) -> Batch | None:
        found = await self._reads().batch_containing(org, event_id)
        if found is None:
            # Not in the history yet (the message logger lags behind the log): a durable's
            # new owner redelivering its pending events must not take them for trimmed.
            found = await self.routes.batch_containing(org, event_id)
        return found

    async def batches_by_cloudevent_id(
        self, org: str, cloudevent_id: str, after_id: int, *, before_id: int = 0, limit: int = 64
    ) -> list[Batch]:
        """``broker.history.CloudEventIndex``: the (org, ce_id) index of the history."""
        return await self._reads().batches_by_cloudevent_id(
            org, cloudevent_id, after_id, before_id=before_id, limit=limit
        )

    def history_lag(self) -> int | None:
        """``broker.history.HistoryLagSource``: the message logger's lag (batches)."""
        return self.logger_lag()
