"""At-least-once durable consumers and the sessions bound to them.

A consumer hands out at most ``max_in_flight`` unacked events and keeps the rest in the log,
so it never overflows. Its state is a log position (everything behind it was handed out)
plus a sparse pending table (delivered, unacknowledged ids and their attempts), both written
incrementally through :meth:`broker.store.ConsumerStateStore.change_consumer`: an ack
deletes a row, a redelivery updates one. A first delivery gets no row while it is young
(under :data:`WRITE_AFTER`): most are acked within milliseconds, and the stored position
stays before the oldest young one still unacked, so a crash hands it out again from the log.
:meth:`DurableConsumer.flush` (every 50 ms, and at once for a unary ack) moves the stored
position up to there, and inserts rows for the first deliveries that grew old unacked.

The pending ids' own states (in flight, waiting, due) live in
:class:`~broker.delivery.pending.PendingTable`; this module dispatches: reads the log, takes
commits from memory, hands out first deliveries and redeliveries, and dead-letters.

Read permission holds per delivered subject: a consumer takes only the batches whose subject
its owner (who created it) may subscribe to, decided once per batch; a session bound by
another principal of the org gets only events its own principal may read, decided per event
while such a session is bound (an event none of the bound sessions may read waits for one
that may).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import NamedTuple, Protocol

from lockgate.broker import wire
from lockgate.broker.auth import Principal
from lockgate.broker.bounds import check_setting
from lockgate.broker.deadletters import is_dead_letter, may_read_dead_letter
from lockgate.broker.delivery.host import DurableHost
from lockgate.broker.delivery.outbox import Outbox
from lockgate.broker.delivery.pending import Pending, PendingTable
from lockgate.broker.delivery.recent import RecentCommits
from lockgate.broker.errors import BrokerError, FailedPrecondition
from lockgate.broker.publisher import decode_publisher
from lockgate.broker.store import Batch, ConsumerRecord, DeadLetterRecord, LogPosition
from lockgate.broker.subjects import compile_pattern
from lockgate.broker.v1 import broker_pb2

__all__ = ["BoundSession", "DurableConsumer", "DurableSession"]

_LOG_PAGE = 64
"""Batches per read when the consumer reads the log instead of taking commits from memory."""
_REDELIVER_STEP = 256
"""Redeliveries re-encoded between two yields to the event loop: a round of a durable's
whole window (up to 100,000 events, several microseconds each) would otherwise hold the loop,
and every org's publishes, for the length of the round."""

WRITE_AFTER = 1.0
"""Seconds a first delivery may stay unacked without a row in the store. Until then the
stored position stays before it (a crash delivers it, and whatever was delivered after it,
again); after that the next flush writes its row and the position moves past it. So an ack
on a stream is stored at most this long (plus a flush interval) after its event's delivery,
or a flush interval after the ack, whichever is later."""
"""Batches per read when the consumer reads the log instead of taking commits from memory."""


class BoundSession(Protocol):
    """What a stream bound to a durable uses: the deliveries' outbox, acks, nacks and the
    end. A :class:`DurableSession` of a consumer in this node, or a relay to the node that
    runs the consumer (``broker.durable_relay``)."""

    outbox: Outbox

    def ack(self, ids: list[int], *, strict: bool = False) -> Awaitable[None]:
        """See :meth:`DurableConsumer.ack` (lenient by default, as on a stream)."""

    def nack(self, ids: list[int], delay: float, *, strict: bool = False) -> Awaitable[None]:
        """See :meth:`DurableConsumer.nack`."""

    def close(self) -> None:
        """Unbinds the stream; what it held is due again."""


