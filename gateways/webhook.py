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

:class:`WebhookDispatcher` runs in the broker's process, through ``broker.api.LocalAPI``: it
binds a ``webhook`` receiver to each such durable (the existing ones at start and new ones as
they are created), and acks, nacks and dead-letters with ``acknowledge``; streams bound to the
same durable take precedence (the delivery preference).
:class:`PollingWebhookDispatcher` does the same from a standalone process over gRPC (Fetch
and Acknowledge). POSTs of one durable run concurrently (up to ``concurrency``), so a
webhook receiver sees at-least-once delivery in roughly, not strictly, publish order.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from lockgate.broker.api import Delivery, LocalAPI, Subscription, WebhookTarget
from lockgate.broker.errors import BrokerError
from lockgate.gateways._cebinary import to_binary
from lockgate.gateways._remote import RemoteAPI
from lockgate.gateways._report import UNENCODABLE, report_unencodable

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

    def __init__(self, api: LocalAPI, settings: WebhookSettings) -> None:
        self.api = api
        self.sender = WebhookSender(settings)
        self.settings = settings
        self._runs: dict[tuple[str, str], tuple[Subscription, asyncio.Task[None]]] = {}
        self._posts: set[asyncio.Task[None]] = set()
        self._unwatch: Callable[[], None] | None = None
        self.outcomes: list[tuple[int, Outcome]] = []
        """Recent (event id, outcome) pairs, newest last (at most 1000; for tests/metrics)."""

    async def start(self) -> None:
        for target in self.api.webhook_durables():
            self.watch(target)
        self._unwatch = self.api.on_webhook_durable(self.watch)

    def watch(self, target: WebhookTarget) -> None:
        key = (target.org, target.name)
        if key in self._runs:
            return
        try:
            sub = self.api.bind_webhook(target, self.settings.concurrency)
        except BrokerError as exc:  # deleted meanwhile
            log.debug("webhook %s: %s", target.name, exc)
            return
        task = asyncio.create_task(self._run(target, sub), name=f"webhook-{target.name}")
        self._runs[key] = (sub, task)

    async def _run(self, target: WebhookTarget, sub: Subscription) -> None:
        api = self.api.as_org(target.org)
        try:
            async for batch in sub:
                for d in batch:
                    t = asyncio.create_task(self._deliver(api, target, d))
                    self._posts.add(t)
                    t.add_done_callback(self._posts.discard)
        except BrokerError as exc:  # the broker is shutting down
            log.debug("webhook %s: %s", target.name, exc)
        finally:
            self._runs.pop((target.org, target.name), None)

    async def _deliver(self, api: LocalAPI, target: WebhookTarget, d: Delivery) -> None:
        name = target.name
        outcome = await self.sender.deliver(target.endpoint_url, target.org, name, d)
        self.outcomes.append((d.id, outcome))
        del self.outcomes[:-1000]
        try:
            if outcome.action == "ack":
                await api.acknowledge(None, name, [d.id], [])
            elif outcome.action == "dead":
                await api.acknowledge(None, name, [], [], term_ids=[d.id])
            else:
                log.info("webhook %s: event %d %s", name, d.id, outcome.detail or "retry")
                await api.acknowledge(None, name, [], [d.id], outcome.delay)
        except BrokerError as exc:  # no longer pending (its ack wait ran out), or deleted
            log.debug("webhook %s: %s", name, exc)

    async def stop(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        runs = list(self._runs.values())
        for sub, task in runs:
            await sub.close()
            task.cancel()
        tasks = [t for _, t in runs] + list(self._posts)
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
