"""The broker's public in-process contract, as the gateways use it: one small Protocol, two
implementations.

:class:`BrokerAPI` is the public contract (the gRPC API's methods, in Python types);
:class:`LocalAPI` calls a :class:`broker.node.Broker` in the same process (gateways run
inside ``lockgate serve``), ``gateways._remote.RemoteAPI`` calls a broker over gRPC
(``lockgate gateway ... --broker HOST:PORT``). Every method takes the caller's API key
(``None``: none was sent) and raises :class:`broker.errors.BrokerError`, so the gateways
report the same reasons whichever side they run on.

Example::

    api = LocalAPI(broker, authenticator)
    result = await api.publish(key, "orders.created", [event])
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf import message as google_message

from lockgate.broker import actor, audit_read
from lockgate.broker.auth import Authenticator, Principal
from lockgate.broker.configstore import ConfigChange
from lockgate.broker.delivery import (
    BoundSession,
    DurableConsumer,
    EphemeralSubscription,
    Outbox,
)
from lockgate.broker.durables import DURABLE_DEFAULTS, DurableOptions, webhook_secrets_in_use
from lockgate.broker.errors import (
    BrokerError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from lockgate.broker.node import Broker
from lockgate.broker.permissions import RPC_ACTIONS
from lockgate.broker.positions import StartSpec
from lockgate.broker.redaction import shown_url
from lockgate.broker.store import AuditQuery, AuditRecord, BackboneRecord, ConfigVersionRecord
from lockgate.broker.telemetry_export import prometheus_text
from lockgate.broker.tls import CERTIFIED_CALLER
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2

Message = google_message.Message

__all__ = [
    "DURABLE_DEFAULTS",
    "FROM_NEW",
    "AuditRecord",
    "BackboneRecord",
    "BrokerAPI",
    "ConfigChange",
    "ConfigVersionRecord",
    "Delivery",
    "DurableOptions",
    "DurableView",
    "LocalAPI",
    "PublishResult",
    "StartSpec",
    "StoredEvent",
    "Subscription",
    "WebhookTarget",
]

CloudEvent = cloudevent_pb2.CloudEvent
Delivery = broker_pb2.Delivery
StoredEvent = broker_pb2.StoredEvent
FROM_NEW = StartSpec()
"""The default start: new events only (or where a durable stopped)."""


@dataclass(slots=True)
class PublishResult:
    """Per-event outcome of one batch: assigned ids (0 where rejected), the positions of
    duplicates, and the rejections by position."""

    ids: list[int]
    duplicates: list[int] = field(default_factory=list)
    errors: list[tuple[int, BrokerError]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DurableView:
    """What the gateways show of a durable subscription."""

    name: str
    pattern: str
    endpoint_url: str
    ack_wait: float
    max_deliveries: int
    max_in_flight: int
    webhook_secret: str = ""
    """A webhook durable's signing secret, only from the call that created it (shown once)."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A durable with an ``endpoint_url``, as the in-process webhook dispatcher sees it."""

    org: str
    name: str
    endpoint_url: str


class Subscription(Protocol):
    """A live subscription: iterate for batches of deliveries; ack/nack durable ones."""

    name: str
    durable: bool

    def __aiter__(self) -> AsyncIterator[list[Delivery]]: ...

    async def ack(self, ids: Sequence[int]) -> None: ...

    async def nack(self, ids: Sequence[int], delay: float = 0.0) -> None: ...

    async def close(self) -> None: ...


