"""``AdminService``: durables and dead letters of the caller's org (permissions: the one
table in ``broker.permissions``; CreateDurable is an agent's, as for a durable Subscribe)."""

from __future__ import annotations

import contextlib
import time

from lockgate.broker.auth import Principal
from lockgate.broker.delivery import DurableConsumer
from lockgate.broker.durables import DurableOptions
from lockgate.broker.errors import BrokerError, InvalidPageToken, NotFound
from lockgate.broker.ids import MAX_ID, parse_decimal
from lockgate.broker.permissions import ADMIN, role_of
from lockgate.broker.redaction import shown_url
from lockgate.broker.rpc import Context, Servicer, page_size, start_spec, unary
from lockgate.broker.v1 import admin_pb2

__all__ = ["AdminService"]

_DEAD_CAP = 1000
"""Dead letters counted per durable in GetStatus (a status is asked every second)."""


def _dead_letter_after(token: str) -> tuple[int, int]:
    """The ``(dead_ms, id)`` a dead-letter page token stands for (``(0, 0)`` for none);
    both parts must fit the store's 64-bit columns, or the store's overflow would reach the
    caller as UNKNOWN instead of ``INVALID_PAGE_TOKEN``."""
    if not token:
        return (0, 0)
    ms, sep, last = token.partition(":")
    dead_ms, after = parse_decimal(ms, MAX_ID), parse_decimal(last, MAX_ID)
    if not sep or dead_ms is None or after is None:
        raise InvalidPageToken(token)
    return (dead_ms, after)


