"""Subscriptions: the outbox a stream drains, ephemeral subscriptions, durable consumers.

An :class:`Outbox` holds encoded delivery frames for one subscriber stream. The stream's
writer task drains it in chunks of up to ``max_message_bytes``; nothing on the publish path
ever waits for a subscriber. An ephemeral subscriber whose outbox overflows is cut off with
``RESOURCE_EXHAUSTED``/``SLOW_CONSUMER`` (as NATS does with slow consumers); a durable
consumer never overflows, because it hands out at most ``max_in_flight`` unacked events and
keeps the rest in the log.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker import wire
from broker.errors import BrokerError, FailedPrecondition, ResourceExhausted
from broker.store import Batch, ConsumerRecord, DeadLetterRecord
from broker.subjects import compile_pattern
from broker.v1 import broker_pb2

if TYPE_CHECKING:
    from broker.node import Broker

__all__ = ["DurableConsumer", "DurableSession", "EphemeralSubscription", "Outbox"]

_names = itertools.count(1)


class Outbox:
    """Frames waiting to be written to one stream."""

    def __init__(self, max_message_bytes: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._max = max_message_bytes
        self.error: BrokerError | None = None
        self.closed = False
        self.buffered = 0
        """Events put and not yet taken."""
        self.last_count = 0
        """Events in the body the last :meth:`take` returned."""
        self._counts: deque[int] = deque()

    def put(self, frames: bytes, count: int = 1) -> None:
        self._chunks.append(frames)
        self._counts.append(count)
        self.buffered += count
        self._ready.set()

    def close(self, error: BrokerError | None = None) -> None:
        if not self.closed:
            self.closed = True
            self.error = error
            self._ready.set()

    async def take(self) -> bytes | None:
        """The next response body (joined frames), or None once closed and drained."""
        while not self._chunks:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.closed and self.error is not None:
            return None
        out = [self._chunks.popleft()]
        count = self._counts.popleft()
        size = len(out[0])
        while self._chunks and size + len(self._chunks[0]) <= self._max:
            chunk = self._chunks.popleft()
            count += self._counts.popleft()
            size += len(chunk)
            out.append(chunk)
        self.buffered -= count
        self.last_count = count
        return out[0] if len(out) == 1 else b"".join(out)


class EphemeralSubscription:
    """At-most-once: routed frames go straight to the outbox, up to ``buffer`` events."""

    def __init__(
        self, org: str, pattern: str, queue: str, buffer: int, max_message_bytes: int
    ) -> None:
        self.org = org
        self.pattern = pattern
        self.queue = queue
        self.name = f"eph-{next(_names)}"
        self.outbox = Outbox(max_message_bytes)
        self._limit = buffer
        self.on_slow: Callable[[EphemeralSubscription], None] | None = None

    def offer(self, frames: bytes, count: int, ids: list[int] | None) -> bool:
        if self.outbox.closed:
            return False
        if self.outbox.buffered + count > self._limit:
            self.outbox.close(
                ResourceExhausted(
                    f"subscriber fell {self.outbox.buffered} events behind, more than its buffer "
                    f"of {self._limit}, and was disconnected",
                    reason="SLOW_CONSUMER",
                    hint="consume faster, raise max_in_flight, or use a durable subscription",
                )
            )
            if self.on_slow is not None:
                self.on_slow(self)
            return False
        self.outbox.put(frames, count)
        return True


@dataclass(slots=True)
class _Pending:
    attempt: int
    deadline: float
    frame: bytes | None
    session: DurableSession | None


class DurableSession:
    """One receiver bound to a durable consumer: a gRPC or WebSocket stream (``stream``), a
    poll (``poll``) or the webhook dispatcher (``webhook``). Streams are preferred: the
    webhook only gets events while no stream is bound (an agent's delivery preference)."""

    def __init__(
        self,
        consumer: DurableConsumer,
        max_message_bytes: int,
        limit: int = 0,
        kind: str = "stream",
    ) -> None:
        self.consumer = consumer
        self.outbox = Outbox(max_message_bytes)
        self.in_flight = 0
        self.limit = limit
        self.kind = kind


def _reencode(frame: bytes, attempt: int) -> bytes:
    d = broker_pb2.Delivery.FromString(wire.frame_body(frame))
    d.attempt = attempt
    body = d.SerializeToString()
    return b"\x12" + wire.encode_varint(len(body)) + body


class DurableConsumer:
    """At-least-once delivery of one named durable subscription to its bound sessions."""

    def __init__(self, broker: Broker, record: ConsumerRecord) -> None:
        self.broker = broker
        self.rec = record
        self.match = compile_pattern(record.pattern)
        self.sessions: list[DurableSession] = []
        now = time.monotonic()
        # After a restart nothing is in flight: every pending id is due again.
        self.pending: dict[int, _Pending] = {
            i: _Pending(a, now, None, None) for i, a in record.pending.items()
        }
        self.due: deque[int] = deque(sorted(record.pending))
        self.ready: deque[tuple[int, bytes]] = deque()
        self.scan_pos = record.cursor
        self.dirty = False
        self.deleted = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._turn = 0

    @property
    def name(self) -> str:
        return self.rec.name

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"durable-{self.rec.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for s in self.sessions:
            s.outbox.close()

    def snapshot(self) -> ConsumerRecord:
        cursor = self.ready[0][0] - 1 if self.ready else self.scan_pos
        rec = self.rec
        rec.cursor = cursor
        rec.pending = {i: p.attempt for i, p in self.pending.items()}
        return rec

    # -- sessions ---------------------------------------------------------------------------

    def attach(
        self, max_message_bytes: int, *, limit: int = 0, kind: str = "stream"
    ) -> DurableSession:
        session = DurableSession(self, max_message_bytes, limit, kind)
        self.sessions.append(session)
        self._wake.set()
        return session

    def detach(self, session: DurableSession, *, keep_pending: bool = False) -> None:
        """Unbinds ``session``. What it held is due again now (a stream that went away), or,
        with ``keep_pending`` (a poll), stays pending until acked or its deadline passes."""
        if session in self.sessions:
            self.sessions.remove(session)
        session.outbox.close()
        for i, p in self.pending.items():
            if p.session is session:
                p.session = None
                if not keep_pending:
                    p.deadline = 0.0
                    self.due.append(i)
        self._wake.set()

    # -- from the publish path ----------------------------------------------------------------

    def on_commit(self, batch: Batch, frames: list[tuple[int, bytes]], prev_head: int) -> None:
        """A batch was stored. Take it from memory when caught up; else the log has it.

        ``prev_head`` is the broker's head when the batch was staged: a consumer whose scan
        position is there has seen everything before this batch. A batch at or below the
        scan position was already read from the log (the store makes rows readable before
        the publisher's coroutine resumes) and must not be taken twice.
        """
        if batch.last_id <= self.scan_pos or self.scan_pos < prev_head:
            return
        if batch.org == self.rec.org and self.match(batch.subject):
            if len(self.ready) > self.rec.max_in_flight * 4 + 10_000:
                # Too far behind to buffer: drop back to reading the log from the first
                # event not yet handed out (taken before the buffer is dropped).
                cursor = self.ready[0][0] - 1
                self.ready.clear()
                self.scan_pos = cursor
                return
            self.ready.extend(frames)
        self.scan_pos = batch.last_id
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- acks -------------------------------------------------------------------------------

    def check_pending(self, ids: list[int]) -> None:
        missing = [i for i in ids if i not in self.pending]
        if missing:
            raise FailedPrecondition(
                f"{len(missing)} id(s) are not pending on durable {self.rec.name!r} "
                f"(first: {missing[0]})",
                reason="NOT_PENDING",
                hint="ack only ids delivered to you and not yet acked or dead-lettered",
                metadata={"ids": ",".join(map(str, missing[:20]))},
            )

    def ack(self, ids: list[int], *, strict: bool = True) -> None:
        """Acknowledges ``ids``. Strict (a unary call): all or nothing, one id not pending
        refuses them all. Lenient (a stream): ids no longer pending are skipped and counted,
        since at-least-once makes late acks normal (the event was redelivered to another
        member and acked there, or dead-lettered)."""
        ids = list(dict.fromkeys(ids))  # an id repeated in one ack counts once
        if strict:
            self.check_pending(ids)
        else:
            known = [i for i in ids if i in self.pending]
            if len(known) < len(ids):
                self.broker.telemetry.stale_acks.add(len(ids) - len(known))
            ids = known
        for i in ids:
            p = self.pending.pop(i)
            if p.session is not None:
                p.session.in_flight -= 1
        self.dirty = True
        self._wake.set()

    def nack(self, ids: list[int], delay: float, *, strict: bool = True) -> None:
        """Redelivers ``ids`` after ``delay`` seconds; strict or lenient as :meth:`ack`."""
        ids = list(dict.fromkeys(ids))
        if strict:
            self.check_pending(ids)
        else:
            ids = [i for i in ids if i in self.pending]
        now = time.monotonic()
        for i in ids:
            p = self.pending[i]
            if p.session is not None:
                p.session.in_flight -= 1
                p.session = None
            if delay <= 0:
                p.deadline = 0.0
                self.due.append(i)
            else:
                p.deadline = now + delay
        self._wake.set()

    async def terminate(self, ids: list[int]) -> None:
        """Dead-letters pending ``ids`` now, without further deliveries."""
        ids = list(dict.fromkeys(ids))
        self.check_pending(ids)
        for i in ids:
            p = self.pending[i]
            if p.session is not None:
                p.session.in_flight -= 1
                p.session = None
            p.deadline = 0.0
        await self._dead_letter(ids)
        self.dirty = True
        self._wake.set()

    def redrive(self, ids: list[int]) -> None:
        for i in ids:
            if i not in self.pending:
                self.pending[i] = _Pending(0, 0.0, None, None)
                self.due.append(i)
        self.dirty = True
        self._wake.set()

    def expire(self, now: float) -> None:
        """Makes deliveries whose ack deadline (or nack delay) passed due again."""
        found = False
        for i, p in self.pending.items():
            if p.deadline and p.deadline <= now:
                if p.session is not None:
                    p.session.in_flight -= 1
                    p.session = None
                p.deadline = 0.0
                self.due.append(i)
                found = True
        if found:
            self._wake.set()

    # -- the dispatch loop ------------------------------------------------------------------

    def _capacity(self) -> int:
        in_flight = sum(s.in_flight for s in self.sessions)
        return self.rec.max_in_flight - in_flight

    def _pick(self) -> DurableSession | None:
        live = [
            s
            for s in self.sessions
            if not s.outbox.closed and (not s.limit or s.in_flight < s.limit)
        ]
        streams = [s for s in live if s.kind != "webhook"]
        if streams:
            live = streams
        if not live:
            return None
        self._turn += 1
        return min(live, key=lambda s: (s.in_flight, (id(s) + self._turn) % 7))

    async def pump(self) -> None:
        """Dispatches now, in the caller's task (a poll that wants its events at once)."""
        async with self._lock:
            await self._dispatch()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    await self._dispatch()
            except BrokerError as exc:
                self.broker.log.warning("durable %s: %s", self.rec.name, exc)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _dispatch(self) -> None:
        if not self.sessions:
            return
        cap = self._capacity()
        if cap <= 0:
            return
        if self.due:
            cap = await self._redeliver(cap)
        if cap <= 0:
            return
        if not self.ready and self.scan_pos < self.broker.head:
            await self._read_log()
        if not self.ready:
            return
        session = self._pick()
        if session is None:
            return
        take = min(cap, len(self.ready))
        bound = len(self.sessions)
        if bound > 1:  # share among the bound sessions, as a queue group does
            take = min(take, max(1, cap // bound))
        if session.limit:
            take = min(take, session.limit - session.in_flight)
        deadline = time.monotonic() + self.rec.ack_wait_ms / 1000
        frames = []
        pending = self.pending
        ready = self.ready
        for _ in range(take):
            i, frame = ready.popleft()
            if i in pending:  # defensive: never hand out an id twice as a first delivery
                continue
            pending[i] = _Pending(1, deadline, frame, session)
            frames.append(frame)
        if not frames:
            return
        session.in_flight += len(frames)
        session.outbox.put(b"".join(frames), len(frames))
        self.dirty = True
        if self.ready:
            self._wake.set()

    async def _read_log(self) -> None:
        head = self.broker.stable_head()
        batches = await self.broker.store.read_batches(self.rec.org, self.scan_pos, limit=64)
        for b in batches:
            if self.match(b.subject):
                pos = self.scan_pos
                self.ready.extend(f for f in wire.split_frames(b.body) if f[0] > pos)
            self.scan_pos = max(self.scan_pos, b.last_id)
        if len(batches) < 64:
            self.scan_pos = max(self.scan_pos, head)
        self._wake.set()

    async def _redeliver(self, cap: int) -> int:
        now = time.monotonic()
        dead: list[int] = []
        while self.due and cap > 0:
            i = self.due.popleft()
            p = self.pending.get(i)
            if p is None or p.session is not None or p.deadline:
                continue
            if p.attempt >= self.rec.max_deliveries:
                dead.append(i)
                continue
            frame = p.frame or await self.broker.fetch_frame(self.rec.org, i)
            if frame is None:  # trimmed by retention meanwhile
                self.pending.pop(i, None)
                continue
            session = self._pick()
            if session is None:
                self.due.appendleft(i)
                break
            p.attempt += 1
            p.frame = frame
            p.session = session
            backoff = min(2 ** (p.attempt - 1), 32)
            p.deadline = now + self.rec.ack_wait_ms / 1000 * backoff
            session.in_flight += 1
            session.outbox.put(_reencode(frame, p.attempt))
            cap -= 1
        if dead:
            await self._dead_letter(dead)
        self.dirty = True
        return cap

    async def _dead_letter(self, ids: list[int]) -> None:
        now_ms = int(time.time() * 1000)
        records = []
        for i in ids:
            p = self.pending.pop(i)
            records.append(DeadLetterRecord(self.rec.org, self.rec.name, i, p.attempt, now_ms))
        await self.broker.store.add_dead_letters(records)
        await self.broker.publish_dead_letters(self.rec, records)
        self.broker.telemetry.dead_lettered.add(len(records))
