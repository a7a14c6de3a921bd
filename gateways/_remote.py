"""``RemoteAPI``: the :class:`~broker.api.BrokerAPI` over gRPC, for standalone gateways.

It goes through the Python client: the client's :class:`~clients._channel.Connection` (the one
channel setup, reconnect backoff and error translation) and ``client.admin`` for durables. The
caller's API key goes through as ``authorization: Bearer <key>``, so the broker authenticates
every caller itself; the client's errors come back as the broker's own error classes with the
same reason (so HTTP answers carry the same reasons on either side).

Example::

    api = RemoteAPI("127.0.0.1:50051")
    events, cursor = await api.query(key, "orders.>")
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2, message, message_factory

from lockgate.broker import errors as be
from lockgate.broker.api import (
    DURABLE_DEFAULTS,
    FROM_NEW,
    AuditRecord,
    BackboneRecord,
    ConfigChange,
    ConfigVersionRecord,
    Delivery,
    DurableOptions,
    DurableView,
    PublishResult,
    StartSpec,
    StoredEvent,
    decode_deliveries,
)
from lockgate.broker.v1 import audit_pb2, broker_pb2, cloudevent_pb2, conversation_pb2
from lockgate.clients import _errors as ce
from lockgate.clients._admin import Admin, DurableInfo, WebhookSecrets
from lockgate.clients._backoff import Backoff
from lockgate.clients._channel import AUDIT, BROKER, Connection, bearer
from lockgate.clients._cluster import Backbone
from lockgate.clients._cluster import ConfigChange as ClientChange
from lockgate.clients._cluster import ConfigVersion as ClientVersion
from lockgate.clients._codec import StartSpec as ClientStart
from lockgate.clients._errors import LockgateError, error_for_reason, from_rpc_error
from lockgate.clients._targets import Targets, parse_targets
from lockgate.clients._tls import TLS
from lockgate.gateways._remote_publish import EncodedPublishers
from lockgate.gateways._slices import by_bytes, publish_in_slices

__all__ = ["CREDENTIAL_POLL_SECONDS", "RemoteAPI", "to_broker_error", "translate"]

CREDENTIAL_POLL_SECONDS = 5.0

CloudEvent = cloudevent_pb2.CloudEvent
M = TypeVar("M", bound=message.Message)
T = TypeVar("T")
FAILOVER_SECONDS = 5.0
"""How long a call is tried on the next targets, with several, before its UNAVAILABLE stands."""
_PUBLISH_RESPONSE = broker_pb2.PublishResponse.FromString
_CONVERSATIONS = conversation_pb2.DESCRIPTOR.services_by_name["ConversationService"]
_REQUEST_OVERHEAD = 256  # a PublishRequest's subject framing, batch id and grpc's own bytes

_BY_CODE: dict[grpc.StatusCode, type[be.BrokerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: be.InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: be.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: be.PermissionDenied,
    grpc.StatusCode.NOT_FOUND: be.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: be.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: be.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: be.ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: be.DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: be.Unavailable,
}

# Per-event PublishErrors carry no status code: the client's class (picked by reason) does.
_BY_CLIENT_CLASS: dict[type[LockgateError], type[be.BrokerError]] = {
    ce.InvalidArgument: be.InvalidArgument,
    ce.Unauthenticated: be.Unauthenticated,
    ce.PermissionDenied: be.PermissionDenied,
    ce.NotFound: be.NotFound,
    ce.AlreadyExists: be.AlreadyExists,
    ce.FailedPrecondition: be.FailedPrecondition,
    ce.RateLimited: be.ResourceExhausted,
    ce.SlowConsumer: be.ResourceExhausted,
    ce.RequestTimeout: be.DeadlineExceeded,
    ce.Unavailable: be.Unavailable,
}


def to_broker_error(err: LockgateError) -> be.BrokerError:
    """The broker error a client error stands for: class by its gRPC status code when it came
    with one, else by the client's class; reason, message and hint kept."""
    cls = _BY_CODE.get(err.code) if err.code is not None else None
    if cls is None:
        cls = next(
            (_BY_CLIENT_CLASS[k] for k in type(err).__mro__ if k in _BY_CLIENT_CLASS),
            be.BrokerError,
        )
    meta = {k: v for k, v in err.metadata.items() if k != "hint"}
    return cls(err.message, reason=err.reason, hint=err.hint, metadata=meta)


