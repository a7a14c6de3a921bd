"""NATS ingest (core and JetStream) and egress, with the CloudEvents NATS binding.

A NATS message is an event in the CloudEvents NATS binding's structured mode
(``Content-Type: application/cloudevents+json``), its binary mode (``ce-*`` headers with
``ce-specversion``, ``ce-datacontenttype``, the payload as data), or else a JSON entry as for
Redis (a structured CloudEvent or ``{"data": ...}``, see ``gateways._ingest``).

* Core (``subjects = {"sensors.>" = "sensors.in"}``): subscribed in queue group ``queue``
  (several gateways share the load), batched into broker publishes. At-most-once, as core
  NATS is. A target of ``""`` keeps the NATS subject as the broker subject.
* JetStream (``[[gateways.nats.jetstream]] stream, subject, durable, to``): a durable pull
  consumer; each message is acked after the broker stored it (``term`` for one the broker
  rejected or that is not an event, ``nak`` with a delay when the broker is unavailable), so
  nothing is lost. ``{"data": ...}`` events take the id ``<stream>/<sequence>``, so a
  redelivered message is deduplicated by the broker.
* Egress (``egress = {"alerts.>" = "ext.alerts"}``): a durable broker subscription per
  pattern, each event published to NATS in the NATS binding's binary mode (target ``""``:
  the same subject), acked to the broker after the NATS server confirmed it (flush), so
  at-least-once. An event that cannot be encoded is logged (``nats.egress.unencodable``),
  counted and acked, so it never stalls the ones behind it.

Refused messages are published as JSON records (``gateways._ingest.dead_letter_record``) to
the NATS subject ``dead_letter``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout

from lockgate.broker.api import BrokerAPI, Subscription
from lockgate.broker.errors import BrokerError
from lockgate.broker.natsflush import processed
from lockgate.clients._backoff import Backoff
from lockgate.gateways._cebinary import from_binary, is_structured_type, to_binary
from lockgate.gateways._ingest import dead_letter_record, encode_entry, encode_event_json
from lockgate.gateways._json import loads
from lockgate.gateways._report import (
    UNENCODABLE,
    report_ingest_error,
    report_unencodable,
    supervise,
)

__all__ = ["JetStreamSource", "NatsGateway", "NatsSettings"]

log = logging.getLogger("lockgate.gateways.nats")


@dataclass(frozen=True, slots=True)
class JetStreamSource:
    """One ``[[gateways.nats.jetstream]]`` entry."""

    stream: str
    subject: str
    durable: str = "lockgate"
    to: str = ""


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """``[gateways.nats]`` settings."""

    url: str = "nats://127.0.0.1:4222"
    subjects: Mapping[str, str] = field(default_factory=dict)
    queue: str = "lockgate"
    jetstream: Sequence[JetStreamSource] = ()
    egress: Mapping[str, str] = field(default_factory=dict)
    egress_durable_prefix: str = "nats-egress"
    dead_letter: str = "lockgate.deadletter"
    batch: int = 256
    api_key: str | None = None
    retry: float = 0.5


def message_event(msg: Msg, default_id: str) -> bytes:
    """The event of one NATS message, as ``CloudEvent`` wire bytes: structured mode
    (``Content-Type: application/cloudevents+json``), binary mode (``ce-specversion``, the
    NATS binding's headers) or a JSON entry (``gateways._ingest``)."""
    if not msg.headers:  # the usual message: a JSON entry
        return encode_entry(msg.data, default_id, f"nats://{msg.subject}", "lockgate.nats")
    headers = {k.lower(): v for k, v in msg.headers.items()}
    if is_structured_type(headers.get("content-type", "")):
        return encode_event_json(loads(msg.data))
    if "ce-specversion" in headers:
        return from_binary(headers, msg.data, "nats").SerializeToString()
    return encode_entry(msg.data, default_id, f"nats://{msg.subject}", "lockgate.nats")


class NatsGateway:
    """Runs the configured ingress and egress until :meth:`stop`. Every loop survives its
    client library's and the broker's errors: it reports them (``gateway.ingest.error``,
    ``gateways._report``) and resumes with backoff."""

    def __init__(self, api: BrokerAPI, settings: NatsSettings) -> None:
        self.api = api
        self.settings = settings
        self.nc: NatsClient | None = None
        self.metrics: collections.Counter[str] = collections.Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[tuple[str, Msg]] = asyncio.Queue(maxsize=settings.batch * 64)
        self._egress: list[Subscription] = []

    async def start(self) -> None:
        s = self.settings
        self.nc = await nats.connect(s.url, name="lockgate-gateway", max_reconnect_attempts=-1)
        for pattern, target in s.subjects.items():

            async def enqueue(msg: Msg, target: str = target) -> None:
                await self._queue.put((target or msg.subject, msg))

            await self.nc.subscribe(pattern, queue=s.queue, cb=enqueue)
        if s.subjects:
            # The server knows the subscriptions once start() returns (a publish right after
            # would otherwise race the SUB and be dropped, as core NATS drops it).
            await processed(self.nc)
            self._spawn("nats-core", self._core)
        for src in s.jetstream:
            self._spawn(f"jetstream:{src.stream}", functools.partial(self._jetstream, src))
        for pattern, target in s.egress.items():
            name = (
                s.egress_durable_prefix + "-" + "".join(c if c.isalnum() else "_" for c in pattern)
            )
            # The first subscribe fails the start (a wrong key, a bad pattern); later ones
            # (after the broker went away) are retried by the loop.
            first = await self.api.subscribe(s.api_key, pattern, durable=name)
            self._egress.append(first)
            self._spawn("nats-egress", functools.partial(self._out, pattern, target, name, first))

    def _backoff(self) -> Backoff:
        return Backoff(initial=self.settings.retry / 4, maximum=max(self.settings.retry * 10, 1.0))

    def _spawn(self, source: str, run: Callable[[], Awaitable[None]]) -> None:
        task = supervise(source, run, self._backoff())
        self._tasks.append(asyncio.create_task(task, name=source))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in self._egress:
            with contextlib.suppress(BrokerError):
                await sub.close()
        if self.nc is not None:
            with contextlib.suppress(NatsError, OSError):
                await self.nc.drain()

    async def _dead_letter(self, origin: str, raw: bytes, err: BrokerError) -> None:
        assert self.nc is not None
        record = dead_letter_record(origin, raw, err)
        with contextlib.suppress(NatsError, OSError):
            await self.nc.publish(self.settings.dead_letter, record.encode())
        self.metrics["dead_lettered"] += 1

    def _event(self, msg: Msg, default_id: str) -> bytes | BrokerError:
        try:
            return message_event(msg, default_id)
        except BrokerError as err:
            return err

    async def _core(self) -> None:
        s = self.settings
        while True:
            msgs = [await self._queue.get()]
            while len(msgs) < s.batch and not self._queue.empty():
                msgs.append(self._queue.get_nowait())
            groups: dict[str, list[tuple[Msg, bytes]]] = {}
            for target, msg in msgs:
                ev = self._event(msg, uuid.uuid4().hex)
                if isinstance(ev, BrokerError):
                    await self._dead_letter(f"nats:{msg.subject}", msg.data, ev)
                    continue
                groups.setdefault(target, []).append((msg, ev))
            for subject, items in groups.items():
                await self._publish(subject, items)

    async def _publish(self, subject: str, items: list[tuple[Msg, bytes]]) -> None:
        """Publishes, retrying while the broker refuses the whole batch; rejected events go
        to the dead-letter subject."""
        backoff = self._backoff()
        while True:
            try:
                result = await self.api.publish_encoded(
                    self.settings.api_key, subject, [ev for _, ev in items]
                )
                break
            except BrokerError as exc:
                delay = backoff.next_delay()
                report_ingest_error(f"nats:{subject}", exc, delay)
                await asyncio.sleep(delay)
        for pos, err in result.errors:
            msg = items[pos][0]
            await self._dead_letter(f"nats:{msg.subject}", msg.data, err)
        self.metrics["published"] += len(items) - len(result.errors)

    async def _jetstream(self, src: JetStreamSource) -> None:
        assert self.nc is not None
        js = self.nc.jetstream()
        psub = await js.pull_subscribe(src.subject, durable=src.durable, stream=src.stream)
        try:
            while True:
                try:
                    msgs = await psub.fetch(self.settings.batch, timeout=1.0)
                except (NatsTimeout, TimeoutError):
                    # Idle. nats-py raises its own TimeoutError or, now and then, the
                    # built-in one; both mean "nothing arrived", not "stop".
                    continue
                await self._jetstream_batch(src, msgs)
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _jetstream_batch(self, src: JetStreamSource, msgs: list[Msg]) -> None:
        groups: dict[str, list[tuple[Msg, bytes]]] = {}
        for msg in msgs:
            ev = self._event(msg, f"{src.stream}/{msg.metadata.sequence.stream}")
            if isinstance(ev, BrokerError):
                await self._dead_letter(f"jetstream:{src.stream}", msg.data, ev)
                await msg.term()
                continue
            groups.setdefault(src.to or msg.subject, []).append((msg, ev))
        for subject, items in groups.items():
            try:
                result = await self.api.publish_encoded(
                    self.settings.api_key, subject, [ev for _, ev in items]
                )
            except BrokerError as exc:
                report_ingest_error(f"jetstream:{src.stream}", exc, self.settings.retry)
                for msg, _ in items:
                    await msg.nak(delay=self.settings.retry)
                continue
            rejected = dict(result.errors)
            for pos, (msg, _) in enumerate(items):
                if pos in rejected:
                    await self._dead_letter(f"jetstream:{src.stream}", msg.data, rejected[pos])
                    await msg.term()
                else:
                    await msg.ack()
            self.metrics["published"] += len(items) - len(rejected)

    async def _out(self, pattern: str, target: str, durable: str, first: Subscription) -> None:
        """One egress subscription until it ends (the supervisor subscribes again)."""
        assert self.nc is not None
        s = self.settings
        sub = first if first in self._egress else None
        if sub is None:
            sub = await self.api.subscribe(s.api_key, pattern, durable=durable)
            self._egress.append(sub)
        try:
            async for batch in sub:
                sent: list[int] = []
                skipped: list[int] = []
                for d in batch:
                    try:
                        headers, body = to_binary(d.event, "nats")
                    except UNENCODABLE as exc:
                        report_unencodable("nats", d.id, d.subject, exc)
                        skipped.append(d.id)
                        continue
                    await self.nc.publish(target or d.subject, body, headers=headers)
                    sent.append(d.id)
                await processed(self.nc)
                if skipped:  # dead-lettered: neither redelivered forever nor lost
                    with contextlib.suppress(BrokerError):
                        await self.api.acknowledge(s.api_key, durable, [], [], term_ids=skipped)
                    self.metrics["unencodable"] += len(skipped)
                try:
                    await sub.ack(list(dict.fromkeys(sent)))
                except BrokerError as exc:  # e.g. redelivered meanwhile: it goes out again
                    log.warning("gateway.nats.egress_failed: %s", exc)
                self.metrics["egress"] += len(sent)
        finally:
            self._egress.remove(sub)
            with contextlib.suppress(BrokerError):
                await sub.close()
