"""Reading the stored log: one event, a page of a query, a replay into an outbox.

Example::

    history = History(store)
    events, next_after = await history.query("acme", "orders.>", limit=10)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from lockgate.broker import wire
from lockgate.broker.deadletters import is_dead_letter, may_read_dead_letter
from lockgate.broker.errors import NotFound
from lockgate.broker.ids import MAX_ID, id_for_time_ms, time_ms_of
from lockgate.broker.store import Batch, LogPosition, LogScan
from lockgate.broker.subjects import compile_pattern, is_literal, validate_pattern
from lockgate.broker.v1 import broker_pb2

__all__ = [
    "BatchReader",
    "CloudEventIndex",
    "History",
    "HistoryLagSource",
    "Readable",
    "Sink",
    "stored_event",
]

Readable = Callable[[str], bool]
"""Whether the reader may receive events of a concrete subject (``PolicyGate.reader``);
None where nothing is filtered."""

_PAGE = 64
_STEPS = 16
"""Index steps (``SCAN_BUDGET`` batches each) one history page may take before it answers
with what it found and a cursor: a wildcard that matches little of a large org returns
short pages quickly instead of holding the store's reader."""


class BatchReader(Protocol):
    """The part of the store history reads."""

    async def read_batches(
        self, org: str, after_id: int, *, subject: str | None = None, limit: int = 256
    ) -> list[Batch]: ...

    async def batch_containing(self, org: str, event_id: int) -> Batch | None: ...

    async def read_log(self, org: str, start: LogPosition, *, limit: int = 256) -> list[Batch]: ...

    async def scan_log(
        self,
        org: str,
        start: LogPosition,
        match: Callable[[str], bool],
        *,
        limit: int = 64,
        pattern: str | None = None,
    ) -> LogScan: ...

    async def scan_batches(
        self,
        org: str,
        after_id: int,
        match: Callable[[str], bool],
        *,
        before_id: int = 0,
        limit: int = 64,
    ) -> LogScan: ...


@runtime_checkable
class CloudEventIndex(Protocol):
    """A store that finds events by CloudEvents id through an index (the PostgreSQL
    history); without one, :meth:`History.query` looks at each event's id as it scans."""

    async def batches_by_cloudevent_id(
        self, org: str, cloudevent_id: str, after_id: int, *, before_id: int = 0, limit: int = 64
    ) -> list[Batch]: ...


@runtime_checkable
class HistoryLagSource(Protocol):
    """A store whose history is copied from the log by a message logger (cluster mode)."""

    def history_lag(self) -> int | None:
        """Log batches stored and not yet in the history (None: not measured yet)."""


class Sink(Protocol):
    """Where a replay puts stored frames (an outbox)."""

    def put(self, frames: bytes, count: int = 1) -> None: ...


def stored_event(batch: Batch, frame: bytes) -> broker_pb2.StoredEvent:
    d = broker_pb2.Delivery.FromString(wire.frame_body(frame))
    se = broker_pb2.StoredEvent(
        id=d.id, subject=d.subject, event=d.event, policy_version=batch.policy_version
    )
    se.stored_time.FromMilliseconds(time_ms_of(d.id))
    return se