def translate(err: grpc.RpcError) -> be.BrokerError:
    """The broker error a gRPC error stands for (see :func:`to_broker_error`; grpc's own
    refusal of a message over ``max_message_bytes`` is EVENT_TOO_LARGE, 413 over HTTP)."""
    return to_broker_error(from_rpc_error(err))


def _event_error(reason: str, text: str) -> be.BrokerError:
    return to_broker_error(error_for_reason(reason, text))


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(seconds * 1000))
    return d


def _start(start: StartSpec) -> broker_pb2.StartPosition:
    pos = broker_pb2.StartPosition(policy=start.policy, after_id=start.after_id)  # type: ignore[arg-type]
    if start.since_ms:
        pos.since_time.FromMilliseconds(start.since_ms)
    return pos


def _client_start(start: StartSpec) -> ClientStart | None:
    """The client's form of a broker start position (None: the server's default)."""
    if start.policy == broker_pb2.START_POLICY_NEW:
        return "new"
    if start.policy == broker_pb2.START_POLICY_ALL:
        return "all"
    if start.policy == broker_pb2.START_POLICY_SINCE_TIME:
        return dt.datetime.fromtimestamp(start.since_ms / 1000, dt.UTC)
    if start.policy == broker_pb2.START_POLICY_AFTER_ID:
        return ("after", start.after_id)
    return None


def _identity(raw: bytes) -> bytes:
    return raw


_SUBSCRIBE_REQUEST = broker_pb2.SubscribeRequest.SerializeToString


def _publish_request(request: broker_pb2.PublishRequest | bytes) -> bytes:
    """A publish request's bytes: the streams of :meth:`RemoteAPI.publish_encoded` write
    them ready-made (``clients._wire``)."""
    return request if isinstance(request, bytes) else request.SerializeToString()


class _RemoteSubscription:
    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        requests: asyncio.Queue[object],
        broken: Callable[[], None] = lambda: None,
    ) -> None:
        self._call = call
        self._requests = requests
        self._broken = broken
        self.name = ""
        self.durable = False

    async def __aiter__(self) -> AsyncIterator[list[Delivery]]:
        try:
            while (body := await self._call.read()) is not grpc.aio.EOF:
                yield decode_deliveries(body)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._broken()  # whoever subscribes again gets the next target
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise translate(exc) from exc

    async def ack(self, ids: Sequence[int]) -> None:
        await self._requests.put(broker_pb2.SubscribeRequest(ack=broker_pb2.Ack(ids=list(ids))))

    async def nack(self, ids: Sequence[int], delay: float = 0.0) -> None:
        nack = broker_pb2.Nack(ids=list(ids), delay=_duration(delay))
        await self._requests.put(broker_pb2.SubscribeRequest(nack=nack))

    async def close(self) -> None:
        self._call.cancel()


