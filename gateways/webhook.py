"""Webhook delivery: POST each event of a durable with an ``endpoint_url``, signed.

Every delivery is one POST of the CloudEvent in structured mode (``application/cloudevents+json``:
attributes, data, and the broker's ``lockgatesubject``, ``lockgateorg``, ``lockgatedurable``,
``lockgatedeliveryid`` and ``lockgateattempt``, all in the body), signed on the Standard
Webhooks scheme, so that everything a receiver acts on is signed::

    webhook-id: <event id>
    webhook-timestamp: 1714564800
    webhook-signature: v1,<base64 HMAC-SHA256 of f"{id}.{timestamp}.{body}">

In the broker's process each webhook durable signs with its own secret (generated when it is
created, returned once, rotated with ``RotateWebhookSecret``; during a rotation's grace both
sign); a durable from before secrets were per durable signs with its org's
``[gateways.webhook.org_secrets]`` entry, or is not delivered. The standalone dispatcher
(:class:`PollingWebhookDispatcher`) gets each durable's secrets and org from the broker
(``GetWebhookSecrets``) and signs and names the org exactly as the broker's own does (one
:class:`WebhookSender`); for a durable from before, its configured ``secret`` stands for its
key's org. Receivers check with :func:`clients.verify_webhook`.

The endpoint's address is checked when the POST connects, every time: the name is resolved
and only public addresses are connected to (unless ``webhook_allow_private``), so a name that
resolved publicly when the durable was created and privately later (DNS rebinding) is
refused; redirects are never followed (a 3xx is a failed attempt). Outcomes, all through the
durable's own ack machinery, so redelivery, ``max_deliveries`` and the ``$dlq.<durable>`` dead
letters apply exactly as for streams:

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
import logging
import time
from collections.abc import Callable

from lockgate.broker.api import Delivery, LocalAPI, Subscription, WebhookTarget
from lockgate.broker.errors import BrokerError
from lockgate.clients._admin import WebhookSecrets
from lockgate.gateways._remote import RemoteAPI
from lockgate.gateways._webhook_guard import GuardedResolver, PrivateAddress
from lockgate.gateways._webhook_sender import Outcome, WebhookSender, WebhookSettings
from lockgate.gateways._webhook_signing import signing_secrets

__all__ = [
    "GuardedResolver",
    "Outcome",
    "PollingWebhookDispatcher",
    "PrivateAddress",
    "WebhookDispatcher",
    "WebhookSender",
    "WebhookSettings",
    "signing_secrets",
]

log = logging.getLogger("lockgate.gateways.webhook")


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
            log.debug("webhook.error: %s: %s", target.name, exc)
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
            log.debug("webhook.error: %s: %s", target.name, exc)
        finally:
            self._runs.pop((target.org, target.name), None)

    def secrets(self, target: WebhookTarget) -> list[str]:
        """The durable's secrets in use; for a durable from before they were per durable,
        its org's configured secret (never one shared by every org)."""
        found = self.api.webhook_secrets(target.org, target.name)
        return signing_secrets(found, self.settings.org_secrets.get(target.org, ""))

    async def _deliver(self, api: LocalAPI, target: WebhookTarget, d: Delivery) -> None:
        name = target.name
        outcome = await self.sender.deliver(
            target.endpoint_url, target.org, name, d, self.secrets(target)
        )
        self.outcomes.append((d.id, outcome))
        del self.outcomes[:-1000]
        try:
            if outcome.action == "ack":
                await api.acknowledge(None, name, [d.id], [])
            elif outcome.action == "dead":
                await api.acknowledge(None, name, [], [], term_ids=[d.id])
            else:
                log.info(
                    "webhook.delivery.retry: %s: event %d %s", name, d.id, outcome.detail or "retry"
                )
                await api.acknowledge(None, name, [], [d.id], outcome.delay)
        except BrokerError as exc:  # no longer pending (its ack wait ran out), or deleted
            log.debug("webhook.error: %s: %s", name, exc)

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
    ``endpoint_url`` (AdminService, so ``api_key`` needs the org-admin role) every
    ``refresh`` seconds and long-polls each with Fetch, acking over Acknowledge. Each
    durable's secrets and org come from the broker (``GetWebhookSecrets``, read again after
    ``refresh`` seconds, so a rotation reaches the deliveries within that time).

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
        self._signing: dict[str, tuple[float, WebhookSecrets]] = {}
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
                log.warning("webhook.list_failed: %s", exc)
            await asyncio.sleep(self.refresh)

    async def _poll(self, name: str, url: str) -> None:
        while True:
            try:
                batch = await self.api.fetch(self.key, name, self.settings.concurrency, 5.0)
                if not batch:
                    continue
                signing = await self.signing(name)
                org = signing.org
                # The listing shows the URL's secrets <redacted>; the secrets' read has it whole.
                target = signing.endpoint_url or url
                legacy = self.settings.org_secrets.get(org, "") or self.settings.secret
                secrets = signing_secrets(signing.secrets, legacy)
                outcomes = await asyncio.gather(
                    *(self.sender.deliver(target, org, name, d, secrets) for d in batch)
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
                    self._signing.pop(name, None)
                    return
                log.warning("webhook.error: %s: %s", name, exc)
                await asyncio.sleep(1.0)

    async def signing(self, name: str) -> WebhookSecrets:
        """Durable ``name``'s secrets and org, as the broker said at most ``refresh`` ago."""
        now = time.monotonic()
        hit = self._signing.get(name)
        if hit is None or now - hit[0] >= self.refresh:
            hit = (now, await self.api.webhook_secrets(self.key, name))
            self._signing[name] = hit
        return hit[1]

    async def stop(self) -> None:
        tasks = [*self._loops.values(), *([self._main] if self._main else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.sender.close()
