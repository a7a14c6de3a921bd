"""The publish path for one batch: validate -> decide -> limit -> identify -> stage -> commit.

:meth:`Pipeline.prepare` runs everything up to the store write and queues that write;
when the store has it, the batches go to the ephemeral subscribers (deliver after commit);
:meth:`Pipeline.commit` awaits it and hands the batches to the durable consumers. Callers
that pipeline (the Publish stream) await ``prepare`` in arrival order, so ids and delivery
order follow publish order, and run ``commit`` concurrently so one group commit covers many
batches. See ../shared/DESIGN.md, "The journey of one event".
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Protocol

from lockgate.broker import cloudevents, wire
from lockgate.broker.activity import SubjectRates
from lockgate.broker.auth import Principal
from lockgate.broker.backbone import Backbone
from lockgate.broker.bounds import MAX_EVENT_ID, MAX_EVENT_SOURCE
from lockgate.broker.config import Config
from lockgate.broker.dedup import DedupKey, DedupWindow
from lockgate.broker.errors import BrokerError, EventTooLarge, InvalidEvent, Unavailable
from lockgate.broker.frameturn import FrameTurn, look_up_in_turn, retrieve, wait_for_turn
from lockgate.broker.ids import IdGenerator
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.publisher import encode_publisher
from lockgate.broker.publishframe import ScannedEvents, Std
from lockgate.broker.stages import STAGES
from lockgate.broker.stages import now as stage_now
from lockgate.broker.store import Batch, Store
from lockgate.broker.subjects import validate_subject
from lockgate.broker.telemetry import Span, Telemetry
from lockgate.broker.v1 import cloudevent_pb2

__all__ = [
    "CommitListener",
    "Pipeline",
    "Prepared",
    "PublishOutcome",
    "StagedBatch",
    "check_event",
    "publisher_of",
]

CloudEvent = cloudevent_pb2.CloudEvent

# The required attributes and the attribute map of every event, in one C-level pass: an
# event without optional/extension attributes costs nothing more (its map is empty).
_REQUIRED = attrgetter("id", "source", "type", "spec_version", "attributes")


@dataclass(slots=True)
class PublishOutcome:
    ids: list[int]
    duplicates: list[int] = field(default_factory=list)
    errors: list[tuple[int, BrokerError]] = field(default_factory=list)


@dataclass(slots=True)
class StagedBatch:
    """One batch staged for the store: what is written, and what commit hands on."""

    batch: Batch
    ids: list[int]
    """The events' ids, in order (for the ephemeral fan-out after the commit)."""
    frames: list[tuple[int, bytes]]
    """``(id, frame)`` per event for the durable consumers; empty when there were none at
    staging time (commit then splits the body if one appeared meanwhile)."""


@dataclass(slots=True)
class Prepared:
    """A publish that passed steps 1-5, its batches staged and their store write queued."""

    outcome: PublishOutcome
    staged: list[StagedBatch] = field(default_factory=list)
    keys: list[DedupKey] = field(default_factory=list)
    """The dedup keys this publish recorded; forgotten again if the store write fails."""
    started: float = 0.0
    span: Span | None = None
    stored: Awaitable[list[int]] | None = None
    """The store's write of the staged batches, queued when they were staged; it gives
    their log sequences."""
    remembered: asyncio.Future[None] | None = None
    """A claiming dedup window's write of the staged ids (see ``DedupWindow.claims``),
    awaited by commit before the publish is acknowledged."""
    marks: list[int] = field(default_factory=list)
    """Stage times when ``broker.stages`` records them: received, validated, decided,
    identified (stored and routed are added when the store answers)."""


class CommitListener(Protocol):
    """Who hears of committed batches (the durable consumers)."""

    def wants_frames(self) -> bool:
        """Whether staging should keep per-event frames for :meth:`on_commit`."""

    def on_commit(self, batch: Batch, seq: int, frames: list[tuple[int, bytes]]) -> None:
        """A stored batch, its log sequence, and its ``(id, frame)`` pairs; called in
        commit order."""