class BrokerAPI(Protocol):
    """The broker's public API (see protos/broker/v1/broker.proto and admin.proto)."""

    async def check_credential(self, key: str | None) -> None:
        """Raises :class:`~broker.errors.Unauthenticated` unless ``key`` (an API key, a
        token, or None in the dev mode) authenticates now: a connection that lives on (a
        WebSocket) is refused at its start rather than at its first operation."""
        ...

    def until_revoked(self, key: str | None) -> Awaitable[BrokerError]:
        """Completes, with the error to close a long-lived connection with, once ``key`` is
        revoked or expires (within the documented 5 s); never for a credential that holds."""
        ...

    async def publish(
        self, key: str | None, subject: str, events: Sequence[CloudEvent]
    ) -> PublishResult: ...

    async def publish_encoded(
        self, key: str | None, subject: str, events: Sequence[bytes]
    ) -> PublishResult:
        """:meth:`publish` for events already serialised (``CloudEvent`` wire bytes): an
        ingest gateway encodes its entries straight to bytes and a remote broker gets them
        without a message built per event."""
        ...

    async def get_event(self, key: str | None, event_id: int) -> StoredEvent: ...

    async def query(
        self,
        key: str | None,
        pattern: str,
        *,
        after_id: int = 0,
        start_ms: int = 0,
        end_ms: int = 0,
        limit: int = 100,
        cloudevent_id: str = "",
    ) -> tuple[list[StoredEvent], int]:
        """A page of events and the cursor (an id) for the next one, 0 on the last page;
        ``cloudevent_id``: only events with that CloudEvents id."""
        ...

    async def fetch(
        self,
        key: str | None,
        durable: str,
        max_events: int,
        wait: float,
        *,
        pattern: str = "",
        start: StartSpec = FROM_NEW,
    ) -> list[Delivery]: ...

    async def acknowledge(
        self,
        key: str | None,
        durable: str,
        ack_ids: Sequence[int],
        nack_ids: Sequence[int],
        nack_delay: float = 0.0,
        *,
        term_ids: Sequence[int] = (),
    ) -> None:
        """Acks, nacks (redelivered after ``nack_delay``) and terminates (dead-letters now,
        to ``$dlq.<durable>``) pending deliveries of a durable; all or nothing per list."""
        ...

    async def subscribe(
        self,
        key: str | None,
        pattern: str,
        *,
        durable: str = "",
        queue: str = "",
        start: StartSpec = FROM_NEW,
        max_in_flight: int = 0,
    ) -> Subscription: ...

    async def create_durable(
        self, key: str | None, name: str, pattern: str, options: DurableOptions = DURABLE_DEFAULTS
    ) -> DurableView: ...

    async def conversation(self, key: str | None, method: str, request: Message) -> Message:
        """Calls ``ConversationService.<method>`` (protos/broker/v1/conversation.proto) with
        its request message; returns its response message (the WebSocket chat frames)."""
        ...

    async def audit(
        self,
        key: str | None,
        *,
        after_id: int = 0,
        start_ms: int = 0,
        end_ms: int = 0,
        org: str = "",
        agent: str = "",
        action: str = "",
        outcome: str = "",
        limit: int = 100,
    ) -> tuple[list[AuditRecord], int]:
        """A page of audit records (the admin role), oldest first, and the cursor (an id)
        for the next page, 0 on the last; see AuditService.ListAuditRecords."""
        ...

    async def metrics(self, key: str | None) -> tuple[bytes, str]:
        """The broker's metrics in the Prometheus text format and its content type (the
        admin role)."""
        ...

    # The backbone registry and the config store (the broker's admin; registry.proto and
    # config.proto).

    async def list_backbones(self, key: str | None) -> list[BackboneRecord]: ...

    async def get_backbone(self, key: str | None, backbone_id: str) -> BackboneRecord: ...

    async def put_backbone(
        self, key: str | None, record: BackboneRecord, *, create: bool
    ) -> BackboneRecord:
        """Creates (``create``) or updates the record ``record.id``; returns it as stored."""
        ...

    async def delete_backbone(self, key: str | None, backbone_id: str) -> None: ...

    async def get_config(self, key: str | None, version: int = 0) -> ConfigVersionRecord | None:
        """The running version (or ``version``); None before the first change."""
        ...

    async def set_config(
        self, key: str | None, changes: Sequence[ConfigChange], expected_version: int = 0
    ) -> ConfigVersionRecord: ...

    async def config_versions(
        self, key: str | None, limit: int = 100
    ) -> list[ConfigVersionRecord]: ...

    async def rollback_config(self, key: str | None, version: int = 0) -> ConfigVersionRecord: ...

    async def close(self) -> None: ...


def _target(consumer: DurableConsumer) -> WebhookTarget | None:
    r = consumer.rec
    return WebhookTarget(r.org, r.name, r.endpoint_url) if r.endpoint_url else None


def decode_deliveries(body: bytes) -> list[Delivery]:
    """The deliveries of a pre-encoded SubscribeResponse or FetchResponse body."""
    return list(broker_pb2.SubscribeResponse.FromString(body).deliveries) if body else []


