"""The broker in one process: the publish pipeline and the in-process API.

Gateways and the gRPC server both call :class:`Broker`, so there is one contract. The
publish path per batch (see ../shared/DESIGN.md): validate -> decide (policy) -> dedup ->
ids -> route to ephemeral subscribers -> store (group commit) -> hand to durable consumers
-> answer the publisher.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from broker import wire
from broker.auth import Principal
from broker.config import Config
from broker.delivery import DurableConsumer, DurableSession, EphemeralSubscription
from broker.errors import (
    BrokerError,
    DeadlineExceeded,
    EventTooLarge,
    FailedPrecondition,
    InvalidArgument,
    InvalidEvent,
    InvalidStart,
    NotFound,
    Unavailable,
)
from broker.ids import IdGenerator, id_for_time_ms, time_ms_of
from broker.policyhook import PolicyGate
from broker.router import Router
from broker.store import Batch, ConsumerRecord, DeadLetterRecord, Store
from broker.subjects import (
    check_subscribe_pattern,
    compile_pattern,
    is_literal,
    validate_pattern,
    validate_subject,
)
from broker.telemetry import Span, Telemetry
from broker.v1 import broker_pb2, cloudevent_pb2

__all__ = ["Broker", "Prepared", "PublishOutcome", "StartSpec"]

CloudEvent = cloudevent_pb2.CloudEvent


@dataclass(slots=True)
class PublishOutcome:
    ids: list[int]
    duplicates: list[int] = field(default_factory=list)
    errors: list[tuple[int, BrokerError]] = field(default_factory=list)


@dataclass(slots=True)
class Prepared:
    """A batch that passed steps 1-5, staged for the store."""

    outcome: PublishOutcome
    batches: list[Batch] = field(default_factory=list)
    frames: list[list[tuple[int, bytes]]] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    """The broker's head before each batch was staged (what "caught up" means to it)."""
    keys: list[tuple[str, str, str]] = field(default_factory=list)
    started: float = 0.0
    span: Span | None = None
    stored: Awaitable[None] | None = None
    """The store's write of ``batches``, queued when they were staged."""


@dataclass(frozen=True, slots=True)
class StartSpec:
    policy: int = 0  # broker_pb2.StartPolicy
    since_ms: int = 0
    after_id: int = 0


_REQUIRED = attrgetter("id", "source", "type", "spec_version")


def _check_event(ev: CloudEvent) -> BrokerError | None:
    if ev.spec_version == "1.0" and ev.id and ev.source and ev.type:
        return None  # the common case, in one test
    if not (ev.id or ev.source or ev.type or ev.spec_version or ev.attributes) and (
        ev.WhichOneof("data") is None
    ):
        return InvalidEvent(
            "the event is empty", reason="EMPTY_EVENT", hint="set id, source, specversion, type"
        )
    missing = [
        n
        for n, v in (
            ("id", ev.id),
            ("source", ev.source),
            ("specversion", ev.spec_version),
            ("type", ev.type),
        )
        if not v
    ]
    if missing:
        return InvalidEvent(
            f"the event lacks the required CloudEvents attribute(s) {', '.join(missing)}",
            reason="MISSING_ATTRIBUTE",
            hint="every CloudEvent needs id, source, specversion and type",
            metadata={"missing": ",".join(missing)},
        )
    if ev.spec_version != "1.0":
        return InvalidEvent(
            f"specversion {ev.spec_version!r} is not supported",
            reason="INVALID_EVENT",
            hint='set specversion to "1.0"',
        )
    return None


def _publisher(principal: Principal) -> str:
    return principal.agent + "|" + ",".join(sorted(principal.roles))