def check_event(ev: CloudEvent) -> BrokerError | None:
    """The CloudEvents rules for one event (required attributes here, attribute names and
    values in ``broker.cloudevents``): None when it may be published."""
    err = _check_required(ev)
    if err is None and ev.attributes:
        return cloudevents.check_attributes(ev.attributes)
    return err


def _check_required(ev: CloudEvent) -> BrokerError | None:
    if (
        ev.spec_version == "1.0"
        and ev.type
        and 0 < len(ev.id) <= MAX_EVENT_ID
        and 0 < len(ev.source) <= MAX_EVENT_SOURCE
    ):
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
    for name, value, limit in (
        ("id", ev.id, MAX_EVENT_ID),
        ("source", ev.source, MAX_EVENT_SOURCE),
    ):
        if len(value) > limit:
            return InvalidEvent(
                f"the event's {name} has {len(value)} characters, more than {limit}",
                reason="INVALID_EVENT",
                hint=f"keep {name} to {limit} characters",
                metadata={"attribute": name, "limit": str(limit)},
            )
    if ev.spec_version != "1.0":
        return InvalidEvent(
            f"specversion {ev.spec_version!r} is not supported",
            reason="INVALID_EVENT",
            hint='set specversion to "1.0"',
        )
    return None


def _validate(events: list[CloudEvent], out: PublishOutcome) -> tuple[list[Std], list[int]]:
    """What validation read of each event, and the indexes of the valid ones; the errors of
    the others go to ``out``."""
    valid: list[int] = []
    # The required attributes of every event in one C-level pass; the policy gate reuses
    # them rather than reading the protobuf again.
    std: list[Std] = list(map(_REQUIRED, events))
    err: BrokerError | None
    for i, (eid, source, type_, version, attrs) in enumerate(std):
        if (
            version == "1.0"
            and type_
            and 0 < len(eid) <= MAX_EVENT_ID
            and 0 < len(source) <= MAX_EVENT_SOURCE
        ):
            if not attrs:
                valid.append(i)
                continue
            err = cloudevents.check_attributes(attrs)  # type: ignore[arg-type]
        else:
            err = check_event(events[i])
        if err is None:
            valid.append(i)
        else:
            out.errors.append((i, err))
    return std, valid


@functools.lru_cache(maxsize=1024)
def publisher_of(principal: Principal) -> str:
    """The publisher recorded with a stored batch (for ``policy replay``); a JSON encoding
    per batch was about 1% of the broker's loop in ``batched``, so it is kept per principal."""
    return encode_publisher(principal.agent, principal.roles)


