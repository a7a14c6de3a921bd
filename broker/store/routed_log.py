"""The cluster's log routed per org: an org pinned in the registry to another backbone has
its log (its JetStream stream) there, every other org on the node's own backbone.

Each pinned backbone's log is a :class:`~broker.store.jetstream.JetStreamLog` on that
endpoint, with the same stream name and subjects, opened by
:class:`~broker.backbone.links.BackboneLinks` (bounded, shared, closed when no org is pinned
there). Sequences name their log: a batch of the log on endpoint E has the stream sequence
plus :func:`~broker.backbone.links.seq_offset` (E) (0 for the node's own), so positions of
two logs never meet; ``committed_seq(org)`` is that of the org's log.

A re-pinned org: its new batches go to the new backbone's log from the moment a node learns
of the change (each node within a second). A reader (a durable, a replay) whose position lies
in another log than the org's goes on in the org's log from the batches stored there since
the pin (its record's update time, less a margin for the nodes that learnt of it later);
what it had not read in the old log stays there, readable through the history (the message
logger consumes every log).

Example::

    routed = RoutedLog(JetStreamLog(own_url), open_link, close_link)
    routed.follow_pins(registry.pinned())
    seqs = await routed.append(batches)
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

from lockgate.broker.backbone.links import MAX_LINKS, BackboneLinks, seq_offset
from lockgate.broker.errors import BrokerError
from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.store import SCAN_BUDGET, BackboneRecord, Batch, LogPosition, LogScan
from lockgate.broker.store.jetstream import JetStreamLog

__all__ = ["LogLink", "RoutedLog"]

_PIN_MARGIN_MS = 5_000
"""How long before a pin a reader moving to the new log starts: nodes learn of a pin within
a second, and their clocks differ a little."""
_SLOT = ~((1 << 40) - 1)


class LogLink(Protocol):
    """An open link to a pinned backbone's log (its JetStream log and message logger)."""

    @property
    def log(self) -> JetStreamLog: ...


L = TypeVar("L", bound=LogLink)


def _shift(b: Batch, offset: int) -> Batch:
    return dataclasses.replace(b, seq=b.seq + offset) if offset else b


