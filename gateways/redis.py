"""Redis ingest: lists (BRPOP) and streams (consumer groups) into broker subjects.

* Lists (``lists = {"jobs:in" = "jobs.created"}``): ``BRPOP`` one entry, then ``RPOP`` up to
  ``batch`` more, published as one batch. At-most-once across a gateway crash (an entry
  popped and not yet stored is lost); if the broker refuses the whole batch (unavailable),
  the gateway keeps retrying it, in order, before it pops more.
* Streams (``streams = {"orders" = "orders.created"}``): ``XREADGROUP`` in group ``group``;
  an entry is ``XACK``ed only after the broker stored it (or dead-lettered it), so a crash of
  the gateway or the broker loses nothing: on start, and after any error, the gateway first
  re-reads its own pending entries (id ``0``). The default consumer name is stable
  (``lockgate-<host>``), so a restarted gateway finds what it read before; and entries
  another consumer left pending for ``claim_idle`` seconds (a gateway that crashed and
  never came back, or came back under another name) are claimed with ``XAUTOCLAIM`` and
  published too. Events made from
  ``{"data": ...}`` take the id ``<stream>/<entry id>``, so a re-read entry is deduplicated
  by the broker rather than stored twice. A stream entry holds the JSON in its ``event``
  field (or JSON data in a ``data`` field).

Both loops survive Redis's and the broker's errors: they report them
(``gateway.ingest.error``, ``gateways._report``) and resume with backoff.

Entries that are not events (bad JSON, neither a CloudEvent nor ``{"data": ...}``) and
events the broker rejects go to the ``dead_letter`` list as JSON (``gateways._ingest``):
``{"reason", "message", "hint", "origin", "time_ms", "entry"}``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from lockgate.broker.api import BrokerAPI
from lockgate.broker.errors import BrokerError, InvalidEvent
from lockgate.clients._backoff import Backoff
from lockgate.gateways._ingest import dead_letter_record, encode_entry
from lockgate.gateways._report import report_ingest_error, supervise

__all__ = ["RedisIngest", "RedisSettings"]

log = logging.getLogger("lockgate.gateways.redis")


_SETTLE_SECONDS = 2.0
"""How long a stop waits for the batch in flight before it cancels it."""

_Entries = list[tuple[bytes, list[bytes] | None]]
"""Stream entries as the parser gives them: ``[id, [field, value, ...]]``, ``None`` for an
entry deleted since it was read."""


def _as_is(response: object, **options: object) -> object:
    return response


def _stream_reply(reply: object) -> list[tuple[bytes, _Entries]]:
    """The streams of an XREADGROUP reply: a list of ``[stream, entries]`` (RESP2) or a map
    of stream to entries (RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return cast("list[tuple[bytes, _Entries]]", reply)


def _event_field(fields: list[bytes]) -> bytes | None:
    """The JSON of an entry: its ``event`` field, or its ``data`` field as ``{"data": ...}``."""
    if fields[0] == b"event":  # the usual entry: XADD key * event <JSON>
        return fields[1]
    named = dict(zip(fields[::2], fields[1::2], strict=False))
    raw = named.get(b"event")
    if raw is None and b"data" in named:
        raw = b'{"data":' + named[b"data"] + b"}"
    return raw


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _xack_command(stream: str, group: str, entry_ids: Sequence[bytes]) -> bytes:
    """``XACK stream group id...`` in RESP, as redis-py would pack it."""
    head = b"*%d\r\n$4\r\nXACK\r\n" % (len(entry_ids) + 3)
    return b"".join((head, _bulk(stream.encode()), _bulk(group.encode()), *map(_bulk, entry_ids)))


def _default_consumer() -> str:
    # Stable across restarts (no pid): a restarted gateway re-reads its own pending entries.
    return f"lockgate-{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """``[gateways.redis]`` settings."""

    url: str = "redis://127.0.0.1:6379/0"
    lists: Mapping[str, str] = field(default_factory=dict)
    streams: Mapping[str, str] = field(default_factory=dict)
    group: str = "lockgate"
    consumer: str = field(default_factory=_default_consumer)
    start: str = "0"
    """Where a new consumer group starts: ``0`` (the whole stream) or ``$`` (new entries)."""
    dead_letter: str = "lockgate:deadletter"
    batch: int = 500
    block: float = 1.0
    api_key: str | None = None
    retry: float = 0.5
    claim_idle: float = 60.0
    """Entries pending this long at another consumer are claimed (XAUTOCLAIM); 0: never."""


def _no_event() -> BrokerError:
    return InvalidEvent(
        "the stream entry has neither an event nor a data field",
        reason="INVALID_EVENT",
        hint="XADD key * event '<CloudEvent JSON>'",
    )


@dataclass(slots=True)
class _Batch:
    """One read, decoded: its events (``CloudEvent`` wire bytes; ``kept``: their positions
    in ``raws``), the entries to dead-letter, and (streams) the entry ids to XACK once it is
    stored."""

    origin: str
    subject: str
    raws: list[bytes | str]
    events: list[bytes]
    kept: list[int]
    dead: list[tuple[bytes | str, BrokerError]]
    stream: str = ""
    acks: list[bytes] = field(default_factory=list)


class RedisIngest:
    """Runs the list and stream loops until :meth:`stop`."""

    def __init__(self, api: BrokerAPI, settings: RedisSettings) -> None:
        self.api = api
        self.settings = settings
        self.redis: aioredis.Redis = aioredis.from_url(settings.url)
        # Stream replies are used as hiredis gives them (_stream_reply, _event_field):
        # redis-py's own decoding makes a dict of every entry, in Python, and cost more than
        # the read itself.
        self.redis.set_response_callback("XREADGROUP", _as_is)
        self.redis.set_response_callback("XAUTOCLAIM", _as_is)
        self.metrics: collections.Counter[str] = collections.Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        s = self.settings
        for key in s.streams:
            try:
                await self.redis.xgroup_create(key, s.group, id=s.start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        if s.lists:
            task = supervise("redis:lists", self._lists, self._backoff(), self._stopping)
            self._tasks.append(asyncio.create_task(task, name="redis-lists"))
        if s.streams:
            task = supervise("redis:streams", self._streams, self._backoff(), self._stopping)
            self._tasks.append(asyncio.create_task(task, name="redis-streams"))

    async def stop(self) -> None:
        """Lets the loops end after their current read (``block`` at most), then cancels
        what is left: redis-py with hiredis can swallow the cancel of a blocking read and
        wait for ever, so the loops are not cancelled mid-read unless they overstay."""
        self._stopping.set()
        if self._tasks:
            grace = self.settings.block + _SETTLE_SECONDS
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for t in late:
                t.cancel()
            if late:
                _, stuck = await asyncio.wait(late, timeout=_SETTLE_SECONDS)
                if stuck:
                    log.warning("gateway.redis.stop_abandoned tasks=%d", len(stuck))
        await self.redis.aclose()

    def _backoff(self) -> Backoff:
        return Backoff(initial=self.settings.retry / 4, maximum=max(self.settings.retry * 10, 1.0))

    async def _dead_letter(self, origin: str, raw: bytes | str, err: BrokerError) -> None:
        await self.redis.lpush(self.settings.dead_letter, dead_letter_record(origin, raw, err))
        self.metrics["dead_lettered"] += 1

    def _parse(
        self, raws: Sequence[bytes | str], ids: Sequence[str], origin: str, type_: str
    ) -> tuple[list[bytes], list[int], list[tuple[bytes | str, BrokerError]]]:
        """The events of ``raws`` (wire bytes), their positions, and the entries that are not
        events."""
        events: list[bytes] = []
        kept: list[int] = []
        bad: list[tuple[bytes | str, BrokerError]] = []
        source = f"redis://{origin}"
        for i, raw in enumerate(raws):
            try:
                events.append(encode_entry(raw, ids[i], source, type_))
                kept.append(i)
            except BrokerError as err:
                bad.append((raw, err))
        return events, kept, bad

    async def _deliver(self, batch: _Batch) -> None:
        """Dead-letters the entries that are not events and publishes the others (one
        publish: one batch frame); events the broker rejects are dead-lettered too. Errors
        (the broker refusing the whole batch, Redis failing) are retried here, step by
        step, until all is done, so nothing is published or dead-lettered twice by this
        process."""
        origin, subject, raws, kept = batch.origin, batch.subject, batch.raws, batch.kept
        events, dead = batch.events, list(batch.dead)
        backoff = self._backoff()
        while True:
            try:
                while dead:
                    await self._dead_letter(origin, *dead[0])
                    dead.pop(0)
                if events:
                    result = await self.api.publish_encoded(self.settings.api_key, subject, events)
                    self.metrics["published"] += len(events) - len(result.errors)
                    dead = [(raws[kept[pos]], err) for pos, err in result.errors]
                    events = []
                    continue  # dead-letter the rejected ones
                return
            except (BrokerError, RedisError) as exc:
                delay = backoff.next_delay()
                report_ingest_error(origin, exc, delay)
                await asyncio.sleep(delay)

    async def _lists(self) -> None:
        s = self.settings
        keys = list(s.lists)
        while not self._stopping.is_set():
            got = await self.redis.brpop(keys, timeout=s.block)
            if got is None:
                continue
            key = _text(got[0])
            raws: list[bytes | str] = [got[1]]
            if s.batch > 1:
                more = await self.redis.rpop(key, s.batch - 1)
                raws.extend(cast("list[bytes]", more or []))
            # Popped: from here on the batch lives only in this process, so it is retried
            # until it is stored (an error must not drop it).
            ids = [uuid.uuid4().hex for _ in raws]
            origin = f"list:{key}"
            events, kept, dead = self._parse(raws, ids, origin, "lockgate.redis.list")
            await self._deliver(_Batch(origin, s.lists[key], raws, events, kept, dead))

    async def _streams(self) -> None:
        """Reads new entries; first (at start and after any error, when the supervisor
        runs it again) its own pending ones, and now and then those stale elsewhere.

        One batch is published and acked in the background while the next one is read
        and decoded here, so that the gateway is not the bottleneck of a backlog (the
        broker's time and Redis's overlap); the one after waits for it, so the order of
        the stream is kept. Reads stay in this task: a stop cancels them where the
        supervisor expects it (redis-py may turn that cancel into its own error)."""
        s = self.settings
        while not self._stopping.is_set():  # own pending entries first, one batch at a time
            batches = await self._read("0", block=None)
            if not batches:
                break
            for batch in batches:
                await self._send(batch)
        last_claim = 0.0
        try:
            while not self._stopping.is_set():
                if s.claim_idle > 0 and time.monotonic() - last_claim >= s.claim_idle / 2:
                    await self._sent()
                    for stream in s.streams:
                        await self._claim(stream)
                    last_claim = time.monotonic()
                for batch in await self._read(">", int(s.block * 1000)):
                    await self._sent()
                    self._sending = asyncio.create_task(self._send(batch))
        finally:
            await self._settle()

    async def _sent(self) -> None:
        """Waits for the batch in flight; its error (a failed XACK) is raised here."""
        sending, self._sending = self._sending, None
        if sending is not None:
            # shielded: a stop must cancel this loop, not only the send (which could catch it)
            await asyncio.shield(sending)

    async def _settle(self) -> None:
        """On the way out: the batch in flight gets a moment to finish (its entries are
        acked rather than read again), then is cancelled; what it left is pending."""
        sending, self._sending = self._sending, None
        if sending is None:
            return
        done, _ = await asyncio.wait([sending], timeout=_SETTLE_SECONDS)
        if not done:
            sending.cancel()
            await asyncio.wait([sending], timeout=_SETTLE_SECONDS)
        if sending.done() and not sending.cancelled():
            sending.exception()  # retrieved: the error that matters is the one raised here

    async def _read(self, cursor: str, block: int | None) -> list[_Batch]:
        s = self.settings
        reply = await self.redis.xreadgroup(
            s.group, s.consumer, {k: cursor for k in s.streams}, count=s.batch, block=block
        )
        return [
            self._prepare(_text(key), entries) for key, entries in _stream_reply(reply) if entries
        ]

    async def _claim(self, stream: str) -> None:
        """Takes over entries pending at any consumer for ``claim_idle`` seconds."""
        s = self.settings
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                stream, s.group, s.consumer, int(s.claim_idle * 1000), start, count=s.batch
            )
            start = _text(reply[0])
            entries = cast("_Entries", reply[1])  # (Redis 7 lists deleted ones in reply[2])
            if entries:
                self.metrics["claimed"] += len(entries)
                await self._send(self._prepare(stream, entries))
            if start == "0-0":
                return

    def _prepare(self, stream: str, entries: _Entries) -> _Batch:
        """The events of a stream read, and what is dead-lettered or acked with them."""
        raws: list[bytes | str] = []
        ids: list[str] = []
        acks: list[bytes] = []  # every entry is acked once its batch is stored
        no_event: list[tuple[bytes | str, BrokerError]] = []
        for entry_id, fields in entries:
            acks.append(entry_id)
            if not fields:  # deleted meanwhile (XDEL/XTRIM): nothing to publish
                continue
            raw = _event_field(fields)
            if raw is None:
                shown = {
                    k.decode(): v.decode("utf-8", "replace")
                    for k, v in zip(fields[::2], fields[1::2], strict=False)
                }
                no_event.append((str(shown), _no_event()))
                continue
            raws.append(raw)
            ids.append(f"{stream}/{entry_id.decode()}")
        origin = f"stream:{stream}"
        events, kept, dead = self._parse(raws, ids, origin, "lockgate.redis.stream")
        subject = self.settings.streams[stream]
        return _Batch(origin, subject, raws, events, kept, [*no_event, *dead], stream, acks)

    async def _send(self, batch: _Batch) -> None:
        """Publishes (and dead-letters) ``batch``, then XACKs it."""
        await self._deliver(batch)
        if batch.acks:
            await self._xack(batch.stream, batch.acks)

    async def _xack(self, stream: str, entry_ids: list[bytes]) -> None:
        # Sent as packed here (one join): redis-py packs every argument in Python, and the
        # ids of a 500-entry XACK cost a tenth of the gateway's time. A reply that does not
        # arrive (an error, a cancel) disconnects the connection, as in redis-py's own calls.
        pool = self.redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # (redis-py)
        try:
            await conn.send_packed_command(_xack_command(stream, self.settings.group, entry_ids))
            acked = await conn.read_response()
        finally:
            await pool.release(conn)
        self.metrics["xacked"] += int(acked)
        self.metrics["xack_short"] += len(entry_ids) - int(acked)