class Pipeline:
    """Steps 2-6 of the publish path for one node, and the log head it advances."""

    def __init__(
        self,
        config: Config,
        store: Store,
        gate: PolicyGate,
        dedup: DedupWindow,
        backbone: Backbone,
        telemetry: Telemetry,
        listener: CommitListener,
    ) -> None:
        self.config = config
        self.store = store
        self.gate = gate
        self.dedup = dedup
        self.backbone = backbone
        self.telemetry = telemetry
        self.listener = listener
        self.ids = IdGenerator()
        self.head = 0
        """The highest id assigned."""
        self.draining = False
        self.rates = SubjectRates()
        """Events stored per subject lately (the dashboard's charts), counted per batch."""
        self._guard: Callable[[], None] | None = None

    async def open(self, worker_id: int, guard: Callable[[], None] | None = None) -> None:
        """Picks up where the store left off (after the store is open); ids are issued with
        ``worker_id`` while ``guard`` (the worker id's lease) does not raise."""
        self.head = await self.store.last_id()
        self._guard = guard
        self.use_worker(worker_id)

    def use_worker(self, worker_id: int) -> None:
        """Issues ids with ``worker_id`` from now on (a node that took another one)."""
        self.ids = IdGenerator(worker_id, floor=self.head, guard=self._guard)

    async def publish(
        self, principal: Principal, subject: str, events: Sequence[CloudEvent]
    ) -> PublishOutcome:
        """Validates, stores and routes one batch; per-event rejections are in the outcome."""
        return await self.commit(await self.prepare(principal, subject, events))

    async def prepare(
        self,
        principal: Principal,
        subject: str,
        events: Sequence[CloudEvent],
        received: int = 0,
        *,
        owned: bool = False,
        turn: FrameTurn | None = None,
        fresh: bool = False,
    ) -> Prepared:
        """Steps 2-5 and ephemeral routing; the store write is queued, not awaited.
        ``received`` (``broker.stages`` time) starts the stage record when it is on.
        ``owned``: a broker-owned ``$`` subject whose own rule was applied by the caller
        (a conversation's participants), so the policies do not decide it.

        ``turn``: the frame's place in its Publish stream, whose frames are prepared
        concurrently (only with a claiming dedup window, see :attr:`concurrent`). This one
        queues its lookup after the previous frame queued its own (the window claims in
        that order, so no frame waits for a later one's claim), then stages only once the
        previous frame has finished, and finishes after it whatever happens, so ids and
        store order still follow the stream's order; when that one failed, this one stages
        nothing (its claims are let go) and fails.

        ``fresh``: the frame says every id was generated by its client for this first send
        (``PublishRequest.fresh``): its keys are claimed by ``DedupWindow.record``, outside
        the stream's lookup order (the window looks up the keys that were there after all)."""
        if turn is None:
            return await self._prepare(principal, subject, events, received, owned, None, fresh)
        after = turn.previous.prepared if turn.previous is not None else None
        try:
            return await self._prepare(principal, subject, events, received, owned, turn, fresh)
        finally:
            turn.pass_on()
            if after is not None and not after.done():  # returned early: finish after it
                await asyncio.wait([after])
            turn.previous = None  # the stream's chain is not kept

    @property
    def concurrent(self) -> bool:
        """Whether a stream's frames may be prepared concurrently (``turn``): only when
        the dedup window claims keys at lookup, so that a key looked up by two frames at
        once is taken by one; the embedded window learns a key only at ``remember``."""
        return self.dedup.claims

    async def _prepare(
        self,
        principal: Principal,
        subject: str,
        events: Sequence[CloudEvent],
        received: int,
        owned: bool,
        turn: FrameTurn | None,
        fresh: bool = False,
    ) -> Prepared:
        if not isinstance(events, ScannedEvents):
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
        if self._guard is not None:
            self._guard()  # no worker id to issue ids with: refused before anything is claimed
        try:
            validate_subject(subject, allow_system=owned)
        except BrokerError as exc:
            out.errors = [(i, exc) for i in range(n)]
            return prepared
        org = principal.org
        limit = self.config.max_event_bytes
        std: Sequence[Std]
        if isinstance(events, ScannedEvents):
            # Read from the frame's bytes and found valid there (broker.publishframe); its
            # std is built only if something reads it (the policies, duplicates).
            std = ()
            valid = list(range(n))
        else:
            std, valid = _validate(events, out)
        timed = STAGES.enabled and received > 0
        if timed:
            prepared.marks = [received, stage_now()]
        if subject.startswith("$inbox."):
            self._reply(org, subject, events, valid, out)
            return prepared
        gate = self.gate
        routes: dict[int, list[tuple[str, str]]] = {}
        tags: dict[int, bytes] = {}
        suffix = b""
        if gate.active and valid and not owned:
            if isinstance(events, ScannedEvents):
                std = events.std
            verdicts = await gate.admit(principal, subject, events, valid, std=std)
            routes, tags, suffix = verdicts.routes, verdicts.tags, verdicts.all_tags
            self.telemetry.count_decisions(verdicts.effects)
            if verdicts.rejected:
                out.errors.extend(verdicts.rejected.items())
                valid = [i for i in valid if i not in verdicts.rejected]
        if timed:
            prepared.marks.append(stage_now())
        # Policy tags are encoded attribute entries appended to the stored event (see
        # Verdicts); when every event gets the same ones the framing appends them.
        extra = len(suffix)
        # Whole-batch steps: the bytes, sizes and dedup keys of the valid events; per event
        # only where one is too large or already known (rare).
        if isinstance(events, ScannedEvents):
            if len(valid) == n:
                raws_v, keys_v = events.raws, events.keys(org)
            else:
                raws_v = [events.raws[i] for i in valid]
                keys_v = [(org, events.sources[i], events.ids[i]) for i in valid]
        else:
            raws_v = [events[i].SerializeToString() for i in valid]
            keys_v = [(org, std[i][1], std[i][0]) for i in valid]
        if tags:
            raws_v = [r + tags[i] if i in tags else r for i, r in zip(valid, raws_v, strict=True)]
        if raws_v and max(map(len, raws_v)) + extra > limit:
            keep = [k for k, raw in enumerate(raws_v) if len(raw) + extra <= limit]
            for k, raw in enumerate(raws_v):
                if len(raw) + extra > limit:
                    out.errors.append((valid[k], EventTooLarge(len(raw) + extra, limit)))
            valid = [valid[k] for k in keep]
            raws_v = [raws_v[k] for k in keep]
            keys_v = [keys_v[k] for k in keep]
        if fresh and self.dedup.claims:
            if turn is not None:
                turn.pass_on()  # no lookup to queue: the next frame's follows the previous
            # Awaited before staging: the keys are claimed before the append, as a lookup's.
            known = await self.dedup.record(keys_v) if keys_v else []
        elif turn is None:
            known = await self.dedup.lookup(keys_v) if keys_v else []
        else:
            known = await look_up_in_turn(self.dedup, turn, keys_v)
        if turn is not None and turn.previous is not None and turn.previous.prepared is not None:
            claimed = [k for k, hit in zip(keys_v, known, strict=True) if not hit]
            await wait_for_turn(self.dedup, turn.previous.prepared, claimed)
        seen: dict[DedupKey, int] | None = None
        if not any(known) and len(set(keys_v)) == len(keys_v):
            accepted, raws, keys = valid, raws_v, keys_v  # the usual batch: all new
        else:
            accepted, raws, keys, seen = [], [], [], {}
            for i, raw, key, hit in zip(valid, raws_v, keys_v, known, strict=True):
                if hit:
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
            self.telemetry.totals.add(org, 2, len(out.errors))
        if not accepted:
            return prepared
        prepared.span = self.telemetry.start_publish(subject, len(accepted), events[accepted[0]])
        prepared.keys = keys
        publisher = publisher_of(principal)
        admitted = accepted
        try:
            if routes:
                accepted, raws = self._apply_routes(
                    prepared, org, subject, accepted, raws, routes, publisher, suffix
                )
            if accepted:
                ids = self._stage(prepared, org, subject, raws, publisher, suffix)
                if len(accepted) == n:
                    out.ids[:] = ids  # every event, in order
                else:
                    for i, event_id in zip(accepted, ids, strict=True):
                        out.ids[i] = event_id
        except BrokerError:  # the worker id's lease ran out meanwhile: nothing was staged
            await self.dedup.forget(keys)
            raise
        # Queued before any further await, so store order is staging order.
        if prepared.staged:
            if timed:
                prepared.marks.append(stage_now())
            prepared.stored = self._store(prepared.staged, prepared.marks)
        ids_out = out.ids
        if len(admitted) == n and not routes:
            entries = list(zip(keys, ids_out, strict=True))
        else:
            entries = [(k, ids_out[i]) for k, i in zip(keys, admitted, strict=True) if ids_out[i]]
        if entries and self.dedup.claims:
            # The keys stay claimed until this lands, so a lookup of one of them (here or on
            # another node) waits for it: the next frame's prepare need not wait for a
            # round trip to the shared window, which made frames take turns on it.
            prepared.remembered = asyncio.ensure_future(self.dedup.remember(entries))
            prepared.remembered.add_done_callback(retrieve)
        elif entries:
            await self.dedup.remember(entries)
        if seen is not None:
            if isinstance(events, ScannedEvents):
                std = events.std
            for i in out.duplicates:
                if not ids_out[i]:
                    ids_out[i] = ids_out[seen[(org, std[i][1], std[i][0])]]
        return prepared

    def _reply(
        self,
        org: str,
        inbox: str,
        events: Sequence[CloudEvent],
        valid: list[int],
        out: PublishOutcome,
    ) -> None:
        """A reply: validated like any event, handed to the waiting requester, not stored."""
        limit = self.config.max_event_bytes
        for i in valid:
            size = events[i].ByteSize()
            if size > limit:
                out.errors.append((i, EventTooLarge(size, limit)))
        refused = {j for j, _ in out.errors}
        good = [i for i in valid if i not in refused]
        if not good:
            return
        for i, event_id in zip(good, self.ids.next_block(len(good)), strict=True):
            out.ids[i] = event_id
        self.backbone.reply(org, inbox, events[good[0]])

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
        subject_bytes = wire.subject_field(subject)
        frames: list[tuple[int, bytes]] = []
        if self.listener.wants_frames():
            encoded = wire.delivery_frames(ids, subject_bytes, raws, suffix)
            body = b"".join(encoded)
            frames = list(zip(ids, encoded, strict=True))
        else:  # the body alone: no frame object per event
            body = wire.delivery_body(ids, subject_bytes, raws, suffix)
        version = self.gate.version_of(org)
        batch = Batch(ids[0], ids[-1], org, subject, len(ids), version, body, publisher)
        prepared.staged.append(StagedBatch(batch, ids, frames))
        if ids[-1] > self.head:
            self.head = ids[-1]
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

    def _store(
        self, staged: list[StagedBatch], marks: list[int] | None = None
    ) -> asyncio.Future[list[int]]:
        """Queues the write of ``staged``; once it is stored, and only then, its batches go
        to the ephemeral subscribers of every node (deliver after commit: no subscriber sees
        an event its publisher was told failed). The fan-out hangs on the store's
        ``on_stored``, not on the publisher's coroutine, so a publisher that goes away does
        not take it along; stores call it in commit order, so subscribers get batches in
        commit order, and the embedded store in the commit's own step (a loop turn sooner
        than a done-callback of the write's future)."""
        backbone = self.backbone

        def fan_out(_seqs: list[int]) -> None:
            stored_at = stage_now() if marks else 0
            for s in staged:
                b = s.batch
                backbone.fan_out(b.org, b.subject, b.body, b.count, s.ids)
            if marks:
                routed_at = stage_now()
                for s in staged:
                    STAGES.batch(s.ids[0], (*marks, stored_at, routed_at))

        return asyncio.ensure_future(self.store.append([s.batch for s in staged], fan_out))

    async def commit(self, prepared: Prepared) -> PublishOutcome:
        """Step 6 (store, group commit) and the hand-over to durable consumers. When the
        write fails nothing is acknowledged and the publish's dedup keys are forgotten, so
        a retry is accepted."""
        if prepared.stored is None:
            return prepared.outcome
        try:
            seqs = await prepared.stored
        except BrokerError as exc:
            if prepared.remembered is not None:
                # Forgotten after it landed, so that the ids of a failed write do not stay.
                await asyncio.gather(prepared.remembered, return_exceptions=True)
            await self.dedup.forget(prepared.keys)
            self.telemetry.end_publish(prepared.span, exc)
            raise
        listener = self.listener
        # Nothing is awaited between the store's answer and here, so listeners hear of
        # batches in commit order (the order the store resolves its writes in).
        for s, seq in zip(prepared.staged, seqs, strict=True):
            if listener.wants_frames():
                listener.on_commit(s.batch, seq, s.frames or wire.split_frames(s.batch.body))
            self.telemetry.count_published(s.batch.org, s.batch.count)
            self.rates.add(s.batch.org, s.batch.subject, s.batch.count)
        if prepared.remembered is not None:
            # After the hand-over above (no await before it); a window that failed to take
            # the ids fails the publish, as when it was awaited in prepare.
            await prepared.remembered
        # Once the ids are pending there (a claiming window writes them behind).
        self.dedup.stored(prepared.keys)
        self.telemetry.publish_duration.record(time.perf_counter() - prepared.started)
        self.telemetry.end_publish(prepared.span, None)
        return prepared.outcome

    async def publish_system(self, org: str, subject: str, events: Sequence[CloudEvent]) -> None:
        """Stores events on a broker-owned ``$`` subject (dead letters)."""
        validate_subject(subject, allow_system=True)
        prepared = Prepared(PublishOutcome([]))
        self._stage(prepared, org, subject, [e.SerializeToString() for e in events])
        prepared.stored = self._store(prepared.staged)
        await self.commit(prepared)
