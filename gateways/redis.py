"""Redis ingest: lists (BRPOP) and streams (consumer groups) into broker subjects.

* Lists (``lists = {"jobs:in" = "jobs.created"}``): ``BRPOP`` one entry, then ``RPOP`` up to
  ``batch`` more, published as one batch. At-most-once across a gateway crash (an entry
  popped and not yet stored is lost); if the broker refuses the whole batch (unavailable),
  the gateway keeps retrying it, in order, before it pops more.
* Streams (``streams = {"orders" = "orders.created"}``): ``XREADGROUP`` in group ``group``;
  an entry is ``XACK``ed only after the broker stored it (or dead-lettered it), so a crash of
  the gateway or the broker loses nothing: on start, and after a failed publish, the
  gateway first re-reads its own pending entries (id ``0``). Events made from
  ``{"data": ...}`` take the id ``<stream>/<entry id>``, so a re-read entry is deduplicated
  by the broker rather than stored twice. A stream entry holds the JSON in its ``event``
  field (or JSON data in a ``data`` field).

Entries that are not events (bad JSON, neither a CloudEvent nor ``{"data": ...}``) and
events the broker rejects go to the ``dead_letter`` list as JSON (``gateways._ingest``):
``{"reason", "message", "hint", "origin", "time_ms", "entry"}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from broker.api import BrokerAPI, CloudEvent
from broker.errors import BrokerError
from gateways._ingest import dead_letter_record, parse_entry

__all__ = ["RedisIngest", "RedisSettings"]

log = logging.getLogger("lockgate.gateways.redis")


_StreamsReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]] | None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


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
            self._tasks.append(asyncio.create_task(self._lists(), name="redis-lists"))
        if s.streams:
            self._tasks.append(asyncio.create_task(self._streams(), name="redis-streams"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()

    async def _dead_letter(self, origin: str, raw: bytes | str, err: BrokerError) -> None:
        await self.redis.lpush(self.settings.dead_letter, dead_letter_record(origin, raw, err))
        self.metrics["dead_lettered"] += 1

    async def _parse(
        self, origin: str, raws: Sequence[bytes | str], ids: Sequence[str], type_: str
    ) -> tuple[list[CloudEvent], list[int]]:
        """The events of ``raws`` and their positions; entries that are not events go to the
        dead-letter list."""
        events: list[CloudEvent] = []
        kept: list[int] = []
        for i, raw in enumerate(raws):
            try:
                events.append(parse_entry(raw, ids[i], f"redis://{origin}", type_))
                kept.append(i)
            except BrokerError as err:
                await self._dead_letter(origin, raw, err)
        return events, kept

    async def _send(
        self,
        origin: str,
        subject: str,
        raws: Sequence[bytes | str],
        events: list[CloudEvent],
        kept: list[int],
    ) -> None:
        """Publishes one batch; rejected events go to the dead-letter list. Raises
        :class:`BrokerError` when the broker refused the whole batch (retry it)."""
        if not events:
            return
        result = await self.api.publish(self.settings.api_key, subject, events)
        for pos, err in result.errors:
            await self._dead_letter(origin, raws[kept[pos]], err)
        self.metrics["published"] += len(events) - len(result.errors)

    async def _lists(self) -> None:
        s = self.settings
        keys = list(s.lists)
        while True:
            try:
                got = await self.redis.brpop(keys, timeout=s.block)
                if got is None:
                    continue
                key = _text(got[0])
                raws: list[bytes | str] = [got[1]]
                if s.batch > 1:
                    more = await self.redis.rpop(key, s.batch - 1)
                    raws.extend(cast("list[bytes]", more or []))
            except RedisError as exc:
                log.warning("redis: %s", exc)
                await asyncio.sleep(s.retry)
                continue
            origin = f"list:{key}"
            ids = [uuid.uuid4().hex for _ in raws]
            events, kept = await self._parse(origin, raws, ids, "lockgate.redis.list")
            while True:
                try:
                    await self._send(origin, s.lists[key], raws, events, kept)
                    break
                except BrokerError as exc:  # the whole batch: keep trying, in order
                    log.warning("redis list %s: %s; retrying", key, exc)
                    await asyncio.sleep(s.retry)

    async def _streams(self) -> None:
        s = self.settings
        recovering = True  # first our own pending entries (a crash before XACK)
        while True:
            cursor = "0" if recovering else ">"
            try:
                resp: _StreamsReply = await self.redis.xreadgroup(  # type: ignore[assignment]
                    s.group,
                    s.consumer,
                    {k: cursor for k in s.streams},
                    count=s.batch,
                    block=None if recovering else int(s.block * 1000),
                )
            except RedisError as exc:
                log.warning("redis: %s", exc)
                await asyncio.sleep(s.retry)
                continue
            if recovering and not any(entries for _, entries in resp or []):
                recovering = False
                continue
            try:
                for stream, entries in resp or []:
                    await self._stream_batch(_text(stream), entries)
            except BrokerError as exc:
                log.warning("redis streams: %s; re-reading pending entries", exc)
                recovering = True
                await asyncio.sleep(s.retry)
            except RedisError as exc:
                log.warning("redis: %s", exc)
                recovering = True
                await asyncio.sleep(s.retry)

    async def _stream_batch(
        self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes] | None]]
    ) -> None:
        raws: list[bytes | str] = []
        ids: list[str] = []
        entry_ids: list[bytes] = []  # of raws, by position
        eids: list[bytes] = []
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
                    from broker.errors import InvalidEvent

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
            eids.append(entry_id)
            raws.append(raw)
            ids.append(f"{stream}/{entry_id.decode()}")
        origin = f"stream:{stream}"
        events, kept = await self._parse(origin, raws, ids, "lockgate.redis.stream")
        if len(kept) < len(raws):  # dead-lettered now: never again, even if publish fails
            bad = [eids[i] for i in range(len(raws)) if i not in set(kept)]
            entry_ids = [e for e in entry_ids if e not in set(bad)]
            await self._xack(stream, [*bad, *empty])
            empty = []
        await self._send(origin, self.settings.streams[stream], raws, events, kept)
        await self._xack(stream, [*entry_ids, *empty])

    async def _xack(self, stream: str, entry_ids: list[bytes]) -> None:
        if entry_ids:
            acked = await self.redis.xack(stream, self.settings.group, *entry_ids)
            self.metrics["xacked"] += int(acked)
            self.metrics["xack_short"] += len(entry_ids) - int(acked)