class RemoteAPI:
    """:class:`~broker.api.BrokerAPI` over the client's connection to ``target`` (HOST:PORT,
    or several separated by commas: the gateways' ``--broker`` list)."""

    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int = 64 << 20,
        tls: TLS | None = None,
        broker_max_message_bytes: int = 1 << 20,
    ) -> None:
        """``target`` is HOST:PORT or grpcs://HOST:PORT, or several separated by commas to
        fail over between as the client does (clients._targets: a call that meets
        UNAVAILABLE is tried again on the next target, with backoff, for up to
        :data:`FAILOVER_SECONDS`; a publish keeps its event ids, so the broker's duplicate
        window stores a retried one once); ``tls`` the client's CA file and certificate
        (mTLS) for a broker with TLS; ``broker_max_message_bytes`` the broker's
        ``max_message_bytes``: publishes are cut into requests under it."""
        self.broker_max_message_bytes = broker_max_message_bytes
        self._targets = Targets(
            parse_targets(target),
            lambda t: Connection(t, max_message_bytes=max_message_bytes, tls=tls),
        )
        self._streams: dict[tuple[Connection, str], Any] = {}
        self._encoded = EncodedPublishers(
            self._publish_opener,
            max_message_bytes=broker_max_message_bytes,
            overhead=_REQUEST_OVERHEAD,
            timeout=FAILOVER_SECONDS,
            to_broker_error=to_broker_error,
        )

    @property
    def target(self) -> str:
        """The broker in use (the first of several until a failover)."""
        return self._targets.target

    @property
    def _conn(self) -> Connection:
        return self._targets.current

    def _stream(self, conn: Connection, method: str) -> Any:
        # Deliveries stay pre-framed bytes, decoded once into the gateways' Delivery messages.
        key = (conn, method)
        multi = self._streams.get(key)
        if multi is None:
            de: Callable[[bytes], object] = _PUBLISH_RESPONSE if method == "Publish" else _identity
            ser = _publish_request if method == "Publish" else _SUBSCRIBE_REQUEST
            multi = self._streams[key] = conn.stream_stream(BROKER + method, ser, de)
        return multi

    async def _failover(self, call: Callable[[Connection], Awaitable[T]]) -> T:
        """``call`` on the current target; with several, UNAVAILABLE moves to the next and
        tries again there (as :meth:`clients.Client._failover`)."""
        backoff: Backoff | None = None
        deadline = 0.0
        while True:
            conn = self._conn
            try:
                return await call(conn)
            except be.Unavailable:
                if len(self._targets.targets) < 2:
                    raise
                loop = asyncio.get_running_loop()
                if backoff is None:
                    backoff = Backoff()
                    deadline = loop.time() + FAILOVER_SECONDS
                delay = backoff.next_delay()
                if loop.time() + delay > deadline:
                    raise
                self._targets.broken(conn)
                await asyncio.sleep(delay)

    async def _unary(
        self,
        key: str | None,
        method: str,
        request: message.Message,
        response_type: type[M],
        *,
        timeout: float | None = None,
    ) -> M:

        async def once(conn: Connection) -> M:
            try:
                return await conn.unary(
                    method, request, response_type, metadata=bearer(key), timeout=timeout
                )
            except LockgateError as exc:
                raise to_broker_error(exc) from exc

        return await self._failover(once)

    def _admin(self, key: str | None) -> Admin:
        """``client.admin`` for the caller's key, raising the broker's errors."""

        async def unary(method: str, request: message.Message, response_type: type[M]) -> M:
            return await self._unary(key, method, request, response_type)

        return Admin(unary)

    async def publish(
        self, key: str | None, subject: str, events: Sequence[CloudEvent]
    ) -> PublishResult:
        """Publishes ``events`` in as many requests as the broker's ``max_message_bytes``
        needs (an HTTP batch may be far larger than one gRPC message); an event that alone
        exceeds it is refused here (EVENT_TOO_LARGE) and never sent."""
        req = broker_pb2.PublishRequest(subject=subject, events=events, batch_id=1)
        if events and req.ByteSize() <= self.broker_max_message_bytes - _REQUEST_OVERHEAD:
            # The usual case (an ingest batch, a small HTTP batch): one request, built once,
            # and no walk over every event's size.
            return await self._publish_one(key, req)
        budget = self.broker_max_message_bytes - len(subject.encode()) - _REQUEST_OVERHEAD
        slices, too_large = by_bytes(events, budget)
        return await publish_in_slices(
            lambda part: self._publish_one(
                key, broker_pb2.PublishRequest(subject=subject, events=part, batch_id=1)
            ),
            events,
            slices,
            too_large,
        )

    async def publish_encoded(
        self, key: str | None, subject: str, events: Sequence[bytes]
    ) -> PublishResult:
        """:meth:`publish` for ``CloudEvent`` wire bytes, on a ``Publish`` stream that stays
        open (``gateways._remote_publish``): no message is built per event, no call per
        batch."""
        return await self._encoded.publish(key, subject, events)

    def _publish_opener(self, key: str | None) -> tuple[Callable[[], Any], Callable[[], None]]:
        """Opens ``Publish`` streams for ``key`` on the current target; the second function
        reports that the last one's connection broke (the next opens on the next target)."""
        used: list[Connection] = []

        def open_call() -> Any:
            conn = self._conn
            used[:] = [conn]
            return self._stream(conn, "Publish")(None, metadata=bearer(key))

        def broken() -> None:
            if used:
                self._targets.broken(used[0])

        return open_call, broken

    async def _publish_one(self, key: str | None, req: broker_pb2.PublishRequest) -> PublishResult:

        async def once(conn: Connection) -> broker_pb2.PublishResponse:
            try:
                call: Any = self._stream(conn, "Publish")(iter([req]), metadata=bearer(key))
                resp: broker_pb2.PublishResponse | None = await anext(aiter(call), None)
            except grpc.aio.AioRpcError as exc:
                raise translate(exc) from exc
            if resp is None:
                raise be.Unavailable("the broker closed the publish stream")
            return resp

        resp = await self._failover(once)
        errors = [(e.index, _event_error(e.reason, e.message)) for e in resp.errors]
        return PublishResult(list(resp.ids), list(resp.duplicate_indexes), errors)

    async def check_credential(self, key: str | None) -> None:
        # The broker authenticates before it looks anything up, and no event has id 0: any
        # answer but UNAUTHENTICATED (NOT_FOUND, PERMISSION_DENIED) means the key holds.
        with contextlib.suppress(be.NotFound, be.PermissionDenied, be.InvalidArgument):
            await self.get_event(key, 0)

    async def until_revoked(self, key: str | None) -> be.BrokerError:
        """Asks the broker every :data:`CREDENTIAL_POLL_SECONDS` (one cheap call per long-lived
        connection); a broker that cannot be reached is not a revocation."""
        while True:
            await asyncio.sleep(CREDENTIAL_POLL_SECONDS)
            try:
                await self.check_credential(key)
            except be.Unauthenticated as err:
                return err
            except be.BrokerError:
                continue

    async def get_event(self, key: str | None, event_id: int) -> StoredEvent:
        req = broker_pb2.GetEventRequest(id=event_id)
        resp = await self._unary(key, BROKER + "GetEvent", req, broker_pb2.GetEventResponse)
        return resp.event

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
        req = broker_pb2.QueryEventsRequest(
            pattern=pattern, after_id=after_id, page_size=limit, cloudevent_id=cloudevent_id
        )
        if start_ms:
            req.start_time.FromMilliseconds(start_ms)
        if end_ms:
            req.end_time.FromMilliseconds(end_ms)
        resp = await self._unary(key, BROKER + "QueryEvents", req, broker_pb2.QueryEventsResponse)
        token = resp.next_page_token
        return list(resp.events), int(token) if token.isdigit() else 0

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
        req = broker_pb2.FetchRequest(
            durable=durable,
            max_events=max_events,
            wait=_duration(wait),
            pattern=pattern,
            start=_start(start),
        )

        async def once(conn: Connection) -> bytes:
            try:
                return await conn.unary_raw(
                    BROKER + "Fetch", req, metadata=bearer(key), timeout=wait + 10
                )
            except LockgateError as exc:
                raise to_broker_error(exc) from exc

        return decode_deliveries(await self._failover(once))

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
        req = broker_pb2.AcknowledgeRequest(
            durable=durable,
            ack_ids=list(ack_ids),
            nack_ids=list(nack_ids),
            nack_delay=_duration(nack_delay),
            term_ids=list(term_ids),
        )
        await self._unary(key, BROKER + "Acknowledge", req, broker_pb2.AcknowledgeResponse)

    async def subscribe(
        self,
        key: str | None,
        pattern: str,
        *,
        durable: str = "",
        queue: str = "",
        start: StartSpec = FROM_NEW,
        max_in_flight: int = 0,
    ) -> _RemoteSubscription:
        op = broker_pb2.SubscribeOpen(
            pattern=pattern,
            queue_group=queue,
            durable=durable,
            start=_start(start),
            max_in_flight=max_in_flight,
        )

        async def once(conn: Connection) -> tuple[_RemoteSubscription, bytes]:
            requests: asyncio.Queue[object] = asyncio.Queue()
            await requests.put(broker_pb2.SubscribeRequest(open=op))

            async def gen() -> AsyncIterator[object]:
                while True:
                    yield await requests.get()

            call = self._stream(conn, "Subscribe")(gen(), metadata=bearer(key))
            sub = _RemoteSubscription(call, requests, lambda: self._targets.broken(conn))
            try:
                return sub, await call.read()
            except grpc.aio.AioRpcError as exc:
                call.cancel()
                raise translate(exc) from exc

        sub, raw = await self._failover(once)
        first = broker_pb2.SubscribeResponse.FromString(raw)
        sub.name = first.subscribed.name
        sub.durable = bool(durable)
        return sub

    async def create_durable(
        self, key: str | None, name: str, pattern: str, options: DurableOptions = DURABLE_DEFAULTS
    ) -> DurableView:
        o = options
        d = await self._admin(key).create_durable(
            name,
            pattern,
            start=_client_start(o.start),
            max_in_flight=o.max_in_flight,
            ack_wait=o.ack_wait or None,
            max_deliveries=o.max_deliveries,
            endpoint_url=o.endpoint_url,
        )
        return DurableView(
            d.name,
            d.pattern,
            d.endpoint_url,
            d.ack_wait,
            d.max_deliveries,
            d.max_in_flight,
            d.webhook_secret,
        )

    async def metrics(self, key: str | None) -> tuple[bytes, str]:
        # This process is not the broker: its registry holds none of the broker's metrics.
        raise be.NotFound(
            "a gateway in its own process does not serve the broker's metrics",
            hint="scrape /metrics on the HTTP gateway of `lockgate serve --http`, "
            "or the broker's --metrics-listen",
        )

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
        req = audit_pb2.ListAuditRecordsRequest(
            org_filter=org,
            agent=agent,
            action=action,
            outcome=outcome,
            page_size=limit,
            page_token=str(after_id) if after_id else "",
        )
        if start_ms:
            req.since_time.FromMilliseconds(start_ms)
        if end_ms:
            req.until_time.FromMilliseconds(end_ms)
        resp = await self._unary(
            key, AUDIT + "ListAuditRecords", req, audit_pb2.ListAuditRecordsResponse
        )
        records = [
            AuditRecord(
                r.time.ToMilliseconds(),
                r.action,
                r.outcome,
                r.org,
                r.agent,
                r.credential,
                r.target,
                r.surface,
                r.peer,
                r.count,
                dict(r.detail),
                r.id,
            )
            for r in resp.records
        ]
        token = resp.next_page_token
        return records, int(token) if token.isdigit() else 0

    # -- the backbone registry and the config store (client.admin's calls, broker types) --------

    async def list_backbones(self, key: str | None) -> list[BackboneRecord]:
        return [_backbone(b) for b in await self._admin(key).list_backbones()]

    async def get_backbone(self, key: str | None, backbone_id: str) -> BackboneRecord:
        return _backbone(await self._admin(key).get_backbone(backbone_id))

    async def put_backbone(
        self, key: str | None, record: BackboneRecord, *, create: bool
    ) -> BackboneRecord:
        b = Backbone(
            record.id,
            record.endpoint,
            record.orgs,
            record.clusters,
            record.region,
            record.version,
            record.status,
        )
        admin = self._admin(key)
        return _backbone(await (admin.create_backbone(b) if create else admin.update_backbone(b)))

    async def delete_backbone(self, key: str | None, backbone_id: str) -> None:
        await self._admin(key).delete_backbone(backbone_id)

    async def get_config(self, key: str | None, version: int = 0) -> ConfigVersionRecord | None:
        v = await self._admin(key).get_config(version)
        return _config_version(v) if v.version else None

    async def set_config(
        self, key: str | None, changes: Sequence[ConfigChange], expected_version: int = 0
    ) -> ConfigVersionRecord:
        sent = [ClientChange(c.pattern, c.name, c.value, c.unset) for c in changes]
        v = await self._admin(key).set_config(sent, expected_version=expected_version)
        return _config_version(v)

    async def config_versions(self, key: str | None, limit: int = 100) -> list[ConfigVersionRecord]:
        return [_config_version(v) for v in await self._admin(key).list_config_versions(limit)]

    async def rollback_config(self, key: str | None, version: int = 0) -> ConfigVersionRecord:
        return _config_version(await self._admin(key).rollback_config(version))

    async def conversation(
        self, key: str | None, method: str, request: message.Message
    ) -> message.Message:
        m = _CONVERSATIONS.methods_by_name.get(method)
        if m is None:
            raise be.InvalidArgument(f"ConversationService has no method {method!r}")
        response: type[message.Message] = message_factory.GetMessageClass(m.output_type)
        return await self._unary(key, f"/{_CONVERSATIONS.full_name}/{method}", request, response)

    async def list_durables(self, key: str | None) -> list[DurableInfo]:
        """The durables ``key`` may see (the webhook dispatcher polls those with endpoints)."""
        return await self._admin(key).list_durables()

    async def webhook_secrets(self, key: str | None, name: str) -> WebhookSecrets:
        """What webhook durable ``name`` signs with, and its org (the dispatcher's)."""
        return await self._admin(key).webhook_secrets(name)

    async def close(self) -> None:
        await self._encoded.close()
        with contextlib.suppress(Exception):
            await self._targets.close()


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _backbone(b: Backbone) -> BackboneRecord:
    return BackboneRecord(
        b.id,
        b.endpoint,
        b.org_ids,
        b.cluster_ids,
        b.region,
        b.version,
        b.status,
        _ms(b.created_time),
        _ms(b.updated_time),
    )


def _config_version(v: ClientVersion) -> ConfigVersionRecord:
    settings: dict[str, dict[str, str]] = {}
    for s in v.settings:
        settings.setdefault(s.pattern, {})[s.name] = s.value
    return ConfigVersionRecord(
        v.version, _ms(v.created_time), v.author, v.origin, settings, v.detail
    )