class AdminService(Servicer):
    """``AdminService``: the caller's org's durables and dead letters."""

    SERVICE = "broker.v1.AdminService"

    async def _info(self, name: str, org: str) -> admin_pb2.DurableInfo:
        return self._describe(await self.broker.durable_view(org, name))

    def _describe(self, c: DurableConsumer) -> admin_pb2.DurableInfo:
        rec = c.rec
        info = admin_pb2.DurableInfo(
            name=c.name,
            pattern=rec.pattern,
            ack_floor=c.ack_floor,
            pending_count=len(c.pending),
            connected=len(c.sessions),
            max_deliveries=rec.max_deliveries,
            max_in_flight=rec.max_in_flight,
            delivered_id=c.delivered_id,
            endpoint_url=shown_url(rec.endpoint_url),
        )
        info.ack_wait.FromMilliseconds(rec.ack_wait_ms)
        return info

    @unary()
    async def CreateDurable(
        self, request: admin_pb2.CreateDurableRequest, p: Principal, context: Context
    ) -> admin_pb2.CreateDurableResponse:
        start = start_spec(request.start)
        options = DurableOptions(
            start=start,
            max_in_flight=request.max_in_flight,
            ack_wait=request.ack_wait.ToMilliseconds() / 1000,
            max_deliveries=request.max_deliveries,
            endpoint_url=request.endpoint_url,
        )
        c = await self.broker.create_durable(p, request.name, request.pattern, options)
        secret, c.new_secret = c.new_secret, ""  # shown once
        return admin_pb2.CreateDurableResponse(
            durable=await self._info(request.name, p.org), webhook_secret=secret
        )

    @unary()
    async def RotateWebhookSecret(
        self, request: admin_pb2.RotateWebhookSecretRequest, p: Principal, context: Context
    ) -> admin_pb2.RotateWebhookSecretResponse:
        grace = request.grace.ToMilliseconds() / 1000 if request.HasField("grace") else 86_400.0
        secret = await self.broker.durables.rotate_webhook_secret(p.org, request.name, grace)
        self.broker.audit.record(
            "webhook_secret.rotate", target=request.name, detail={"grace": f"{grace:g}s"}
        )
        return admin_pb2.RotateWebhookSecretResponse(webhook_secret=secret)

    @unary()
    async def GetWebhookSecrets(
        self, request: admin_pb2.GetWebhookSecretsRequest, p: Principal, context: Context
    ) -> admin_pb2.GetWebhookSecretsResponse:
        secrets = self.broker.durables.webhook_secrets(p.org, request.name)
        url = self.broker.durables.get(p.org, request.name).rec.endpoint_url
        # Read, not shown once: the org-admin who may rotate a secret may read it too, but
        # every read is recorded (a standalone dispatcher reads once a batch: aggregated).
        self.broker.audit.record("webhook_secret.read", target=request.name)
        return admin_pb2.GetWebhookSecretsResponse(
            org=p.org, webhook_secrets=secrets, endpoint_url=url
        )

    @unary()
    async def GetStatus(
        self, request: admin_pb2.GetStatusRequest, p: Principal, context: Context
    ) -> admin_pb2.GetStatusResponse:
        broker = self.broker
        lag = broker.history_lag()
        # The broker's admin sees every org; an org-admin its own org only.
        scope = None if role_of(p, broker.permissions.admin_org) == ADMIN else p.org
        published, delivered, rejected = broker.telemetry.totals.of(scope)
        resp = admin_pb2.GetStatusResponse(
            node_id=broker.node_id,
            store=broker.store_kind,
            history_lag_known=lag is not None,
            history_lag=lag or 0,
            events_published=published,
            events_delivered=delivered,
            events_rejected=rejected,
            subscriptions=broker.ephemerals.count(scope),
            time_ms=int(time.time() * 1000),
        )
        if scope is None:
            for entry in broker.roster.alive():
                node = resp.nodes.add(node_id=entry.node_id, last_heard_ms=entry.last_heard_ms)
                if entry.card is None:
                    node.card_unknown = True
                    continue
                card = entry.card
                node.worker_id = card.worker_id
                node.version = card.version
                node.listen = card.listen
                node.started_ms = card.started_ms
                node.backbone = card.backbone
                node.events_per_second = card.events_per_second
                node.subscriptions = card.subscriptions
                node.durables = card.durables
        lags = dict(broker.durables.lags())
        shown = sorted(
            (key, c)
            for key, c in list(broker.durables.consumers.items())
            if scope is None or key[0] == scope
        )
        counts = await broker.store.count_dead_letters([k for k, _ in shown], _DEAD_CAP + 1)
        for (org, name), c in shown:
            dead = counts.get((org, name), 0)
            resp.durables.add(
                org=org,
                name=name,
                pending_count=len(c.pending),
                ready_count=len(c.ready),
                lag=lags.get(f"durable:{org}/{name}", 0),
                connected=len(c.sessions),
                dead_letters=min(dead, _DEAD_CAP),
                dead_letters_capped=dead > _DEAD_CAP,
            )
        return resp

    @unary()
    async def ListDurables(
        self, request: admin_pb2.ListDurablesRequest, p: Principal, context: Context
    ) -> admin_pb2.ListDurablesResponse:
        infos = []
        for n in await self.broker.durable_names(p.org):
            with contextlib.suppress(NotFound):  # deleted meanwhile
                infos.append(await self._info(n, p.org))
        return admin_pb2.ListDurablesResponse(durables=infos)

    @unary()
    async def GetDurable(
        self, request: admin_pb2.GetDurableRequest, p: Principal, context: Context
    ) -> admin_pb2.GetDurableResponse:
        c = await self.broker.durable_view(p.org, request.name)
        resp = admin_pb2.GetDurableResponse(durable=self._describe(c))
        for i in sorted(c.pending)[:1000]:
            resp.pending.add(id=i, attempt=c.pending[i].attempt)
        return resp

    @unary()
    async def DeleteDurable(
        self, request: admin_pb2.DeleteDurableRequest, p: Principal, context: Context
    ) -> admin_pb2.DeleteDurableResponse:
        await self.broker.delete_durable(p.org, request.name)
        self.broker.audit.record("durable.delete", target=request.name)
        return admin_pb2.DeleteDurableResponse()

    @unary()
    async def ListDeadLetters(
        self, request: admin_pb2.ListDeadLettersRequest, p: Principal, context: Context
    ) -> admin_pb2.ListDeadLettersResponse:
        after = _dead_letter_after(request.page_token)
        if request.durable:
            await self.broker.durable_view(p.org, request.durable)
        size = page_size(request.page_size)
        recs = await self.broker.store.list_dead_letters(p.org, request.durable, after, size)
        resp = admin_pb2.ListDeadLettersResponse()
        for r in recs:
            dl = resp.dead_letters.add(id=r.id, durable=r.durable, attempts=r.attempts)
            dl.dead_time.FromMilliseconds(r.dead_ms)
            with contextlib.suppress(BrokerError):
                dl.event.CopyFrom(await self.broker.get_event(p, r.id))
        if len(recs) == size:
            resp.next_page_token = f"{recs[-1].dead_ms}:{recs[-1].id}"
        return resp

    @unary()
    async def RedriveDeadLetters(
        self, request: admin_pb2.RedriveDeadLettersRequest, p: Principal, context: Context
    ) -> admin_pb2.RedriveDeadLettersResponse:
        n = await self.broker.redrive(p.org, request.durable, list(request.ids) or None)
        detail = {"count": str(n), "ids": ",".join(map(str, request.ids[:100])) or "all"}
        self.broker.audit.record("dlq.redrive", target=request.durable, detail=detail)
        return admin_pb2.RedriveDeadLettersResponse(count=n)
