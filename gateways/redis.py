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
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from lockgate.broker.api import BrokerAPI, CloudEvent
from lockgate.broker.errors import BrokerError
from lockgate.clients._backoff import Backoff
from lockgate.gateways._ingest import dead_letter_record, parse_entry
from lockgate.gateways._report import report_ingest_error, supervise

__all__ = ["RedisIngest", "RedisSettings"]

log = logging.getLogger("lockgate.gateways.redis")


_StreamsReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]] | None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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


class RedisIngest:
    """Runs the list and stream loops until :meth:`stop`."""

    def __init__(self, api: BrokerAPI, settings: RedisSettings) -> None:
        self.api = api
        self.settings = settings
        self.redis: aioredis.Redis = aioredis.from_url(settings.url)
        self.metrics: collections.Counter[str] = collections.Counter()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        s = self.settings
        for key in s.streams:
            try:
                await self.redis.xgroup_create(key, s.group, id=s.start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        if s.lists:
            task = supervise("redis:lists", self._lists, self._backoff())
            self._tasks.append(asyncio.create_task(task, name="redis-lists"))
        if s.streams:
            task = supervise("redis:streams", self._streams, self._backoff())
            self._tasks.append(asyncio.create_task(task, name="redis-streams"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()

    def _backoff(self) -> Backoff:
        return Backoff(initial=self.settings.retry / 4, maximum=max(self.settings.retry * 10, 1.0))

    async def _dead_letter(self, origin: str, raw: bytes | str, err: BrokerError) -> None:
        await self.redis.lpush(self.settings.dead_letter, dead_letter_record(origin, raw, err))
        self.metrics["dead_lettered"] += 1

    def _parse(
        self, raws: Sequence[bytes | str], ids: Sequence[str], origin: str, type_: str
    ) -> tuple[list[CloudEvent], list[int], list[tuple[bytes | str, BrokerError]]]:
        """The events of ``raws``, their positions, and the entries that are not events."""
        events: list[CloudEvent] = []
        kept: list[int] = []
        bad: list[tuple[bytes | str, BrokerError]] = []
        for i, raw in enumerate(raws):
            try:
                events.append(parse_entry(raw, ids[i], f"redis://{origin}", type_))
                kept.append(i)
            except BrokerError as err:
                bad.append((raw, err))
        return events, kept, bad

    async def _deliver(
        self,
        origin: str,
        subject: str,
        raws: Sequence[bytes | str],
        ids: Sequence[str],
        type_: str,
    ) -> None:
        """Dead-letters the entries that are not events and publishes the others; events
        the broker rejects are dead-lettered too. Errors (the broker refusing the whole
        batch, Redis failing) are retried here, step by step, until all is done, so nothing
        is published or dead-lettered twice by this process."""
        events, kept, dead = self._parse(raws, ids, origin, type_)
        backoff = self._backoff()
        while True:
            try:
                while dead:
                    await self._dead_letter(origin, *dead[0])
                    dead.pop(0)
                if events:
                    result = await self.api.publish(self.settings.api_key, subject, events)
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
        while True:
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
            await self._deliver(f"list:{key}", s.lists[key], raws, ids, "lockgate.redis.list")

    async def _streams(self) -> None:
        """Reads new entries; first (at start and after any error, when the supervisor
        runs it again) its own pending ones, and now and then those stale elsewhere."""
        s = self.settings
        pending_done = False
        last_claim = 0.0
        while True:
            claim_due = s.claim_idle > 0 and time.monotonic() - last_claim >= s.claim_idle / 2
            if pending_done and claim_due:
                for stream in s.streams:
                    await self._claim(stream)
                last_claim = time.monotonic()
            cursor = ">" if pending_done else "0"
            resp: _StreamsReply = await self.redis.xreadgroup(  # type: ignore[assignment]
                s.group,
                s.consumer,
                {k: cursor for k in s.streams},
                count=s.batch,
                block=int(s.block * 1000) if pending_done else None,
            )
            if not pending_done and not any(entries for _, entries in resp or []):
                pending_done = True
                continue
            for key, entries in resp or []:
                await self._stream_batch(_text(key), entries)

    async def _claim(self, stream: str) -> None:
        """Takes over entries pending at any consumer for ``claim_idle`` seconds."""
        s = self.settings
        start = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                stream, s.group, s.consumer, int(s.claim_idle * 1000), start, count=s.batch
            )
            start = _text(reply[0])
            entries = cast("list[tuple[bytes, dict[bytes, bytes] | None]]", reply[1])
            if entries:
                self.metrics["claimed"] += len(entries)
                await self._stream_batch(stream, entries)
            if start == "0-0":
                return

    async def _stream_batch(
        self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes] | None]]
    ) -> None:
        raws: list[bytes | str] = []
        ids: list[str] = []
        entry_ids: list[bytes] = []  # of raws, by position
        empty: list[bytes] = []  # deleted or unusable: acked with the batch
        for entry_id, fields in entries:
            if not fields:  # deleted meanwhile (XDEL/XTRIM): nothing to publish
                empty.append(entry_id)
                continue
            raw = fields.get(b"event")
            if raw is None and b"data" in fields:
                raw = b'{"data":' + fields[b"data"] + b"}"
            if raw is None:
                with contextlib.suppress(RedisError):
                    shown = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
                    from lockgate.broker.errors import InvalidEvent

                    await self._dead_letter(
                        f"stream:{stream}",
                        str(shown),
                        InvalidEvent(
                            "the stream entry has neither an event nor a data field",
                            reason="INVALID_EVENT",
                            hint="XADD key * event '<CloudEvent JSON>'",
                        ),
                    )
                empty.append(entry_id)
                continue
            entry_ids.append(entry_id)
            raws.append(raw)
            ids.append(f"{stream}/{entry_id.decode()}")
        # XACK only after: a crash before it leaves the entries pending, read again (id 0)
        # at the next start; events of {"data": ...} entries keep their ids, so the broker
        # deduplicates what it had already stored.
        origin, subject = f"stream:{stream}", self.settings.streams[stream]
        await self._deliver(origin, subject, raws, ids, "lockgate.redis.stream")
        await self._xack(stream, [*entry_ids, *empty])

    async def _xack(self, stream: str, entry_ids: list[bytes]) -> None:
        if entry_ids:
            acked = await self.redis.xack(stream, self.settings.group, *entry_ids)
            self.metrics["xacked"] += int(acked)
            self.metrics["xack_short"] += len(entry_ids) - int(acked)