class DurableSession:
    """One receiver bound to a durable consumer: a gRPC or WebSocket stream (``stream``), a
    poll (``poll``) or the webhook dispatcher (``webhook``). Streams are preferred: the
    webhook only gets events while no stream is bound (an agent's delivery preference).
    ``outbox``: where its deliveries go (default: a new one; a relay's forwards them)."""

    def __init__(
        self,
        consumer: DurableConsumer,
        max_message_bytes: int,
        limit: int = 0,
        kind: str = "stream",
        reader: Principal | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.consumer = consumer
        self.outbox = outbox if outbox is not None else Outbox(max_message_bytes)
        self.in_flight = 0
        self.limit = limit
        self.kind = kind
        self.on_detach: Callable[[], None] | None = None
        """Called once when the session is detached (releases its subscription quota)."""
        self.reader = reader
        """The principal whose read permission each event needs, when it is not the
        consumer's owner (None: the owner's, checked when the log was read)."""

    def ack(self, ids: list[int], *, strict: bool = False) -> Awaitable[None]:
        return self.consumer.ack(ids, strict=strict)

    def nack(self, ids: list[int], delay: float, *, strict: bool = False) -> Awaitable[None]:
        self.consumer.nack(ids, delay, strict=strict)
        return _settled()

    def close(self) -> None:
        self.consumer.detach(self)


def _reencode(frame: bytes, attempt: int) -> bytes:
    d = broker_pb2.Delivery.FromString(wire.frame_body(frame))
    d.attempt = attempt
    body = d.SerializeToString()
    return b"\x12" + wire.encode_varint(len(body)) + body


def _entries(
    seq: int, frames: list[tuple[int, bytes]], subject: str, pos: LogPosition
) -> list[tuple[int, int, bytes, str]]:
    """``ready`` entries for the frames of batch ``seq`` not behind ``pos``."""
    if pos.seq != seq or not pos.id:  # none of them is behind: no test per event
        return [(seq, i, f, subject) for i, f in frames]
    return [(seq, i, f, subject) for i, f in frames if i > pos.id]


def _subject_of(frame: bytes) -> str:
    return broker_pb2.Delivery.FromString(wire.frame_body(frame)).subject


class _Run(NamedTuple):
    """First deliveries handed out together (at ``at``, monotonic), in log order."""

    at: float
    ids: list[int]


def _settled() -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class DurableConsumer:
    """At-least-once delivery of one named durable subscription to its bound sessions."""

    def __init__(
        self,
        host: DurableHost,
        record: ConsumerRecord,
        max_bytes: int = 64 << 20,
        recent: RecentCommits | None = None,
    ) -> None:
        self.host = host
        self.recent = recent if recent is not None else RecentCommits()
        """The node's recent commits, read before the store when the consumer is behind."""
        self.rec = record
        self.backoff: Callable[[], int] = lambda: 32
        """The longest redelivery wait in ack waits (the node's live setting ``backoff``)."""
        self.max_bytes = max_bytes
        """Bytes of frames held for unacknowledged deliveries, and (apart) of frames read
        ahead in ``ready``: past it, nothing more is handed out until acks free some, and
        commits are left in the log instead of memory."""
        self._ready_bytes = 0
        self.match = compile_pattern(record.pattern)
        agent, roles = decode_publisher(record.owner)
        self.owner = Principal(record.org, agent, roles)
        """Whose read permission filters the log (see the module docstring)."""
        self.sessions: list[DurableSession] = []
        self.table = PendingTable(record.pending)
        self.ready: deque[tuple[int, int, bytes, str]] = deque()
        """(batch sequence, id, frame, subject) read from the log or taken from commits, in
        log order."""
        self.position = record.position
        """Where reading continues: everything behind it is in ``ready`` or handed out."""
        self.delivered_id = record.delivered_id
        self.deleted = False
        self.new_secret = ""
        """A webhook durable's secret, set by the create that made it and taken (emptied) by
        that call's answer: a secret is shown once."""
        self._young: dict[int, int] = {}
        """First deliveries not written and not acked yet -> their batch sequences, in
        hand-out order (log order)."""
        self._runs: deque[_Run] = deque()
        """First deliveries by hand-out time; acked ones are skipped when they grow old."""
        self._written = record.position
        """The position last given to the store."""
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._turn = 0
        self._awaited = 0
        """A committed sequence the consumer found neither in ``recent`` nor handed over
        at the last tick (see :meth:`poke`); 0: none."""
        self._from_store = False

    @property
    def name(self) -> str:
        return self.rec.name

    @property
    def handed_out(self) -> LogPosition:
        """Everything behind this was handed out (what the store keeps as the position)."""
        if self.ready:
            seq, first, _, _ = self.ready[0]
            return LogPosition(seq, first - 1)
        return self.position

    @property
    def pending(self) -> dict[int, Pending]:
        """Delivered, unacknowledged ids and their state (read-only to callers)."""
        return self.table.entries

    @property
    def ack_floor(self) -> int:
        """The highest id at and below which nothing delivered is still pending."""
        return min(self.pending) - 1 if self.pending else self.delivered_id

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"durable-{self.rec.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for s in self.sessions:
            s.outbox.close()
        try:
            # Awaited: in a cluster the next owner loads this state once the lease goes.
            await self.flush(force=True)
        except BrokerError as exc:
            self.host.log.warning(
                "durable.state.not_stored: durable %s: its last state was not stored: %s",
                self.name,
                exc,
            )

    def flush(self, *, force: bool = False) -> Awaitable[None]:
        """Writes the position up to the oldest young first delivery still unacked, and a
        row for each first delivery unacked for :data:`WRITE_AFTER` (with ``force``: for
        every one, and the position past all handed out).

        A first delivery is not written when it is handed out: most are acked within
        milliseconds, and an ack of a delivery never written costs nothing. The stored
        position stays before the oldest unwritten one, so a crash hands it and those after
        it out again (at-least-once). The node flushes every consumer every 50 ms; a unary
        ack and a dead letter flush with ``force``, so that they are stored at once."""
        if self.deleted or (not self._young and self.handed_out == self._written):
            return _settled()
        return self._record(flush=True, force=force)

    def _grown_old(self, now: float) -> list[int]:
        """Takes the young ids handed out before ``now - WRITE_AFTER`` out of the young."""
        young, runs = self._young, self._runs
        old: list[int] = []
        cutoff = now - WRITE_AFTER
        while runs and runs[0].at <= cutoff:
            old.extend(i for i in runs.popleft().ids if young.pop(i, None) is not None)
        return old

    def _oldest_young(self) -> LogPosition | None:
        """The position just before the oldest young id (None: none is young). The young
        are kept in hand-out order, which is log order, so it is the first."""
        for i, seq in self._young.items():
            return LogPosition(seq, i - 1)
        return None

    def _record(
        self,
        *,
        put: dict[int, int] | None = None,
        drop: Iterable[int] = (),
        flush: bool = False,
        force: bool = False,
    ) -> Awaitable[None]:
        if self.deleted:
            return _settled()
        young = self._young
        drops = []
        for i in drop:
            if young.pop(i, None) is None:
                drops.append(i)  # written before: its row goes (a young one has none)
        if put:
            for i in put:
                young.pop(i, None)  # written now, with its attempt
        delivered: list[int] = []
        position = None
        if flush:
            if force:
                delivered = list(young)
                young.clear()
                self._runs.clear()
            else:
                delivered = self._grown_old(time.monotonic())
            here = self._oldest_young() or self.handed_out
            if here != self._written:
                position = self._written = here
        if not (drops or put or delivered or position):
            return _settled()
        return self.host.store.change_consumer(
            self.rec.org,
            self.rec.name,
            delivered=delivered,
            put=put,
            drop=drops,
            position=position,
            delivered_id=self.delivered_id,
        )

    # -- sessions ---------------------------------------------------------------------------

    def wants(self, subject: str) -> bool:
        """Whether a batch of ``subject`` is for this consumer: its pattern matches and its
        owner may read it."""
        return self.match(subject) and self.host.may_read(self.owner, subject)

    def attach(
        self,
        max_message_bytes: int,
        *,
        limit: int = 0,
        kind: str = "stream",
        principal: Principal | None = None,
        outbox: Outbox | None = None,
    ) -> DurableSession:
        """Binds a receiver; ``principal`` is who binds it (None: the owner or the broker
        itself), whose read permission then holds for each event it gets."""
        reader = None
        if principal is not None and (principal.agent, principal.roles) != (
            self.owner.agent,
            self.owner.roles,
        ):
            reader = principal
        session = DurableSession(self, max_message_bytes, limit, kind, reader, outbox)
        self.sessions.append(session)
        self._wake.set()
        return session

    def detach(self, session: DurableSession, *, keep_pending: bool = False) -> None:
        """Unbinds ``session``. What it held is due again now (a stream that went away), or,
        with ``keep_pending`` (a poll), stays pending until acked or its deadline passes."""
        if session in self.sessions:
            self.sessions.remove(session)
        release, session.on_detach = session.on_detach, None
        if release is not None:
            release()
        session.outbox.close()
        self.table.release(session, keep=keep_pending)
        self._wake.set()

    # -- from the publish path ----------------------------------------------------------------

    def on_commit(self, batch: Batch, seq: int, frames: list[tuple[int, bytes]]) -> None:
        """Batch ``seq`` was committed. Take it from memory when it is the next batch of the
        log; a batch behind the position was read already (the store makes rows readable
        before the publisher's coroutine resumes), and one beyond it means the consumer is
        behind: it reads the recent commits (or the log)."""
        pos = self.position
        if seq != pos.seq:
            if seq > pos.seq:
                self._wake.set()
            return
        if batch.org == self.rec.org and self.wants(batch.subject):
            if (
                len(self.ready) > self.rec.max_in_flight * 4 + 10_000
                or self._ready_bytes > self.max_bytes
            ):
                # Enough buffered: leave the position here and read on from the recent
                # commits (or the log) once the buffer has gone out.
                self._wake.set()
                return
            subject = batch.subject
            frames = frames or wire.split_frames(batch.body)  # a shared log's feed: not split
            self.ready.extend(self._owned(_entries(seq, frames, subject, pos), subject))
            self._ready_bytes += len(batch.body)  # the frames, unless some were handed out
        self.position = LogPosition(seq + 1)
        self._wake.set()

    def poke(self) -> None:
        """From the node's ticker. A committed batch is normally handed over by its
        publisher's coroutine moments after the commit; one that is still missing a tick
        later (that coroutine went away in between) is read from the store."""
        seq = self.position.seq
        if self.ready or not self._behind() or self.recent.since(seq, 1):
            self._awaited = 0  # nothing awaited, or at hand once the consumer has room
        elif self._awaited == seq:
            self._from_store = True
            self._wake.set()
        else:
            self._awaited = seq

    def wake(self) -> None:
        self._wake.set()

    def _behind(self) -> bool:
        """Whether the log holds batches past the position, or the position lies in another
        log than the org's (the registry re-pinned the org: reading goes on in its new one)."""
        store, org, seq = self.host.store, self.rec.org, self.position.seq
        return seq <= store.committed_seq(org) or not store.in_log(org, seq)

    # -- acks -------------------------------------------------------------------------------

    def check_pending(self, ids: list[int]) -> None:
        missing = self.table.missing(ids)
        if missing:
            raise FailedPrecondition(
                f"{len(missing)} id(s) are not pending on durable {self.rec.name!r} "
                f"(first: {missing[0]})",
                reason="NOT_PENDING",
                hint="ack only ids delivered to you and not yet acked or dead-lettered",
                metadata={"ids": ",".join(map(str, missing[:20]))},
            )

    def ack(self, ids: list[int], *, strict: bool = True) -> Awaitable[None]:
        """Acknowledges ``ids``; the returned awaitable completes once the acks are stored.

        Strict (a unary call): all or nothing, one id not pending refuses them all. Lenient
        (a stream): ids no longer pending are skipped and counted, since at-least-once
        makes late acks normal (the event was redelivered to another member and acked
        there, or dead-lettered)."""
        ids = list(dict.fromkeys(ids))  # an id repeated in one ack counts once
        if strict:
            self.check_pending(ids)
        else:
            entries = self.table.entries
            known = [i for i in ids if i in entries]
            if len(known) < len(ids):
                self.host.telemetry.stale_acks.add(len(ids) - len(known))
            ids = known
        if not ids:
            return _settled()
        self.table.settle(ids)
        self._wake.set()
        return self._record(drop=ids, flush=strict, force=strict)

    def nack(self, ids: list[int], delay: float, *, strict: bool = True) -> None:
        """Redelivers ``ids`` after ``delay`` seconds; strict or lenient as :meth:`ack`.
        Nothing is stored: the attempt counts when the redelivery happens."""
        check_setting("nack_delay", delay)
        ids = list(dict.fromkeys(ids))
        if strict:
            self.check_pending(ids)
        else:
            entries = self.table.entries
            ids = [i for i in ids if i in entries]
        self.table.nack(ids, delay, time.monotonic())
        self._wake.set()

    async def terminate(self, ids: list[int]) -> None:
        """Dead-letters pending ``ids`` now, without further deliveries."""
        ids = list(dict.fromkeys(ids))
        self.check_pending(ids)
        self.table.stop_clocks(ids)
        await self._dead_letter(ids)
        self._wake.set()

    def redrive(self, ids: list[int]) -> Awaitable[None]:
        """Makes dead-lettered ``ids`` pending and due again."""
        back = self.table.restore(ids)
        self._wake.set()
        return self._record(put=back) if back else _settled()

    def expire(self, now: float) -> None:
        """Makes deliveries whose ack deadline (or nack delay) passed due again."""
        if self.table.expire(now):
            self._wake.set()

    # -- the dispatch loop ------------------------------------------------------------------

    def _capacity(self) -> int:
        in_flight = sum(s.in_flight for s in self.sessions)
        return self.rec.max_in_flight - in_flight

    def _owned(
        self, entries: list[tuple[int, int, bytes, str]], subject: str
    ) -> list[tuple[int, int, bytes, str]]:
        """``entries`` less, on a ``$dlq`` subject, the dead letters whose original subject
        the owner may not read."""
        if not is_dead_letter(subject):
            return entries
        owner = self.owner
        return [
            e for e in entries if may_read_dead_letter(lambda s: self.host.may_read(owner, s), e[2])
        ]

    def _live(self, subject: str | None = None, frame: bytes = b"") -> list[DurableSession]:
        """The sessions that can take a delivery now (of ``subject``, when given: only
        those whose reader may read it), streams before the webhook."""
        live = [
            s
            for s in self.sessions
            if not s.outbox.closed and (not s.limit or s.in_flight < s.limit)
        ]
        if subject is not None:
            live = [s for s in live if self._may_take(s, subject, frame)]
        streams = [s for s in live if s.kind != "webhook"]
        return streams or live

    def _may_take(self, session: DurableSession, subject: str, frame: bytes = b"") -> bool:
        """Whether the session's reader may read an event of ``subject`` (a dead letter,
        ``frame``: its original subject too)."""
        reader = session.reader
        if reader is None:
            return True
        if not self.host.may_read(reader, subject):
            return False
        if frame and is_dead_letter(subject):
            return may_read_dead_letter(lambda s: self.host.may_read(reader, s), frame)
        return True

    def _checked(self) -> bool:
        """Whether a bound session reads with another principal than the owner's."""
        return any(s.reader is not None for s in self.sessions)

    def _pick(self, subject: str | None = None, frame: bytes = b"") -> DurableSession | None:
        live = self._live(subject, frame)
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
                self.host.log.warning("durable.error: durable %s: %s", self.rec.name, exc)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _dispatch(self) -> None:
        if not self.sessions:
            return
        cap = self._capacity()
        if cap <= 0:
            return
        if self.table.due:
            cap = await self._redeliver(cap)
        if cap <= 0:
            return
        if not self.ready and self._behind():
            await self._read_log()
        if not self.ready:
            return
        live = self._live()
        if not live:
            return
        # Bound sessions share the events at hand (a queue group): each gets an even share
        # of what can go out now, in log order, instead of the first taking everything.
        share = math.ceil(min(cap, len(self.ready)) / len(live))
        deadline = time.monotonic() + self.rec.ack_wait_ms / 1000
        table = self.table
        ready = self.ready
        budget = self.max_bytes
        last = 0
        checked = self._checked()
        fresh: list[int] = []
        young = self._young
        entries = table.entries
        popped = 0
        while ready and cap > 0 and table.bytes < budget:
            head = ready[0][3] if checked else None
            session = self._pick(head, ready[0][2] if checked else b"")
            if session is None:
                break  # with a check: no bound session may read the next event; it waits
            take = min(cap, share, len(ready))
            if session.limit:
                take = min(take, session.limit - session.in_flight)
            frames: list[bytes] = []
            taken = 0
            room = budget - table.bytes
            size = 0
            # Per-event work: PendingTable.hand_out inlined (this loop runs for every event).
            while taken < take and ready and size < room:
                if checked:
                    subject = ready[0][3]
                    if (subject != head or is_dead_letter(subject)) and not self._may_take(
                        session, subject, ready[0][2]
                    ):
                        break
                seq, i, frame, _ = ready.popleft()
                popped += len(frame)
                taken += 1
                last = i
                # Defensive: never hand out an id twice as a first delivery (one that is
                # pending after a restart is due again, as a redelivery).
                if i not in entries:
                    entries[i] = Pending(1, deadline, frame, session)
                    size += len(frame)
                    frames.append(frame)
                    young[i] = seq  # written by a flush once old, unless acked before
                    fresh.append(i)
            table.bytes += size
            if frames:
                session.in_flight += len(frames)
                session.outbox.put(b"".join(frames), len(frames))
            cap -= taken
        self._ready_bytes = self._ready_bytes - popped if ready else 0
        if last:
            self.delivered_id = last
        if fresh:
            self._runs.append(_Run(time.monotonic(), fresh))
        if self.ready and table.bytes < budget:  # at the budget, an ack wakes it
            self._wake.set()

    async def _read_log(self) -> None:
        pos = self.position
        moved = not self.host.store.in_log(self.rec.org, pos.seq)
        recent = None if self._from_store or moved else self.recent.since(pos.seq, _LOG_PAGE)
        if recent is not None:
            # In memory: nothing awaited, so no commit can slip past meanwhile. Empty: the
            # next batch is committed but not handed over yet; on_commit brings it.
            for seq, b, frames in recent:
                if b.org == self.rec.org and self.wants(b.subject):
                    subject = b.subject
                    # Frames not split yet when nobody took the batch at its commit.
                    frames = frames or wire.split_frames(b.body)
                    self.ready.extend(self._owned(_entries(seq, frames, b.subject, pos), subject))
                    self._ready_bytes += len(b.body)
                pos = self.position = LogPosition(seq + 1)
            if recent:
                self._wake.set()
            return
        self._from_store = False
        head = self.host.store.committed_seq(self.rec.org)
        # A bounded, index-driven step: the pattern is matched in the store's scan, so a
        # durable catching up on a large org reads only the batches it wants.
        scan = await self.host.store.scan_log(
            self.rec.org, pos, self.match, limit=_LOG_PAGE, pattern=self.rec.pattern
        )
        if moved and self.position == pos:
            # The scan went on in the org's new log (see EventLog.in_log): its batches and
            # its next position are there, whatever their sequences next to the old ones.
            self.position = LogPosition(0)
        for b in scan.batches:
            # Read after the await: commits taken from memory meanwhile moved the position.
            pos = self.position
            if b.seq < pos.seq:
                continue
            if self.host.may_read(self.owner, b.subject):
                subject = b.subject
                self.ready.extend(
                    self._owned(
                        [
                            (b.seq, i, f, subject)
                            for i, f in wire.split_frames(b.body)
                            if not pos.includes(b.seq, i)
                        ],
                        subject,
                    )
                )
                self._ready_bytes += len(b.body)
            self.position = LogPosition(b.seq + 1)
        if scan.next > self.position.seq:
            self.position = LogPosition(scan.next)  # past what did not match
        if scan.done and self.position.seq <= head:
            self.position = LogPosition(head + 1)
        self._wake.set()

    async def _redeliver(self, cap: int) -> int:
        now = time.monotonic()
        dead: list[int] = []
        gone: list[int] = []
        attempts: dict[int, int] = {}
        table = self.table
        checked = self._checked()
        step = 0
        while cap > 0:
            if step == _REDELIVER_STEP:
                step = 0
                await asyncio.sleep(0)  # others run between steps (fairness between orgs)
            item = table.next_due()
            if item is None:
                break
            step += 1
            i, p = item
            if p.attempt >= self.rec.max_deliveries:
                dead.append(i)
                continue
            if p.frame is None and table.bytes >= self.max_bytes:
                table.due.appendleft(i)  # its frame would pass the byte budget: after acks
                break
            frame = p.frame or await self.host.fetch_frame(self.rec.org, i)
            if frame is None:  # trimmed by retention meanwhile
                table.settle([i])
                gone.append(i)
                continue
            session = self._pick(_subject_of(frame) if checked else None, frame)
            if session is None:
                table.due.appendleft(i)
                break
            table.redeliver(p, frame, session, now, self.rec.ack_wait_ms / 1000, self.backoff())
            session.outbox.put(_reencode(frame, p.attempt))
            attempts[i] = p.attempt
            cap -= 1
        if attempts or gone:
            self._record(put=attempts, drop=gone)
        if dead:
            await self._dead_letter(dead)
        return cap

    async def _dead_letter(self, ids: list[int]) -> None:
        now_ms = int(time.time() * 1000)
        records = [
            DeadLetterRecord(self.rec.org, self.rec.name, i, p.attempt, now_ms)
            for i, p in zip(ids, self.table.settle(ids), strict=True)
        ]
        await self.host.store.add_dead_letters(records)
        # Forced: a young one must not come back from the log after a crash.
        await self._record(drop=ids, flush=True, force=True)
        await self.host.publish_dead_letters(self.rec, records)
        self.host.telemetry.dead_lettered.add(len(records))