class Broker:
    """One broker node. ``await start()``, use, ``await stop()``."""

    def __init__(self, config: Config, store: Store, policy: PolicyGate | None = None) -> None:
        self.config = config
        self.store = store
        self.policy = policy or PolicyGate()
        self.log = logging.getLogger("lockgate.broker")
        self.router = Router()
        self.ids = IdGenerator(config.worker_id)
        self.head = 0
        self.consumers: dict[tuple[str, str], DurableConsumer] = {}
        # (org, source, id) -> assigned id, and per batch (when, its keys) for expiry: the
        # bookkeeping is one dict store per event and one deque append per batch.
        self._dedup: dict[tuple[str, str, str], int] = {}
        self._dedup_order: collections.deque[tuple[float, list[tuple[str, str, str]]]] = (
            collections.deque()
        )
        self._inboxes: dict[tuple[str, str], asyncio.Future[CloudEvent]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.draining = False
        self.on_durable_created: list[Callable[[DurableConsumer], None]] = []
        self._unstored: dict[int, None] = {}
        """First ids of staged batches not yet stored (insertion-ordered, so the oldest is
        first): everything below the oldest is in the log."""
        self.telemetry = Telemetry()
        self.telemetry.observe_depths(self._depths)

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        self.head = await self.store.last_id()
        self.ids = IdGenerator(self.config.worker_id, floor=self.head)
        await self._rebuild_dedup()
        for rec in await self.store.load_consumers():
            c = DurableConsumer(self, rec)
            self.consumers[(rec.org, rec.name)] = c
            c.start()
        self._tasks = [
            asyncio.create_task(self._ticker(), name="lockgate-ticker"),
            asyncio.create_task(self._retention_loop(), name="lockgate-retention"),
        ]

    async def stop(self) -> None:
        self.draining = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self.consumers.values():
            await c.stop()
        await self._save_consumers(force=True)
        await self.store.close()

    def stable_head(self) -> int:
        """The highest id below which every staged batch is stored: a log read up to here
        misses nothing that is on its way."""
        for first in self._unstored:
            return first - 1
        return self.head

    def _depths(self) -> list[tuple[str, int]]:
        return [
            (f"durable:{org}/{name}", len(c.pending) + len(c.ready))
            for (org, name), c in self.consumers.items()
        ]

    async def _rebuild_dedup(self) -> None:
        since = id_for_time_ms(int((time.time() - self.config.dedup_window) * 1000))
        now = time.monotonic()
        for b in await self.store.recent_batches(since):
            keys = []
            for d in broker_pb2.SubscribeResponse.FromString(b.body).deliveries:
                key = (b.org, d.event.source, d.event.id)
                self._dedup[key] = d.id
                keys.append(key)
            age = max(0.0, time.time() - time_ms_of(b.last_id) / 1000)
            self._dedup_order.append((now - age, keys))

    def _expire_dedup(self, now: float) -> None:
        horizon = now - self.config.dedup_window
        order = self._dedup_order
        dedup = self._dedup
        while order and order[0][0] < horizon:
            for key in order.popleft()[1]:
                dedup.pop(key, None)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            self._expire_dedup(now)
            for c in self.consumers.values():
                if c.pending:
                    c.expire(now)
            await self._save_consumers()

    async def _save_consumers(self, force: bool = False) -> None:
        dirty = [c for c in self.consumers.values() if (c.dirty or force) and not c.deleted]
        for c in dirty:
            c.dirty = False
        if dirty:
            try:
                await asyncio.gather(*(self.store.save_consumer(c.snapshot()) for c in dirty))
            except BrokerError as exc:
                self.log.error("saving consumer state failed: %s", exc)
                for c in dirty:
                    c.dirty = True

    async def _retention_loop(self) -> None:
        rules = self.config.retention_rules()
        if not rules:
            return
        while True:
            try:
                removed = await self.store.trim(rules, int(time.time() * 1000))
                if removed:
                    self.log.info("retention removed %d events", removed)
            except BrokerError as exc:
                self.log.error("retention failed: %s", exc)
            await asyncio.sleep(5.0)

    # -- publish ----------------------------------------------------------------------------

    async def publish(
        self, principal: Principal, subject: str, events: Sequence[CloudEvent]
    ) -> PublishOutcome:
        """Validates, stores and routes one batch; per-event rejections are in the outcome."""
        return await self.commit(await self.prepare(principal, subject, events))

    async def prepare(
        self, principal: Principal, subject: str, events: Sequence[CloudEvent]
    ) -> Prepared:
        """Steps 1-5 and ephemeral routing. Callers that pipeline (the Publish stream) await
        ``prepare`` in arrival order, so ids and delivery order follow publish order, and run
        ``commit`` concurrently so one group commit covers many batches."""
        # One Python wrapper per event for the whole pipeline: indexing a parsed repeated
        # field builds a new one on every access.
        events = list(events)
        n = len(events)
        out = PublishOutcome([0] * n)
        prepared = Prepared(out, started=time.perf_counter())
        if self.draining:
            raise Unavailable(
                "the broker is shutting down", reason="SHUTTING_DOWN", hint="retry on another node"
            )
        try:
            validate_subject(subject)
        except BrokerError as exc:
            out.errors = [(i, exc) for i in range(n)]
            return prepared
        org = principal.org
        valid: list[int] = []
        limit = self.config.max_event_bytes
        # The required attributes of every event in one C-level pass; the policy gate reuses
        # them rather than reading the protobuf again.
        std = list(map(_REQUIRED, events))
        for i, (eid, source, type_, version) in enumerate(std):
            if version == "1.0" and eid and source and type_:
                valid.append(i)
                continue
            err = _check_event(events[i])
            if err is None:
                valid.append(i)
            else:
                out.errors.append((i, err))
        if subject.startswith("$inbox."):
            # A reply: validated like any event, handed to the waiting requester, not stored.
            for i in valid:
                size = events[i].ByteSize()
                if size > limit:
                    out.errors.append((i, EventTooLarge(size, limit)))
            refused = {j for j, _ in out.errors}
            good = [i for i in valid if i not in refused]
            self._reply(org, subject, [events[i] for i in good], out, good)
            return prepared
        gate = self.policy
        routes: dict[int, list[tuple[str, str]]] = {}
        tags: dict[int, bytes] = {}
        suffix = b""
        if gate.active and valid:
            verdicts = await gate.admit(principal, subject, events, valid, std=std)
            routes, tags, suffix = verdicts.routes, verdicts.tags, verdicts.all_tags
            for effect, count in verdicts.effects.items():
                self.telemetry.decisions.add(count, {"effect": effect})
            if verdicts.rejected:
                out.errors.extend(verdicts.rejected.items())
                valid = [i for i in valid if i not in verdicts.rejected]
        accepted: list[int] = []
        raws: list[bytes] = []
        keys: list[tuple[str, str, str]] = []
        dedup = self._dedup
        seen: dict[tuple[str, str, str], int] = {}
        # Policy tags are encoded attribute entries appended to the stored event (see
        # Verdicts); when every event gets the same ones the framing appends them.
        extra = len(suffix)
        for i in valid:
            raw = events[i].SerializeToString()
            if tags and i in tags:
                raw += tags[i]
            if len(raw) + extra > limit:
                out.errors.append((i, EventTooLarge(len(raw) + extra, limit)))
                continue
            eid, source = std[i][0], std[i][1]  # read once, during validation
            key = (org, source, eid)
            hit = dedup.get(key)
            if hit is not None:
                out.ids[i] = hit
                out.duplicates.append(i)
                continue
            if key in seen:  # the same (source, id) twice in one batch
                out.duplicates.append(i)
                continue
            seen[key] = i
            accepted.append(i)
            raws.append(raw)
            keys.append(key)
        if out.errors:
            out.errors.sort(key=lambda e: e[0])
            reasons = collections.Counter(e.reason for _, e in out.errors)
            for reason, count in reasons.items():
                self.telemetry.rejected.add(count, {"reason": reason})
        if not accepted:
            return prepared
        prepared.span = self.telemetry.start_publish(subject, len(accepted), events[accepted[0]])
        prepared.keys = keys
        if routes:
            accepted, raws = self._apply_routes(
                prepared, org, subject, accepted, raws, routes, _publisher(principal), suffix
            )
        if accepted:
            ids = self._stage(prepared, org, subject, raws, _publisher(principal), suffix)
            for i, event_id in zip(accepted, ids, strict=True):
                out.ids[i] = event_id
        ids_out = out.ids
        for key, i in seen.items():
            if ids_out[i]:
                dedup[key] = ids_out[i]
        self._dedup_order.append((time.monotonic(), keys))
        if prepared.batches:
            prepared.stored = self.store.append(prepared.batches)
        for i in out.duplicates:
            if not out.ids[i]:
                ev = events[i]
                out.ids[i] = out.ids[seen[(org, ev.source, ev.id)]]
        return prepared

    def _stage(
        self,
        prepared: Prepared,
        org: str,
        subject: str,
        raws: list[bytes],
        publisher: str = "",
        suffix: bytes = b"",
    ) -> list[int]:
        """Assigns ids, encodes one batch, routes it to ephemeral subscribers."""
        ids = self.ids.next_block(len(raws))
        encoded = wire.delivery_frames(ids, wire.subject_field(subject), raws, suffix)
        body = b"".join(encoded)
        batch = Batch(ids[0], ids[-1], org, subject, len(ids), self.policy.version, body, publisher)
        prepared.batches.append(batch)
        prepared.frames.append(list(zip(ids, encoded, strict=True)) if self.consumers else [])
        # Ephemeral (at-most-once) delivery starts now; durable delivery reads what is stored.
        self.router.route(org, subject, body, len(ids), ids)
        prepared.heads.append(self.head)
        if ids[-1] > self.head:
            self.head = ids[-1]
        self._unstored[ids[0]] = None
        return ids

    def _apply_routes(
        self,
        prepared: Prepared,
        org: str,
        subject: str,
        accepted: list[int],
        raws: list[bytes],
        routes: dict[int, list[tuple[str, str]]],
        publisher: str,
        suffix: bytes,
    ) -> tuple[list[int], list[bytes]]:
        """Policy routes: ``copy`` adds the event to another subject, ``redirect`` moves it
        there; either way the routed event carries ``lockgateroutedfrom``."""
        keep_idx: list[int] = []
        keep_raw: list[bytes] = []
        # The routed event is the stored one plus an appended attribute entry.
        marker = CloudEvent()
        marker.attributes["lockgateroutedfrom"].ce_string = subject
        origin = suffix + marker.SerializeToString()
        extra: dict[str, list[tuple[int, bytes, bool]]] = {}
        for i, raw in zip(accepted, raws, strict=True):
            redirected = False
            for target, mode in routes.get(i, ()):
                extra.setdefault(target, []).append((i, raw + origin, mode == "redirect"))
                redirected = redirected or mode == "redirect"
            if not redirected:
                keep_idx.append(i)
                keep_raw.append(raw)
        for target, items in extra.items():
            ids = self._stage(prepared, org, target, [r for _, r, _ in items], publisher)
            for (i, _, primary), event_id in zip(items, ids, strict=True):
                if primary and not prepared.outcome.ids[i]:
                    prepared.outcome.ids[i] = event_id
        return keep_idx, keep_raw

    async def commit(self, prepared: Prepared) -> PublishOutcome:
        """Step 6 (store, group commit) and the hand-over to durable consumers."""
        if prepared.stored is None:
            return prepared.outcome
        try:
            await prepared.stored
        except BrokerError as exc:
            for key in prepared.keys:
                self._dedup.pop(key, None)
            self.telemetry.end_publish(prepared.span, exc)
            raise
        finally:
            for batch in prepared.batches:
                self._unstored.pop(batch.first_id, None)
        consumers = self.consumers
        for batch, frames, prev_head in zip(
            prepared.batches, prepared.frames, prepared.heads, strict=True
        ):
            if consumers:
                if not frames:
                    frames = wire.split_frames(batch.body)
                for c in list(consumers.values()):
                    c.on_commit(batch, frames, prev_head)
            self.telemetry.published.add(batch.count)
        self.telemetry.publish_duration.record(time.perf_counter() - prepared.started)
        self.telemetry.end_publish(prepared.span, None)
        return prepared.outcome

    def _reply(
        self,
        org: str,
        subject: str,
        events: Sequence[CloudEvent],
        out: PublishOutcome,
        positions: list[int],
    ) -> None:
        if not events:
            return
        for i, event_id in zip(positions, self.ids.next_block(len(events)), strict=True):
            out.ids[i] = event_id
        fut = self._inboxes.get((org, subject))
        if fut is not None and not fut.done():
            fut.set_result(events[0])

    async def publish_system(self, org: str, subject: str, events: Sequence[CloudEvent]) -> None:
        """Stores events on a broker-owned ``$`` subject (dead letters)."""
        validate_subject(subject, allow_system=True)
        prepared = Prepared(PublishOutcome([]))
        self._stage(prepared, org, subject, [e.SerializeToString() for e in events])
        prepared.stored = self.store.append(prepared.batches)
        await self.commit(prepared)

    async def publish_dead_letters(
        self, rec: ConsumerRecord, records: Sequence[DeadLetterRecord]
    ) -> None:
        events = []
        for r in records:
            frame = await self.fetch_frame(rec.org, r.id)
            if frame is None:
                continue
            d = broker_pb2.Delivery.FromString(wire.frame_body(frame))
            ev = d.event
            ev.attributes["lockgatedlqdurable"].ce_string = rec.name
            ev.attributes["lockgatedlqattempts"].ce_integer = r.attempts
            ev.attributes["lockgateoriginalid"].ce_string = str(r.id)
            ev.attributes["lockgateoriginalsubject"].ce_string = d.subject
            events.append(ev)
        if events:
            await self.publish_system(rec.org, f"$dlq.{rec.name}", events)

    # -- subscribe --------------------------------------------------------------------------

    async def subscribe_ephemeral(
        self,
        principal: Principal,
        pattern: str,
        queue: str,
        buffer: int = 0,
        start: StartSpec = StartSpec(),
    ) -> EphemeralSubscription:
        """An at-most-once subscription. With a replaying ``start`` the stored events up to
        the head come first (as stored frames, no re-encoding), then live ones; an event
        stored while the replay runs may come twice."""
        self._check_pattern(principal, pattern)
        replay = start.policy not in (0, broker_pb2.START_POLICY_NEW)
        after = self.start_after(start) if replay else 0  # validates before subscribing
        sub = EphemeralSubscription(
            principal.org,
            pattern,
            queue,
            buffer or self.config.subscriber_buffer,
            self.config.max_message_bytes,
        )
        sub.on_slow = self._on_slow
        self.router.add(sub)
        if replay:
            await self._replay(sub, after, self.head)
        return sub

    async def _replay(self, sub: EphemeralSubscription, after: int, head: int) -> None:
        match = compile_pattern(sub.pattern)
        while after < head:
            batches = await self.store.read_batches(sub.org, after, limit=64)
            for b in batches:
                if match(b.subject) and b.first_id <= head:
                    if b.first_id > after and b.last_id <= head:
                        sub.outbox.put(b.body, b.count)  # the whole batch, as stored
                    else:
                        frames = [f for i, f in wire.split_frames(b.body) if after < i <= head]
                        if frames:
                            sub.outbox.put(b"".join(frames), len(frames))
                after = max(after, b.last_id)
            if len(batches) < 64:
                return

    def _on_slow(self, sub: EphemeralSubscription) -> None:
        self.telemetry.slow_consumers.add(1)
        self.log.warning("slow consumer %s on %s disconnected", sub.name, sub.pattern)
        self.router.remove(sub)

    def unsubscribe(self, sub: EphemeralSubscription) -> None:
        self.router.remove(sub)
        sub.outbox.close()

    def _check_pattern(self, principal: Principal, pattern: str) -> None:
        check_subscribe_pattern(pattern)
        if self.policy.active:
            err = self.policy.check_subscribe(principal, pattern)
            if err is not None:
                raise err

    def start_after(self, start: StartSpec) -> int:
        """The id after which a subscription starting at ``start`` begins."""
        policy = start.policy
        if policy in (broker_pb2.START_POLICY_UNSPECIFIED, broker_pb2.START_POLICY_NEW):
            return self.head
        if policy == broker_pb2.START_POLICY_ALL:
            return 0
        if policy == broker_pb2.START_POLICY_SINCE_TIME:
            if start.since_ms <= 0:
                raise InvalidStart("since_time must be set for START_POLICY_SINCE_TIME")
            if start.since_ms > time.time() * 1000 + 60_000:
                raise InvalidStart(
                    "since_time lies in the future", hint="give a time in the past, or use NEW"
                )
            return max(0, id_for_time_ms(start.since_ms) - 1)
        if policy == broker_pb2.START_POLICY_AFTER_ID:
            if start.after_id <= 0:
                raise InvalidStart("after_id must be set for START_POLICY_AFTER_ID")
            if start.after_id > self.head and time_ms_of(start.after_id) > time.time() * 1000:
                raise InvalidStart(
                    f"after_id {start.after_id} lies in the future",
                    hint="use an id the broker returned",
                )
            return start.after_id
        raise InvalidStart(f"start policy {policy} is unknown")

    async def create_durable(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        *,
        queue: str = "",
        start: StartSpec = StartSpec(),
        max_in_flight: int = 0,
        ack_wait: float = 0.0,
        max_deliveries: int = 0,
        endpoint_url: str = "",
    ) -> DurableConsumer:
        """The durable ``name``, created with these settings when it does not exist."""
        self._check_pattern(principal, pattern)
        if not name or len(name) > 128 or not all(ch.isalnum() or ch in "-_" for ch in name):
            raise InvalidArgument(
                f"durable name {name!r} is invalid",
                reason="INVALID_DURABLE",
                hint="use 1-128 letters, digits, '-' and '_'",
            )
        key = (principal.org, name)
        consumer = self.consumers.get(key)
        if consumer is None:
            if endpoint_url:
                self.check_endpoint(endpoint_url)
            rec = ConsumerRecord(
                org=principal.org,
                name=name,
                pattern=pattern,
                queue=queue,
                ack_wait_ms=int((ack_wait or self.config.ack_wait) * 1000),
                max_deliveries=max_deliveries or self.config.max_deliveries,
                max_in_flight=max_in_flight or self.config.max_in_flight,
                cursor=self.start_after(start),
                endpoint_url=endpoint_url,
            )
            await self.store.save_consumer(rec)
            consumer = DurableConsumer(self, rec)
            self.consumers[key] = consumer
            consumer.start()
            for hook in self.on_durable_created:
                hook(consumer)
        elif consumer.rec.pattern != pattern:
            raise FailedPrecondition(
                f"durable {name!r} exists with pattern {consumer.rec.pattern!r}, not {pattern!r}",
                reason="DURABLE_MISMATCH",
                hint="use another durable name, or delete the durable first",
            )
        return consumer

    def check_endpoint(self, url: str) -> None:
        """Webhook URLs: http(s) only, and no private or loopback address unless allowed."""
        from broker.webhooks import check_endpoint_url

        check_endpoint_url(url, allow_private=self.config.webhook_allow_private)

    async def subscribe_durable(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        *,
        queue: str = "",
        start: StartSpec = StartSpec(),
        max_in_flight: int = 0,
        ack_wait: float = 0.0,
        max_deliveries: int = 0,
    ) -> DurableSession:
        """Binds a stream to the durable ``name`` (created on first use)."""
        consumer = await self.create_durable(
            principal,
            name,
            pattern,
            queue=queue,
            start=start,
            max_in_flight=max_in_flight,
            ack_wait=ack_wait,
            max_deliveries=max_deliveries,
        )
        return consumer.attach(self.config.max_message_bytes)

    async def fetch(
        self,
        principal: Principal,
        name: str,
        max_events: int,
        wait: float,
        *,
        pattern: str = "",
        start: StartSpec = StartSpec(),
    ) -> bytes:
        """Polling delivery: up to ``max_events`` deliveries as encoded frames ("" if none
        arrived within ``wait``). They stay pending until acked, as with a stream."""
        if pattern:
            consumer = await self.create_durable(principal, name, pattern, start=start)
        else:
            consumer = self.durable(principal.org, name)
        max_events = max(1, min(max_events or 100, 10_000))
        session = consumer.attach(self.config.max_message_bytes, limit=max_events, kind="poll")
        try:
            await consumer.pump()
            try:
                body = await asyncio.wait_for(session.outbox.take(), wait) if wait > 0 else None
            except TimeoutError:
                body = None
            if body is None and session.outbox.buffered:
                body = await session.outbox.take()
            return body or b""
        finally:
            # What was fetched stays pending (acked later over HTTP or redelivered after
            # the ack wait); only what was handed to this session but not taken is freed.
            consumer.detach(session, keep_pending=True)

    async def terminate(self, principal: Principal, name: str, ids: list[int]) -> None:
        """Dead-letters pending deliveries of a durable now (all or nothing)."""
        await self.durable(principal.org, name).terminate(ids)

    def acknowledge(
        self,
        principal: Principal,
        name: str,
        ack_ids: list[int],
        nack_ids: list[int],
        nack_delay: float = 0.0,
    ) -> None:
        """Acks and nacks by durable name; all-or-nothing (see ``DurableConsumer.ack``)."""
        consumer = self.durable(principal.org, name)
        both = set(ack_ids) & set(nack_ids)
        if both:
            raise InvalidArgument(f"id {min(both)} is both acked and nacked", reason="INVALID_ACK")
        consumer.check_pending(ack_ids + nack_ids)
        if ack_ids:
            consumer.ack(ack_ids)
        if nack_ids:
            consumer.nack(nack_ids, nack_delay)

    def durable(self, org: str, name: str) -> DurableConsumer:
        c = self.consumers.get((org, name))
        if c is None:
            raise NotFound(
                f"durable subscription {name!r} does not exist",
                reason="UNKNOWN_DURABLE",
                hint="list them with `lockgate durables list`",
            )
        return c

    async def delete_durable(self, org: str, name: str) -> None:
        c = self.durable(org, name)
        c.deleted = True
        del self.consumers[(org, name)]
        await c.stop()
        await self.store.delete_consumer(org, name)

    async def redrive(self, org: str, name: str, ids: Sequence[int] | None) -> int:
        c = self.durable(org, name)
        removed = await self.store.remove_dead_letters(org, name, ids or None)
        c.redrive(removed)
        return len(removed)

    # -- request / reply --------------------------------------------------------------------

    async def request(
        self, principal: Principal, subject: str, event: CloudEvent, timeout: float
    ) -> CloudEvent:
        validate_subject(subject)
        err = _check_event(event)
        if err is None and self.policy.active:
            verdicts = await self.policy.admit(principal, subject, [event], [0], "request")
            err = verdicts.rejected.get(0)
        if err is not None:
            raise err
        raw = event.SerializeToString()
        if len(raw) > self.config.max_event_bytes:
            raise EventTooLarge(len(raw), self.config.max_event_bytes)
        org = principal.org
        if not self.router.has_targets(org, subject):
            raise NotFound(
                f"no subscriber listens on {subject!r}",
                reason="NO_RESPONDERS",
                hint="start a responder that subscribes to this subject",
            )
        inbox = f"$inbox.{secrets.token_hex(8)}"
        fut: asyncio.Future[CloudEvent] = asyncio.get_running_loop().create_future()
        self._inboxes[(org, inbox)] = fut
        try:
            event_id = self.ids.next()
            frame = wire.delivery_frame(event_id, wire.subject_field(subject), raw, 1, inbox)
            self.router.route(org, subject, frame, 1, [event_id])
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no reply on {subject!r} within {timeout:g} s",
                reason="REQUEST_TIMEOUT",
                hint="raise the timeout, or check that the responder replies to reply_to",
            ) from None
        finally:
            self._inboxes.pop((org, inbox), None)

    # -- history ----------------------------------------------------------------------------

    async def fetch_frame(self, org: str, event_id: int) -> bytes | None:
        batch = await self.store.batch_containing(org, event_id)
        if batch is None:
            return None
        for i, frame in wire.split_frames(batch.body):
            if i == event_id:
                return frame
        return None

    async def get_event(self, org: str, event_id: int) -> broker_pb2.StoredEvent:
        batch = await self.store.batch_containing(org, event_id)
        if batch is not None:
            for i, frame in wire.split_frames(batch.body):
                if i == event_id:
                    return self._stored(batch, frame)
        raise NotFound(f"event {event_id} does not exist", reason="NOT_FOUND")

    @staticmethod
    def _stored(batch: Batch, frame: bytes) -> broker_pb2.StoredEvent:
        d = broker_pb2.Delivery.FromString(wire.frame_body(frame))
        se = broker_pb2.StoredEvent(
            id=d.id, subject=d.subject, event=d.event, policy_version=batch.policy_version
        )
        se.stored_time.FromMilliseconds(time_ms_of(d.id))
        return se

    async def query(
        self,
        org: str,
        pattern: str,
        *,
        after_id: int = 0,
        start_ms: int = 0,
        end_ms: int = 0,
        limit: int = 100,
    ) -> tuple[list[broker_pb2.StoredEvent], int]:
        """Events matching ``pattern``, oldest first; returns them and the last id scanned
        (0 when the log is exhausted)."""

        validate_pattern(pattern)
        match = compile_pattern(pattern)
        pos = max(after_id, id_for_time_ms(start_ms) - 1 if start_ms else 0)
        end_id = id_for_time_ms(end_ms) if end_ms else 0
        literal = pattern if is_literal(pattern) else None
        out: list[broker_pb2.StoredEvent] = []
        while len(out) < limit:
            batches = await self.store.read_batches(org, pos, subject=literal, limit=64)
            if not batches:
                return out, 0
            for b in batches:
                if match(b.subject):
                    for i, frame in wire.split_frames(b.body):
                        if i <= pos:
                            continue
                        if end_id and i >= end_id:
                            return out, 0
                        out.append(self._stored(b, frame))
                        if len(out) >= limit:
                            return out, i
                if end_id and b.first_id >= end_id:
                    return out, 0
                pos = max(pos, b.last_id)
        return out, pos
