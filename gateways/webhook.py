"""Webhook delivery: POST each event of a durable with an ``endpoint_url``, signed.

Every delivery is one POST in the CloudEvents HTTP binary mode (``ce-*`` headers, the data as
the body), signed with HMAC-SHA256 over ``f"{timestamp}.{body}"``::

    X-Lockgate-Timestamp: 1714564800
    X-Lockgate-Signature: v1=<hex digest>

with the org's secret (``[gateways.webhook.org_secrets]``) or the configured ``secret``;
receivers check it with :func:`clients.verify_webhook`. Outcomes, all through the durable's
own ack machinery, so redelivery, ``max_deliveries`` and the ``$dlq.<durable>`` dead letters
apply exactly as for streams:

==================================  =============================================
answer                              action
==================================  =============================================
2xx                                 ack
429 (with ``Retry-After``)          nack, delayed by Retry-After (else the backoff)
410 Gone                            dead-letter now (the endpoint asked to stop)
anything else, timeout, no answer   nack, delayed by ``backoff`` (1 s, 2 s, 4 s ...)
==================================  =============================================

:class:`WebhookDispatcher` runs in the broker's process: it binds a ``webhook`` session to
each such durable (the existing ones at start and new ones via ``on_durable_created``);
streams bound to the same durable take precedence (the delivery preference).
:class:`PollingWebhookDispatcher` does the same from a standalone process over gRPC (Fetch
and Acknowledge). POSTs of one durable run concurrently (up to ``concurrency``), so a
webhook receiver sees at-least-once delivery in roughly, not strictly, publish order.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from broker.api import Delivery, decode_deliveries
from broker.delivery import DurableConsumer, DurableSession
from broker.errors import BrokerError
from broker.node import Broker
from gateways._cebinary import to_binary
from gateways._remote import RemoteAPI
from gateways._report import UNENCODABLE, report_unencodable

__all__ = [
    "Outcome",
    "PollingWebhookDispatcher",
    "WebhookDispatcher",
    "WebhookSender",
    "WebhookSettings",
    "sign",
]

log = logging.getLogger("lockgate.gateways.webhook")


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """``[gateways.webhook]`` settings."""

    secret: str = ""
    org_secrets: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    backoff: tuple[float, ...] = (1.0, 2.0, 4.0)
    concurrency: int = 16
    max_retry_after: float = 3600.0

    def secret_for(self, org: str) -> str:
        return self.org_secrets.get(org) or self.secret


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Lockgate-Signature`` value: ``v1=`` and the HMAC-SHA256 hex digest."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a delivery after its POST: ``ack``, ``nack`` (after ``delay``) or
    ``dead`` (dead-letter now); ``status`` is the HTTP status (0: no answer)."""

    action: str
    delay: float = 0.0
    status: int = 0
    detail: str = ""


def _retry_after(value: str | None, limit: float) -> float | None:
    if not value:
        return None
    try:
        return min(max(0.0, float(value)), limit)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), limit)