class _LocalSubscription:
    def __init__(
        self,
        broker: Broker,
        outbox: Outbox,
        name: str,
        sub: EphemeralSubscription | None = None,
        session: BoundSession | None = None,
        until_revoked: Awaitable[BrokerError] | None = None,
        principal: Principal | None = None,
    ) -> None:
        self._principal = principal
        self._broker = broker
        self._outbox = outbox
        self._watcher = (
            None if until_revoked is None else asyncio.ensure_future(self._watch(until_revoked))
        )
        self._sub = sub
        self._session = session
        self.name = name
        self.durable = session is not None

    async def _watch(self, until_revoked: Awaitable[BrokerError]) -> None:
        # A revoked key ends the subscription even while it is idle.
        self._outbox.close(await until_revoked)

    async def __aiter__(self) -> AsyncIterator[list[Delivery]]:
        while (body := await self._outbox.take()) is not None:
            yield decode_deliveries(body)
        if self._outbox.error is not None:
            raise self._outbox.error
        if self._broker.draining:
            from lockgate.broker.errors import Unavailable

            raise Unavailable(
                "the broker is shutting down", reason="SHUTTING_DOWN", hint="reconnect"
            )

    def _consumer_session(self) -> BoundSession:
        if self._session is None:
            from lockgate.broker.errors import FailedPrecondition

            raise FailedPrecondition(
                "acks and nacks need a durable subscription",
                reason="UNKNOWN_DURABLE",
                hint="subscribe with a durable name to get at-least-once delivery",
            )
        return self._session

    async def ack(self, ids: Sequence[int]) -> None:
        # Unique ids: the broker's ack pops each id once (a repeated id is a KeyError there).
        await self._consumer_session().ack(list(dict.fromkeys(ids)), strict=True)

    async def nack(self, ids: Sequence[int], delay: float = 0.0) -> None:
        await self._consumer_session().nack(list(dict.fromkeys(ids)), delay, strict=True)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._sub is not None:
            self._broker.unsubscribe(self._sub)
            self._sub = None
        if self._session is not None:
            if self._principal is not None:
                self._broker.unbind_durable(self._principal, self._session)
            else:
                self._session.close()
            self._session = None
        self._outbox.close()