class History:
    """Queries over the stored log of one node's store."""

    def __init__(self, store: BatchReader) -> None:
        self.store = store

    async def fetch_frame(self, org: str, event_id: int) -> bytes | None:
        """The stored delivery frame of one event, or None when it is gone."""
        if not 0 < event_id <= MAX_ID:  # no id lies outside 63 bits (nor fits SQLite's)
            return None
        batch = await self.store.batch_containing(org, event_id)
        if batch is None:
            return None
        for i, frame in wire.split_frames(batch.body):
            if i == event_id:
                return frame
        return None

    async def get_event(
        self, org: str, event_id: int, readable: Readable | None = None
    ) -> broker_pb2.StoredEvent:
        """One stored event. One the reader may not read is NOT_FOUND, as another org's
        is: the answer does not tell a denied event from a missing one."""
        batch = await self.store.batch_containing(org, event_id) if 0 < event_id <= MAX_ID else None
        if batch is not None and (readable is None or readable(batch.subject)):
            for i, frame in wire.split_frames(batch.body):
                if i == event_id:
                    if (
                        readable is not None
                        and is_dead_letter(batch.subject)
                        and not may_read_dead_letter(readable, frame)
                    ):
                        break  # a dead letter of a subject the reader may not read
                    return stored_event(batch, frame)
        raise NotFound(f"event {event_id} does not exist", reason="NOT_FOUND")

    async def query(
        self,
        org: str,
        pattern: str,
        *,
        after_id: int = 0,
        start_ms: int = 0,
        end_ms: int = 0,
        limit: int = 100,
        readable: Readable | None = None,
        cloudevent_id: str = "",
    ) -> tuple[list[broker_pb2.StoredEvent], int]:
        """Events matching ``pattern`` whose subject is ``readable`` (and, when given, whose
        CloudEvents id is ``cloudevent_id``), oldest first; returns them and the last id
        scanned (0 when the log is exhausted)."""
        validate_pattern(pattern)
        match = compile_pattern(pattern)
        pos = max(after_id, id_for_time_ms(start_ms) - 1 if start_ms else 0)
        if pos >= MAX_ID:
            return [], 0  # after the last possible id: nothing (and no 64-bit overflow)
        end_id = id_for_time_ms(end_ms) if end_ms else 0
        if end_ms and end_id == 0:
            return [], 0  # an end before the ids' epoch (2024): no event is older than that
        literal = pattern if is_literal(pattern) else None
        indexed = bool(cloudevent_id) and isinstance(self.store, CloudEventIndex)
        out: list[broker_pb2.StoredEvent] = []
        steps = 0
        while len(out) < limit:
            if indexed:  # the (org, ce_id) index holds exactly these, of any subject
                assert isinstance(self.store, CloudEventIndex)
                found = await self.store.batches_by_cloudevent_id(
                    org, cloudevent_id, pos, before_id=end_id, limit=_PAGE
                )
                if not found:
                    return out, 0
                batches = [b for b in found if match(b.subject)]
                steps += 1
            elif literal is not None:  # the (org, subject, id) index holds exactly these
                batches = await self.store.read_batches(org, pos, subject=literal, limit=_PAGE)
                if not batches:
                    return out, 0
                steps += 1
            else:
                # A wildcard walks the org's (org, id) index in bounded steps; a page that
                # spent its budget without filling up ends early with a cursor.
                scan = await self.store.scan_batches(org, pos, match, before_id=end_id, limit=_PAGE)
                batches = scan.batches
                steps += 1
            for b in batches:
                if readable is None or readable(b.subject):
                    dlq = readable if is_dead_letter(b.subject) else None
                    for i, frame in wire.split_frames(b.body):
                        if i <= pos:
                            continue
                        if end_id and i >= end_id:
                            return out, 0
                        if dlq is not None and not may_read_dead_letter(dlq, frame):
                            continue
                        se = stored_event(b, frame)
                        if cloudevent_id and se.event.id != cloudevent_id:
                            continue
                        out.append(se)
                        if len(out) >= limit:
                            return out, i
                if end_id and b.first_id >= end_id:
                    return out, 0
                pos = max(pos, b.last_id)
            if indexed:
                pos = max(pos, found[-1].last_id)  # past those the pattern did not match
                if len(found) < _PAGE:
                    return out, 0
            elif literal is None:
                pos = max(pos, scan.next)
                if scan.done:
                    return out, 0
            if steps >= _STEPS and (literal is None or cloudevent_id):
                # May be a short (even empty) page: the cursor goes on. A literal subject
                # filtered by CloudEvents id without an index reads in bounded steps too.
                return out, pos
        return out, pos

    async def replay(
        self,
        org: str,
        pattern: str,
        sink: Sink,
        start: LogPosition,
        head: int,
        readable: Readable | None = None,
    ) -> None:
        """Puts the stored events of ``pattern`` whose subject is ``readable`` from
        ``start`` up to the batch at sequence ``head`` into ``sink``, in commit order, as
        stored frames (a whole batch is one bytes copy)."""
        match = compile_pattern(pattern)
        pos = start
        while pos.seq <= head:
            scan = await self.store.scan_log(org, pos, match, limit=_PAGE, pattern=pattern)
            for b in scan.batches:
                if b.seq > head:
                    return
                if readable is None or readable(b.subject):
                    dlq = readable if is_dead_letter(b.subject) else None
                    if dlq is None and not pos.includes(b.seq, b.first_id):
                        sink.put(b.body, b.count)  # the whole batch, as stored
                    else:
                        frames = [
                            f
                            for i, f in wire.split_frames(b.body)
                            if not pos.includes(b.seq, i)
                            and (dlq is None or may_read_dead_letter(dlq, f))
                        ]
                        if frames:
                            sink.put(b"".join(frames), len(frames))
                pos = LogPosition(b.seq + 1)
            if scan.done:
                return
            if scan.next > pos.seq:
                pos = LogPosition(scan.next)  # past the batches that did not match