class WebhookSender:
    """Signs and POSTs one delivery and classifies the answer (no broker state here)."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._http: aiohttp.ClientSession | None = None

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                headers={"User-Agent": "lockgate-webhook/1"},
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def backoff(self, attempt: int) -> float:
        b = self.settings.backoff or (1.0,)
        return b[min(max(attempt, 1), len(b)) - 1]

    def request(self, org: str, durable: str, d: Delivery) -> tuple[dict[str, str], bytes]:
        """The signed POST of one delivery; raises one of ``UNENCODABLE`` for an event
        that has no binary-mode form."""
        headers, body = to_binary(d.event)
        ts = int(time.time())
        headers["X-Lockgate-Timestamp"] = str(ts)
        headers["X-Lockgate-Signature"] = sign(self.settings.secret_for(org), ts, body)
        headers["X-Lockgate-Delivery"] = str(d.id)
        headers["X-Lockgate-Attempt"] = str(d.attempt or 1)
        headers["X-Lockgate-Subject"] = d.subject
        headers["X-Lockgate-Durable"] = durable
        return headers, body

    async def deliver(self, url: str, org: str, durable: str, d: Delivery) -> Outcome:
        try:
            headers, body = self.request(org, durable, d)
        except UNENCODABLE as exc:
            report_unencodable("webhook", d.id, d.subject, exc)
            return Outcome("dead", detail=f"the event cannot be encoded: {exc}")
        retry = self.backoff(d.attempt or 1)
        # An event without a content type is sent without one (aiohttp would add
        # application/octet-stream to a bytes body).
        skip = () if "content-type" in headers else ("Content-Type",)
        try:
            async with self.http().post(
                url, data=body, headers=headers, skip_auto_headers=skip
            ) as resp:
                status = resp.status
                after = _retry_after(resp.headers.get("Retry-After"), self.settings.max_retry_after)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Outcome("nack", retry, 0, f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return Outcome("ack", status=status)
        if status == 410:
            return Outcome("dead", status=status, detail="the endpoint answered 410 Gone")
        if status == 429 and after is not None:
            return Outcome("nack", after, status)
        return Outcome("nack", retry, status, f"the endpoint answered {status}")


class WebhookDispatcher:
    """Delivers the webhook durables of an in-process broker (see the module docstring)."""

    def __init__(self, broker: Broker, settings: WebhookSettings) -> None:
        self.broker = broker
        self.sender = WebhookSender(settings)
        self.settings = settings
        self._runs: dict[tuple[str, str], tuple[DurableSession, asyncio.Task[None]]] = {}
        self._posts: set[asyncio.Task[None]] = set()
        self.outcomes: list[tuple[int, Outcome]] = []
        """Recent (event id, outcome) pairs, newest last (at most 1000; for tests/metrics)."""

    async def start(self) -> None:
        for consumer in list(self.broker.consumers.values()):
            self.watch(consumer)
        self.broker.on_durable_created.append(self.watch)

    def watch(self, consumer: DurableConsumer) -> None:
        key = (consumer.rec.org, consumer.rec.name)
        if not consumer.rec.endpoint_url or key in self._runs:
            return
        session = consumer.attach(
            self.broker.config.max_message_bytes, limit=self.settings.concurrency, kind="webhook"
        )
        task = asyncio.create_task(self._run(consumer, session), name=f"webhook-{key[1]}")
        self._runs[key] = (session, task)

    async def _run(self, consumer: DurableConsumer, session: DurableSession) -> None:
        while (body := await session.outbox.take()) is not None:
            for d in decode_deliveries(body):
                t = asyncio.create_task(self._deliver(consumer, d))
                self._posts.add(t)
                t.add_done_callback(self._posts.discard)
        self._runs.pop((consumer.rec.org, consumer.rec.name), None)

    async def _deliver(self, consumer: DurableConsumer, d: Delivery) -> None:
        rec = consumer.rec
        outcome = await self.sender.deliver(rec.endpoint_url, rec.org, rec.name, d)
        self.outcomes.append((d.id, outcome))
        del self.outcomes[:-1000]
        if consumer.deleted:
            return
        try:
            if outcome.action == "ack":
                consumer.ack([d.id])
            elif outcome.action == "dead":
                # What Acknowledge.term_ids does: dead-letter now, to $dlq.<durable>.
                await consumer.terminate([d.id])
            else:
                log.info("webhook %s: event %d %s", rec.name, d.id, outcome.detail or "retry")
                consumer.nack([d.id], outcome.delay)
        except BrokerError as exc:  # no longer pending (its ack wait ran out meanwhile)
            log.debug("webhook %s: %s", rec.name, exc)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.broker.on_durable_created.remove(self.watch)
        for session, task in list(self._runs.values()):
            session.consumer.detach(session)
            task.cancel()
        tasks = [t for _, t in self._runs.values()] + list(self._posts)
        for t in self._posts:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._runs.clear()
        await self.sender.close()


class PollingWebhookDispatcher:
    """Webhook delivery from a standalone process: lists the org's durables that have an
    ``endpoint_url`` (AdminService, so ``api_key`` needs the admin role) every
    ``refresh`` seconds and long-polls each with Fetch, acking over Acknowledge.

    A poll counts as a bound receiver, so while this runs it takes events that an in-process
    dispatcher would also take; run one or the other. ``410 Gone`` (and an event that cannot
    be encoded) dead-letters through ``Acknowledge.term_ids``.
    """

    def __init__(self, api: RemoteAPI, api_key: str | None, settings: WebhookSettings) -> None:
        self.api = api
        self.key = api_key
        self.settings = settings
        self.sender = WebhookSender(settings)
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._main: asyncio.Task[None] | None = None
        self.refresh = 5.0

    async def start(self) -> None:
        self._main = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            try:
                for info in await self.api.list_durables(self.key):
                    if info.endpoint_url and info.name not in self._loops:
                        self._loops[info.name] = asyncio.create_task(
                            self._poll(info.name, info.endpoint_url)
                        )
            except BrokerError as exc:
                log.warning("webhook: listing durables failed: %s", exc)
            await asyncio.sleep(self.refresh)

    async def _poll(self, name: str, url: str) -> None:
        while True:
            try:
                batch = await self.api.fetch(self.key, name, self.settings.concurrency, 5.0)
                outcomes = await asyncio.gather(
                    *(self.sender.deliver(url, "", name, d) for d in batch)
                )
                pairs = list(zip(batch, outcomes, strict=True))
                ack = [d.id for d, o in pairs if o.action == "ack"]
                dead = [d.id for d, o in pairs if o.action == "dead"]
                for d, o in pairs:
                    if o.action == "nack":
                        await self.api.acknowledge(self.key, name, [], [d.id], o.delay)
                if ack or dead:
                    await self.api.acknowledge(self.key, name, ack, [], term_ids=dead)
            except BrokerError as exc:
                if exc.reason == "UNKNOWN_DURABLE":
                    self._loops.pop(name, None)
                    return
                log.warning("webhook %s: %s", name, exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        tasks = [*self._loops.values(), *([self._main] if self._main else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.sender.close()