class LocalAPI:
    """:class:`BrokerAPI` on a broker in this process, authenticated as the gRPC server
    authenticates (same :class:`~broker.auth.Authenticator`, same admin rule)."""

    def __init__(
        self, broker: Broker, authenticator: Authenticator, *, acting_for: Principal | None = None
    ) -> None:
        self.broker = broker
        self.auth = authenticator
        self._acting_for = acting_for

    async def principal(self, key: str | None, action: str, org: str | None = "") -> Principal:
        """The caller, once it may do ``action`` in ``org`` ("": its own; None: the whole
        broker) by ``broker.permissions``: the same table the gRPC services apply, so each
        surface grants the same."""
        p = self._acting_for or await self._authenticated(key)
        try:
            self.broker.permissions.authorize(p, action, p.org if org == "" else org)
        except PermissionDenied as err:
            self.broker.audit.denied("access", action, err)
            raise
        return p

    async def _authenticated(self, key: str | None) -> Principal:
        # The gateway in front entered its surface and the peer (actor.enter): the audit
        # log's records of this call name who it is, or record the refusal.
        try:
            p = await self.auth.authenticate(key, certificate=CERTIFIED_CALLER.get())
        except Unauthenticated as err:
            actor.authenticated(None, actor.credential_id(key))
            self.broker.audit.auth_failed(err)
            raise
        actor.authenticated(p, actor.credential_id(key))
        return p

    async def check_credential(self, key: str | None) -> None:
        if self._acting_for is None:  # who the caller is; what it may do is asked per action
            await self._authenticated(key)

    def until_revoked(self, key: str | None) -> Awaitable[BrokerError]:
        watch = self._watch(key)
        if watch is None:  # it acts for the broker: never
            return asyncio.get_running_loop().create_future()
        return watch

    # -- broker-side work: only the in-process webhook dispatcher, never a caller's request.
    # Not in BrokerAPI: it spans orgs, which no key can do over gRPC (the standalone
    # dispatcher lists one org's durables and polls them with Fetch instead).

    def as_org(self, org: str) -> LocalAPI:
        """This API acting for ``org`` without a key (the key argument is ignored)."""
        return LocalAPI(self.broker, self.auth, acting_for=Principal(org, "$webhook", frozenset()))

    def webhook_durables(self) -> list[WebhookTarget]:
        """The durables of every org that have an ``endpoint_url``."""
        return [t for c in list(self.broker.consumers.values()) if (t := _target(c)) is not None]

    def on_webhook_durable(self, callback: Callable[[WebhookTarget], None]) -> Callable[[], None]:
        """Calls ``callback`` for each durable created with an ``endpoint_url`` from now on;
        returns the function that stops these calls."""

        def created(consumer: DurableConsumer) -> None:
            target = _target(consumer)
            if target is not None:
                callback(target)

        hooks = self.broker.on_durable_created
        hooks.append(created)
        return lambda: hooks.remove(created) if created in hooks else None

    def webhook_secrets(self, org: str, name: str) -> list[str]:
        """The secrets a delivery of webhook durable ``name`` is signed with now (the current
        one, and a rotated-out one during its grace); empty for a durable from before
        secrets were per durable, or one that is gone."""
        consumer = self.broker.consumers.get((org, name))
        if consumer is None:
            return []
        return webhook_secrets_in_use(consumer.rec, int(time.time() * 1000))

    def bind_webhook(self, target: WebhookTarget, limit: int) -> Subscription:
        """Binds a ``webhook`` receiver to the durable: at most ``limit`` deliveries in flight,
        and streams bound to the same durable take precedence. Raises NotFound when the
        durable is gone; ack, nack and dead-letter with :meth:`acknowledge`."""
        consumer = self.broker.durable(target.org, target.name)
        session = consumer.attach(self.broker.config.max_message_bytes, limit=limit, kind="webhook")
        return _LocalSubscription(self.broker, session.outbox, target.name, session=session)

    async def publish(
        self, key: str | None, subject: str, events: Sequence[CloudEvent]
    ) -> PublishResult:
        out = await self.broker.publish(await self.principal(key, "publish"), subject, events)
        return PublishResult(out.ids, out.duplicates, out.errors)

    async def publish_encoded(
        self, key: str | None, subject: str, events: Sequence[bytes]
    ) -> PublishResult:
        parse = CloudEvent.FromString
        return await self.publish(key, subject, [parse(raw) for raw in events])

    async def get_event(self, key: str | None, event_id: int) -> StoredEvent:
        p = await self.principal(key, "history.read")
        return await self.broker.get_event(p, event_id)

    async def query(
        self,
        key: str | None,
        pattern: str,
        *,
        after_id: int = 0,
        start_ms: int = 0,
        end_ms: int = 0,
        limit: int = 100,
        cloudevent_id: str = "",
    ) -> tuple[list[StoredEvent], int]:
        p = await self.principal(key, "history.read")
        return await self.broker.query(
            p,
            pattern or ">",
            after_id=after_id,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=min(limit or 100, 1000),
            cloudevent_id=cloudevent_id,
        )

    async def fetch(
        self,
        key: str | None,
        durable: str,
        max_events: int,
        wait: float,
        *,
        pattern: str = "",
        start: StartSpec = FROM_NEW,
    ) -> list[Delivery]:
        p = await self.principal(key, "durable.consume")
        body = await self.broker.fetch(p, durable, max_events, wait, pattern=pattern, start=start)
        return decode_deliveries(body)

    async def acknowledge(
        self,
        key: str | None,
        durable: str,
        ack_ids: Sequence[int],
        nack_ids: Sequence[int],
        nack_delay: float = 0.0,
        *,
        term_ids: Sequence[int] = (),
    ) -> None:
        p = await self.principal(key, "durable.consume")
        if term_ids:  # as BrokerService.Acknowledge
            await self.broker.terminate(p, durable, list(dict.fromkeys(term_ids)))
        await self.broker.acknowledge(
            p, durable, list(dict.fromkeys(ack_ids)), list(dict.fromkeys(nack_ids)), nack_delay
        )

    async def subscribe(
        self,
        key: str | None,
        pattern: str,
        *,
        durable: str = "",
        queue: str = "",
        start: StartSpec = FROM_NEW,
        max_in_flight: int = 0,
    ) -> Subscription:
        p = await self.principal(key, "subscribe")
        b = self.broker
        if durable:
            options = DurableOptions(queue=queue, start=start, max_in_flight=max_in_flight)
            session = await b.subscribe_durable(p, durable, pattern, options)
            return _LocalSubscription(
                b,
                session.outbox,
                durable,
                session=session,
                until_revoked=self._watch(key),
                principal=p,
            )
        sub = await b.subscribe_ephemeral(p, pattern, queue, max_in_flight, start)
        return _LocalSubscription(b, sub.outbox, sub.name, sub=sub, until_revoked=self._watch(key))

    def _watch(self, key: str | None) -> Awaitable[BrokerError] | None:
        if self._acting_for is not None:
            return None
        return self.auth.until_revoked(key, certified=CERTIFIED_CALLER.get() is not None)

    async def create_durable(
        self, key: str | None, name: str, pattern: str, options: DurableOptions = DURABLE_DEFAULTS
    ) -> DurableView:
        p = await self.principal(key, "durable.create")  # webhook ones: Durables.create
        c = await self.broker.create_durable(p, name, pattern, options)
        r = c.rec
        secret, c.new_secret = c.new_secret, ""  # shown once, to the call that created it
        return DurableView(
            r.name,
            r.pattern,
            shown_url(r.endpoint_url),
            r.ack_wait_ms / 1000,
            r.max_deliveries,
            r.max_in_flight,
            secret,
        )

    async def conversation(self, key: str | None, method: str, request: Message) -> Message:
        from lockgate.broker.rpc.conversation_service import call_in_process

        path = f"/broker.v1.ConversationService/{method}"
        if path not in RPC_ACTIONS:
            raise InvalidArgument(f"ConversationService has no method {method!r}")
        p = await self.principal(key, RPC_ACTIONS[path])
        return await call_in_process(self.broker, p, method, request)

    async def audit(
        self,
        key: str | None,
        *,
        after_id: int = 0,
        start_ms: int = 0,
        end_ms: int = 0,
        org: str = "",
        agent: str = "",
        action: str = "",
        outcome: str = "",
        limit: int = 100,
    ) -> tuple[list[AuditRecord], int]:
        p = self._acting_for or await self._authenticated(key)
        query = AuditQuery(after_id, start_ms, end_ms, None, agent, action, outcome, limit)
        return await audit_read.read_page(
            self.broker.store, self.broker.audit, self.broker.permissions, p, org, query
        )

    async def metrics(self, key: str | None) -> tuple[bytes, str]:
        await self.principal(key, "metrics.read")
        return await asyncio.to_thread(prometheus_text)

    async def list_backbones(self, key: str | None) -> list[BackboneRecord]:
        await self.principal(key, "registry.read")
        return await self.broker.registry.list()

    async def get_backbone(self, key: str | None, backbone_id: str) -> BackboneRecord:
        await self.principal(key, "registry.read")
        return await self.broker.registry.get(backbone_id)

    async def put_backbone(
        self, key: str | None, record: BackboneRecord, *, create: bool
    ) -> BackboneRecord:
        await self.principal(key, "registry.write")
        registry = self.broker.registry
        return await (registry.create(record) if create else registry.update(record))

    async def delete_backbone(self, key: str | None, backbone_id: str) -> None:
        await self.principal(key, "registry.write")
        await self.broker.registry.delete(backbone_id)

    async def get_config(self, key: str | None, version: int = 0) -> ConfigVersionRecord | None:
        await self.principal(key, "config.read")
        return await self.broker.settings.get(version)

    async def set_config(
        self, key: str | None, changes: Sequence[ConfigChange], expected_version: int = 0
    ) -> ConfigVersionRecord:
        await self.principal(key, "config.write")
        return await self.broker.settings.set(changes, expected_version=expected_version)

    async def config_versions(self, key: str | None, limit: int = 100) -> list[ConfigVersionRecord]:
        await self.principal(key, "config.read")
        return await self.broker.settings.versions(limit)

    async def rollback_config(self, key: str | None, version: int = 0) -> ConfigVersionRecord:
        await self.principal(key, "config.write")
        return await self.broker.settings.rollback(version)

    async def close(self) -> None:
        return None