class RoutedLog(Generic[L]):
    """The log operations of :class:`~broker.store.EventLog`, each on the org's log."""

    def __init__(
        self,
        own: JetStreamLog,
        opener: Callable[[str], Awaitable[L]],
        closer: Callable[[L], Awaitable[None]],
        *,
        max_links: int = MAX_LINKS,
    ) -> None:
        self.own = own
        self.links: BackboneLinks[L] = BackboneLinks(
            own.url, opener, closer, what="log", max_links=max_links
        )
        self._left_ms: dict[str, int] = {}
        """When an org went back to the node's own log (Unix ms, seen here)."""
        self._started_ms = int(time.time() * 1000)

    def follow_pins(self, pins: Mapping[str, BackboneRecord]) -> None:
        now = int(time.time() * 1000)
        for org in self.links.follow_pins(pins):
            if self.links.route(org) is None:
                self._left_ms[org] = now

    async def close(self) -> None:
        await self.links.close()

    async def _log(self, org: str) -> tuple[JetStreamLog, int]:
        """The org's log and its sequence offset (``Unavailable`` when not reachable)."""
        link = await self.links.ready(org)
        if link is None:
            return self.own, 0
        return link.log, seq_offset(self.links.endpoint(org))

    # -- append -----------------------------------------------------------------------------

    def append(self, batches: Sequence[Batch]) -> Awaitable[list[int]]:
        """Each org's batches on its log, queued now; their sequences once all are stored
        (the first failure fails the call: nothing is acknowledged unstored)."""
        links = self.links
        if not links.routed:
            return self.own.append(batches)
        groups: dict[str, list[int]] = {}
        for n, b in enumerate(batches):
            groups.setdefault(links.endpoint(b.org), []).append(n)
        if len(groups) == 1 and "" in groups:
            return self.own.append(batches)
        parts = [(ns, self._append_to(e, [batches[n] for n in ns])) for e, ns in groups.items()]
        return asyncio.ensure_future(_joined(len(batches), parts))

    def _append_to(self, endpoint: str, part: list[Batch]) -> Awaitable[list[int]]:
        if not endpoint:
            return self.own.append(part)
        try:
            link = self.links.get(part[0].org)
        except BrokerError:
            return self._append_later(part)  # connecting, or failed: ready() says which
        assert link is not None
        return _offset(link.log.append(part), seq_offset(endpoint))

    async def _append_later(self, part: list[Batch]) -> list[int]:
        log, offset = await self._log(part[0].org)
        return [s + offset for s in await log.append(part)]

    # -- positions and reads ----------------------------------------------------------------

    def committed_seq(self, org: str = "") -> int:
        endpoint = self.links.endpoint(org) if org else ""
        if not endpoint:
            return self.own.committed_seq()
        offset = seq_offset(endpoint)
        link = self.links.opened(endpoint)
        return offset + (link.log.committed_seq() if link is not None else 0)

    def in_log(self, org: str, seq: int) -> bool:
        """Whether the position ``seq`` lies in the org's log (``seq`` <= 1, the beginning,
        lies in every log)."""
        return seq <= 1 or (seq & _SLOT) == seq_offset(self.links.endpoint(org))

    def in_own_log(self, seq: int) -> bool:
        """Whether ``seq`` is a position of the node's own backbone's log."""
        return not seq & _SLOT

    async def _start(self, org: str, log: JetStreamLog, offset: int, start: LogPosition) -> int:
        """``start``'s stream sequence in ``log``; a position in another log (the org was
        re-pinned) becomes the first batch stored in ``log`` since the pin."""
        if self.in_log(org, start.seq):
            return start.seq - offset if start.seq > 1 else start.seq
        route = self.links.route(org)
        if route is not None:
            since = route.record.updated_ms or route.since_ms
        else:
            since = self._left_ms.get(org, self._started_ms)
        pos = await log.position_after_id(id_for_time_ms(max(since - _PIN_MARGIN_MS, 0)))
        return pos.seq

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
        log, offset = await self._log(org)
        seq = await self._start(org, log, offset, start)
        inner = LogPosition(seq, start.id if seq + offset == start.seq else 0)
        scan = await log.scan_log(org, inner, match, limit=limit, budget=budget, pattern=pattern)
        if not offset:
            return scan
        return LogScan([_shift(b, offset) for b in scan.batches], scan.next + offset, scan.done)

    async def read_log(self, org: str, start: LogPosition, *, limit: int = 256) -> list[Batch]:
        scan = await self.scan_log(org, start, _everything, limit=limit, budget=limit)
        return scan.batches

    async def position_after_id(self, event_id: int, org: str = "") -> LogPosition:
        log, offset = await self._log(org) if org else (self.own, 0)
        pos = await log.position_after_id(event_id)
        return LogPosition(pos.seq + offset, pos.id)

    async def batch_containing(self, org: str, event_id: int) -> Batch | None:
        log, offset = await self._log(org)
        found = await log.batch_containing(org, event_id)
        return _shift(found, offset) if found is not None else None

    def logs(self) -> list[JetStreamLog]:
        """The node's own log and every open pinned one (retention applies to each)."""
        return [self.own, *(link.log for _, link in self.links.open_links())]


async def _offset(fut: Awaitable[list[int]], offset: int) -> list[int]:
    return [s + offset for s in await fut]


async def _joined(size: int, parts: list[tuple[list[int], Awaitable[list[int]]]]) -> list[int]:
    results = await asyncio.gather(*(p for _, p in parts), return_exceptions=True)
    seqs = [0] * size
    for (ns, _), got in zip(parts, results, strict=True):
        if isinstance(got, BaseException):
            raise got
        for n, s in zip(ns, got, strict=True):
            seqs[n] = s
    return seqs


def _everything(subject: str) -> bool:
    return True
