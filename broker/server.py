"""The gRPC face of the broker: BrokerService, AdminService, health and reflection.

``Subscribe`` responses are written as pre-encoded bytes (see ``broker.wire``): the method
is registered with an identity serializer, so fan-out costs a bytes join per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker import wire
from broker.auth import Authenticator, Principal
from broker.core import Broker, PublishOutcome, StartSpec
from broker.delivery import DurableSession, EphemeralSubscription
from broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    InvalidStart,
    NotFound,
    PermissionDenied,
    Unavailable,
    to_status,
)
from broker.policies import PolicyManager
from broker.store import PolicyVersionRecord
from broker.v1 import admin_pb2, admin_pb2_grpc, broker_pb2, policy_pb2, policy_pb2_grpc

__all__ = ["BrokerServer"]

log = logging.getLogger("lockgate.server")
T = TypeVar("T")
_SERVICE = "broker.v1.BrokerService"
_PIPELINE_DEPTH = 64
_HEALTH_NAMES = ("", _SERVICE, "broker.v1.AdminService", "broker.v1.PolicyService")


def _ts_ms(ts: timestamp_pb2.Timestamp, what: str) -> int:
    if ts.nanos < 0 or ts.nanos >= 1_000_000_000 or not 0 <= ts.seconds <= 253402300799:
        raise InvalidStart(f"{what} is not a valid timestamp", hint="use RFC 3339 times")
    return int(ts.ToMilliseconds())


class BrokerServer:
    """Serves one :class:`Broker` over gRPC."""

    def __init__(
        self, broker: Broker, auth: Authenticator, policies: PolicyManager | None = None
    ) -> None:
        self.broker = broker
        self.auth = auth
        self.policies = policies
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._streams: set[asyncio.Task[object]] = set()

    # -- plumbing ---------------------------------------------------------------------------

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        key = self.auth.key_from_metadata(context.invocation_metadata())
        return await self.auth.authenticate(key)

    async def _unary(
        self,
        context: grpc.aio.ServicerContext,
        fn: Callable[[Principal], Awaitable[T]],
        *,
        admin: bool = False,
    ) -> T:
        try:
            principal = await self._principal(context)
            if admin and not principal.is_admin:
                raise PermissionDenied(
                    f"agent {principal.agent!r} lacks the admin role",
                    hint="use a key created with --role admin",
                )
            return await fn(principal)
        except BrokerError as err:
            await context.abort_with_status(to_status(err))
            raise AssertionError("unreachable") from err

    # -- BrokerService ----------------------------------------------------------------------

    async def publish(
        self,
        requests: AsyncIterator[broker_pb2.PublishRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[broker_pb2.PublishResponse]:
        try:
            principal = await self._principal(context)
        except BrokerError as err:
            await context.abort_with_status(to_status(err))
            return
        # Frames are admitted in arrival order (ids are assigned before the first await),
        # stored concurrently so one group commit covers many, and answered in order.
        results: asyncio.Queue[tuple[int, asyncio.Future[PublishOutcome]] | None] = asyncio.Queue(
            _PIPELINE_DEPTH
        )
        broker = self.broker
        loop = asyncio.get_running_loop()

        async def read() -> None:
            try:
                async for req in requests:
                    try:
                        prepared = await broker.prepare(principal, req.subject, req.events)
                    except BrokerError as exc:
                        failed: asyncio.Future[PublishOutcome] = loop.create_future()
                        failed.set_exception(exc)
                        await results.put((req.batch_id, failed))
                        return
                    await results.put((req.batch_id, loop.create_task(broker.commit(prepared))))
            finally:
                await results.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await results.get()) is not None:
                batch_id, task = item
                try:
                    outcome = await task
                except BrokerError as exc:
                    await context.abort_with_status(to_status(exc))
                    return
                resp = broker_pb2.PublishResponse(batch_id=batch_id, ids=outcome.ids)
                if outcome.duplicates:
                    resp.duplicate_indexes.extend(outcome.duplicates)
                for i, rejection in outcome.errors:
                    resp.errors.add(index=i, reason=rejection.reason, message=rejection.message)
                yield resp
            await reader
        finally:
            reader.cancel()

    async def publish_one(
        self, request: broker_pb2.PublishOneRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.PublishOneResponse:
        async def run(p: Principal) -> broker_pb2.PublishOneResponse:
            outcome = await self.broker.publish(p, request.subject, [request.event])
            if outcome.errors:
                raise outcome.errors[0][1]
            return broker_pb2.PublishOneResponse(
                id=outcome.ids[0], duplicate=bool(outcome.duplicates)
            )

        return await self._unary(context, run)

    async def subscribe(
        self,
        requests: AsyncIterator[broker_pb2.SubscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes]:
        sub: EphemeralSubscription | None = None
        session: DurableSession | None = None
        reader: asyncio.Task[None] | None = None
        try:
            principal = await self._principal(context)
            it = requests.__aiter__()
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                return
            if first.WhichOneof("kind") != "open":
                raise InvalidArgument(
                    "the first Subscribe message must be 'open'",
                    reason="NOT_OPEN",
                    hint="send SubscribeOpen before acks or nacks",
                )
            op = first.open
            start = StartSpec(
                op.start.policy,
                _ts_ms(op.start.since_time, "since_time") if op.start.HasField("since_time") else 0,
                op.start.after_id,
            )
            if op.durable:
                session = await self.broker.subscribe_durable(
                    principal,
                    op.durable,
                    op.pattern,
                    queue=op.queue_group,
                    start=start,
                    max_in_flight=op.max_in_flight,
                    ack_wait=op.ack_wait.ToMilliseconds() / 1000,
                    max_deliveries=op.max_deliveries,
                )
                outbox = session.outbox
                name = op.durable
            else:
                if start.policy not in (0, broker_pb2.START_POLICY_NEW):
                    # Replay for an ephemeral subscription: validate, then read the log.
                    self.broker.start_after(start)
                sub = self.broker.subscribe_ephemeral(
                    principal, op.pattern, op.queue_group, op.max_in_flight
                )
                outbox = sub.outbox
                name = sub.name
                if start.policy not in (0, broker_pb2.START_POLICY_NEW):
                    await self._replay(principal, op.pattern, start, sub)
            yield wire.subscribed_frame(name, self.broker.head)

            async def read() -> None:
                try:
                    async for req in it:
                        kind = req.WhichOneof("kind")
                        if session is None:
                            raise FailedPrecondition(
                                "acks and nacks need a durable subscription",
                                reason="UNKNOWN_DURABLE",
                                hint="set 'durable' in SubscribeOpen to get at-least-once",
                            )
                        if kind == "ack":
                            session.consumer.ack(list(req.ack.ids))
                        elif kind == "nack":
                            session.consumer.nack(
                                list(req.nack.ids), req.nack.delay.ToMilliseconds() / 1000
                            )
                        else:
                            raise InvalidArgument(
                                "a second 'open' on one stream", reason="ALREADY_OPEN"
                            )
                except BrokerError as err:
                    outbox.close(err)
                except (asyncio.CancelledError, grpc.aio.AioRpcError):
                    raise
                else:
                    # The client half-closed: end the stream once the outbox drains.
                    outbox.close()

            reader = asyncio.create_task(read())
            delivered = self.broker.telemetry.delivered
            while (body := await outbox.take()) is not None:
                yield body
                delivered.add(outbox.last_count)
            if outbox.error is not None:
                raise outbox.error
            if self.broker.draining:
                raise Unavailable(
                    "the broker is shutting down", reason="SHUTTING_DOWN", hint="reconnect"
                )
        except BrokerError as err:
            await context.abort_with_status(to_status(err))
        finally:
            if reader is not None:
                reader.cancel()
            if sub is not None:
                self.broker.unsubscribe(sub)
            if session is not None:
                session.consumer.detach(session)

    async def _replay(
        self, principal: Principal, pattern: str, start: StartSpec, sub: EphemeralSubscription
    ) -> None:
        # Replays the log up to the head, then live events follow. Events stored during the
        # replay may come twice: at-most-once with replay is "at least the replayed part".
        after = self.broker.start_after(start)
        head = self.broker.head
        while after < head:
            events, last = await self.broker.query(
                principal.org, pattern, after_id=after, limit=500
            )
            frames = [
                wire.delivery_frame(
                    e.id, wire.subject_field(e.subject), e.event.SerializeToString()
                )
                for e in events
                if e.id <= head
            ]
            if frames:
                sub.outbox.put(b"".join(frames), len(frames))
            if not last:
                break
            after = last

    async def request(
        self, request: broker_pb2.RequestRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.RequestResponse:
        async def run(p: Principal) -> broker_pb2.RequestResponse:
            timeout = request.timeout.ToMilliseconds() / 1000 or 5.0
            remaining = context.time_remaining()
            if remaining is not None:
                timeout = min(timeout, max(0.0, remaining - 0.01))
            reply = await self.broker.request(p, request.subject, request.event, timeout)
            return broker_pb2.RequestResponse(event=reply)

        return await self._unary(context, run)

    async def get_event(
        self, request: broker_pb2.GetEventRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.GetEventResponse:
        async def run(p: Principal) -> broker_pb2.GetEventResponse:
            return broker_pb2.GetEventResponse(event=await self.broker.get_event(p.org, request.id))

        return await self._unary(context, run)

    async def query_events(
        self, request: broker_pb2.QueryEventsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.QueryEventsResponse:
        async def run(p: Principal) -> broker_pb2.QueryEventsResponse:
            after = request.after_id
            if request.page_token:
                if not request.page_token.isdigit():
                    raise InvalidArgument(
                        "page_token is not one this broker issued", reason="INVALID_PAGE_TOKEN"
                    )
                after = max(after, int(request.page_token))
            size = min(request.page_size or 100, 1000)
            start = (
                _ts_ms(request.start_time, "start_time") if request.HasField("start_time") else 0
            )
            end = _ts_ms(request.end_time, "end_time") if request.HasField("end_time") else 0
            events, last = await self.broker.query(
                p.org,
                request.pattern or ">",
                after_id=after,
                start_ms=start,
                end_ms=end,
                limit=size,
            )
            return broker_pb2.QueryEventsResponse(
                events=events, next_page_token=str(last) if last else ""
            )

        return await self._unary(context, run)

    async def fetch(
        self, request: broker_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        async def run(p: Principal) -> bytes:
            start = StartSpec(
                request.start.policy,
                _ts_ms(request.start.since_time, "since_time")
                if request.start.HasField("since_time")
                else 0,
                request.start.after_id,
            )
            wait = request.wait.ToMilliseconds() / 1000
            remaining = context.time_remaining()
            if remaining is not None:
                wait = min(wait, max(0.0, remaining - 0.05))
            # FetchResponse.deliveries is field 2, like SubscribeResponse: frames as they are.
            return await self.broker.fetch(
                p,
                request.durable,
                request.max_events,
                wait,
                pattern=request.pattern,
                start=start,
            )

        return await self._unary(context, run)

    async def acknowledge(
        self, request: broker_pb2.AcknowledgeRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.AcknowledgeResponse:
        async def run(p: Principal) -> broker_pb2.AcknowledgeResponse:
            self.broker.acknowledge(
                p,
                request.durable,
                list(request.ack_ids),
                list(request.nack_ids),
                request.nack_delay.ToMilliseconds() / 1000,
            )
            return broker_pb2.AcknowledgeResponse()

        return await self._unary(context, run)

    # -- AdminService -----------------------------------------------------------------------

    def _info(self, name: str, org: str) -> admin_pb2.DurableInfo:
        c = self.broker.durable(org, name)
        snap = c.snapshot()
        info = admin_pb2.DurableInfo(
            name=c.name,
            pattern=snap.pattern,
            ack_floor=(min(c.pending) - 1) if c.pending else snap.cursor,
            pending_count=len(c.pending),
            connected=len(c.sessions),
            max_deliveries=snap.max_deliveries,
            max_in_flight=snap.max_in_flight,
            delivered_id=snap.cursor,
            endpoint_url=snap.endpoint_url,
        )
        info.ack_wait.FromMilliseconds(snap.ack_wait_ms)
        return info

    async def CreateDurable(
        self, request: admin_pb2.CreateDurableRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateDurableResponse:
        async def run(p: Principal) -> admin_pb2.CreateDurableResponse:
            start = StartSpec(
                request.start.policy,
                _ts_ms(request.start.since_time, "since_time")
                if request.start.HasField("since_time")
                else 0,
                request.start.after_id,
            )
            await self.broker.create_durable(
                p,
                request.name,
                request.pattern,
                start=start,
                max_in_flight=request.max_in_flight,
                ack_wait=request.ack_wait.ToMilliseconds() / 1000,
                max_deliveries=request.max_deliveries,
                endpoint_url=request.endpoint_url,
            )
            return admin_pb2.CreateDurableResponse(durable=self._info(request.name, p.org))

        return await self._unary(context, run, admin=True)

    async def ListDurables(
        self, request: admin_pb2.ListDurablesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListDurablesResponse:
        async def run(p: Principal) -> admin_pb2.ListDurablesResponse:
            names = sorted(n for (org, n) in self.broker.consumers if org == p.org)
            return admin_pb2.ListDurablesResponse(durables=[self._info(n, p.org) for n in names])

        return await self._unary(context, run, admin=True)

    async def GetDurable(
        self, request: admin_pb2.GetDurableRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetDurableResponse:
        async def run(p: Principal) -> admin_pb2.GetDurableResponse:
            info = self._info(request.name, p.org)
            c = self.broker.durable(p.org, request.name)
            resp = admin_pb2.GetDurableResponse(durable=info)
            for i in sorted(c.pending)[:1000]:
                resp.pending.add(id=i, attempt=c.pending[i].attempt)
            return resp

        return await self._unary(context, run, admin=True)

    async def DeleteDurable(
        self, request: admin_pb2.DeleteDurableRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteDurableResponse:
        async def run(p: Principal) -> admin_pb2.DeleteDurableResponse:
            await self.broker.delete_durable(p.org, request.name)
            return admin_pb2.DeleteDurableResponse()

        return await self._unary(context, run, admin=True)

    async def ListDeadLetters(
        self, request: admin_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListDeadLettersResponse:
        async def run(p: Principal) -> admin_pb2.ListDeadLettersResponse:
            after = (0, 0)
            if request.page_token:
                try:
                    a, b = request.page_token.split(":")
                    after = (int(a), int(b))
                except ValueError:
                    raise InvalidArgument(
                        "page_token is not one this broker issued", reason="INVALID_PAGE_TOKEN"
                    ) from None
            if request.durable:
                self.broker.durable(p.org, request.durable)
            size = min(request.page_size or 100, 1000)
            recs = await self.broker.store.list_dead_letters(p.org, request.durable, after, size)
            resp = admin_pb2.ListDeadLettersResponse()
            for r in recs:
                dl = resp.dead_letters.add(id=r.id, durable=r.durable, attempts=r.attempts)
                dl.dead_time.FromMilliseconds(r.dead_ms)
                with contextlib.suppress(BrokerError):
                    dl.event.CopyFrom(await self.broker.get_event(p.org, r.id))
            if len(recs) == size:
                resp.next_page_token = f"{recs[-1].dead_ms}:{recs[-1].id}"
            return resp

        return await self._unary(context, run, admin=True)

    async def RedriveDeadLetters(
        self, request: admin_pb2.RedriveDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RedriveDeadLettersResponse:
        async def run(p: Principal) -> admin_pb2.RedriveDeadLettersResponse:
            n = await self.broker.redrive(p.org, request.durable, list(request.ids) or None)
            return admin_pb2.RedriveDeadLettersResponse(count=n)

        return await self._unary(context, run, admin=True)

    # -- PolicyService ----------------------------------------------------------------------

    def _manager(self) -> PolicyManager:
        if self.policies is None:
            raise Unavailable("policies are not managed by this server", reason="NO_POLICIES")
        return self.policies

    @staticmethod
    def _version(rec: PolicyVersionRecord) -> policy_pb2.PolicyVersion:
        v = policy_pb2.PolicyVersion(
            version=rec.version, active=rec.active, file_count=len(rec.files), origin=rec.origin
        )
        v.created_time.FromMilliseconds(rec.created_ms)
        return v

    async def PutPolicies(
        self, request: policy_pb2.PutPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PutPoliciesResponse:
        async def run(p: Principal) -> policy_pb2.PutPoliciesResponse:
            files = {f.name: f.source for f in request.files}
            ps = await self._manager().apply(files, "rpc", validate_only=request.validate_only)
            resp = policy_pb2.PutPoliciesResponse(
                version=ps.version, applied=not request.validate_only
            )
            for w in ps.warnings:
                resp.problems.add(
                    file=w.file,
                    line=w.line,
                    column=w.column,
                    message=w.message,
                    hint=w.hint,
                    severity="warning",
                )
            return resp

        return await self._unary(context, run, admin=True)

    async def GetPolicies(
        self, request: policy_pb2.GetPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.GetPoliciesResponse:
        async def run(p: Principal) -> policy_pb2.GetPoliciesResponse:
            versions = await self._manager().versions()
            want = [
                v
                for v in versions
                if (v.version == request.version if request.version else v.active)
            ]
            if not want:
                raise NotFound(
                    f"policy version {request.version or '(running)'} does not exist",
                    reason="UNKNOWN_VERSION",
                )
            rec = want[0]
            return policy_pb2.GetPoliciesResponse(
                version=self._version(rec),
                files=[
                    policy_pb2.PolicyFile(name=n, source=t) for n, t in sorted(rec.files.items())
                ],
            )

        return await self._unary(context, run, admin=True)

    async def ListPolicyVersions(
        self, request: policy_pb2.ListPolicyVersionsRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.ListPolicyVersionsResponse:
        async def run(p: Principal) -> policy_pb2.ListPolicyVersionsResponse:
            versions = await self._manager().versions()
            return policy_pb2.ListPolicyVersionsResponse(
                versions=[self._version(v) for v in versions]
            )

        return await self._unary(context, run, admin=True)

    async def RollbackPolicies(
        self, request: policy_pb2.RollbackPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.RollbackPoliciesResponse:
        async def run(p: Principal) -> policy_pb2.RollbackPoliciesResponse:
            rec = await self._manager().rollback(request.version)
            out = self._version(rec)
            out.active = True
            return policy_pb2.RollbackPoliciesResponse(version=out)

        return await self._unary(context, run, admin=True)

    # -- serving ----------------------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        b = broker_pb2
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Publish": grpc.stream_stream_rpc_method_handler(
                    self.publish,
                    request_deserializer=b.PublishRequest.FromString,
                    response_serializer=b.PublishResponse.SerializeToString,
                ),
                "PublishOne": grpc.unary_unary_rpc_method_handler(
                    self.publish_one,
                    request_deserializer=b.PublishOneRequest.FromString,
                    response_serializer=b.PublishOneResponse.SerializeToString,
                ),
                "Subscribe": grpc.stream_stream_rpc_method_handler(
                    self.subscribe,
                    request_deserializer=b.SubscribeRequest.FromString,
                    response_serializer=bytes,  # pre-encoded SubscribeResponse bytes
                ),
                "Request": grpc.unary_unary_rpc_method_handler(
                    self.request,
                    request_deserializer=b.RequestRequest.FromString,
                    response_serializer=b.RequestResponse.SerializeToString,
                ),
                "GetEvent": grpc.unary_unary_rpc_method_handler(
                    self.get_event,
                    request_deserializer=b.GetEventRequest.FromString,
                    response_serializer=b.GetEventResponse.SerializeToString,
                ),
                "Fetch": grpc.unary_unary_rpc_method_handler(
                    self.fetch,
                    request_deserializer=b.FetchRequest.FromString,
                    response_serializer=bytes,  # pre-encoded FetchResponse bytes
                ),
                "Acknowledge": grpc.unary_unary_rpc_method_handler(
                    self.acknowledge,
                    request_deserializer=b.AcknowledgeRequest.FromString,
                    response_serializer=b.AcknowledgeResponse.SerializeToString,
                ),
                "QueryEvents": grpc.unary_unary_rpc_method_handler(
                    self.query_events,
                    request_deserializer=b.QueryEventsRequest.FromString,
                    response_serializer=b.QueryEventsResponse.SerializeToString,
                ),
            },
        )

    async def start(self, listen: str) -> int:
        cfg = self.broker.config
        opts = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes + 64 * 1024),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", int(cfg.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=opts)
        server.add_generic_rpc_handlers((self._handlers(),))
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            broker_pb2.DESCRIPTOR.services_by_name["BrokerService"].full_name,
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
            policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        self.port = server.add_insecure_port(listen)
        if not self.port:
            raise Unavailable(f"cannot listen on {listen}", hint="is the port already in use?")
        await server.start()
        self.server = server
        for name in _HEALTH_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float) -> None:
        """Drains: NOT_SERVING, refuse new publishes, end streams, finish in-flight work."""
        for name in _HEALTH_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.broker.draining = True
        err = Unavailable("the broker is shutting down", reason="SHUTTING_DOWN", hint="reconnect")
        for route in list(self.broker.router._orgs.values()):
            for entry in route.values():
                for t in [*entry.singles, *(m for g in entry.groups.values() for m in g)]:
                    if isinstance(t, EphemeralSubscription):
                        t.outbox.close(err)
        for c in self.broker.consumers.values():
            for s in c.sessions:
                s.outbox.close(err)
        if self.server is not None:
            await self.server.stop(grace)
