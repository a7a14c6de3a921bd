"""The gRPC face of the broker: BrokerService, the other services, health and reflection.

``Subscribe`` responses are written as pre-encoded bytes (see ``broker.wire``): the method
is registered with an identity serializer, so fan-out costs a bytes join per batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker import wire
from broker.admin_api import AdminServicer, PolicyServicer
from broker.auth import Authenticator, Principal
from broker.delivery import DurableSession, EphemeralSubscription
from broker.durables import DurableOptions
from broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    to_status,
)
from broker.node import Broker
from broker.pipeline import Prepared
from broker.policies import PolicyManager
from broker.rpc import Servicer, start_spec, timestamp_ms
from broker.v1 import admin_pb2, admin_pb2_grpc, broker_pb2, policy_pb2, policy_pb2_grpc

__all__ = ["BrokerServer"]

log = logging.getLogger("lockgate.server")
T = TypeVar("T")
_SERVICE = "broker.v1.BrokerService"
_PIPELINE_DEPTH = 64
_HEALTH_NAMES = ("", _SERVICE, "broker.v1.AdminService", "broker.v1.PolicyService")


class BrokerServer(Servicer):
    """Serves one :class:`Broker` over gRPC: BrokerService here, AdminService and
    PolicyService in ``broker.admin_api``, health and reflection."""

    def __init__(
        self, broker: Broker, auth: Authenticator, policies: PolicyManager | None = None
    ) -> None:
        super().__init__(broker, auth)
        self.admin = AdminServicer(broker, auth)
        self.policy_api = PolicyServicer(broker, auth, policies)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._publish_streams: set[asyncio.Queue[tuple[int, Prepared | BrokerError] | None]] = set()

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
        # stored concurrently so one group commit covers many, and answered in order; at most
        # _PIPELINE_DEPTH frames are in flight. On drain, stop() puts a BrokerError in every
        # stream's queue, so an idle publisher learns at once that it should reconnect.
        results: asyncio.Queue[tuple[int, Prepared | BrokerError] | None] = asyncio.Queue()
        window = asyncio.Semaphore(_PIPELINE_DEPTH)
        broker = self.broker

        async def read() -> None:
            try:
                async for req in requests:
                    await window.acquire()
                    try:
                        prepared = await broker.prepare(principal, req.subject, req.events)
                    except BrokerError as exc:
                        results.put_nowait((req.batch_id, exc))
                        return
                    # Its store write is already queued; the responder awaits it in order.
                    results.put_nowait((req.batch_id, prepared))
            finally:
                results.put_nowait(None)

        reader = asyncio.create_task(read())
        self._publish_streams.add(results)
        try:
            while (item := await results.get()) is not None:
                window.release()
                batch_id, staged = item
                try:
                    if isinstance(staged, BrokerError):
                        raise staged
                    outcome = await broker.commit(staged)
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
            self._publish_streams.discard(results)
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
            start = start_spec(op.start)
            if op.durable:
                options = DurableOptions(
                    queue=op.queue_group,
                    start=start,
                    max_in_flight=op.max_in_flight,
                    ack_wait=op.ack_wait.ToMilliseconds() / 1000,
                    max_deliveries=op.max_deliveries,
                )
                session = await self.broker.subscribe_durable(
                    principal, op.durable, op.pattern, options
                )
                outbox = session.outbox
                name = op.durable
            else:
                sub = await self.broker.subscribe_ephemeral(
                    principal, op.pattern, op.queue_group, op.max_in_flight, start
                )
                outbox = sub.outbox
                name = sub.name
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
                            # No answer to wait for: stored with the next group commit.
                            session.consumer.ack(list(req.ack.ids), strict=False)
                        elif kind == "nack":
                            session.consumer.nack(
                                list(req.nack.ids),
                                req.nack.delay.ToMilliseconds() / 1000,
                                strict=False,
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
                timestamp_ms(request.start_time, "start_time")
                if request.HasField("start_time")
                else 0
            )
            end = timestamp_ms(request.end_time, "end_time") if request.HasField("end_time") else 0
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
            start = start_spec(request.start)
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
            if request.term_ids:
                await self.broker.terminate(p, request.durable, list(request.term_ids))
            await self.broker.acknowledge(
                p,
                request.durable,
                list(request.ack_ids),
                list(request.nack_ids),
                request.nack_delay.ToMilliseconds() / 1000,
            )
            return broker_pb2.AcknowledgeResponse()

        return await self._unary(context, run)

    # -- serving ----------------------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        b = broker_pb2
        raw = bytes  # Subscribe and Fetch answer with pre-encoded bytes
        table = (
            (
                "Publish",
                grpc.stream_stream_rpc_method_handler,
                self.publish,
                b.PublishRequest,
                b.PublishResponse.SerializeToString,
            ),
            (
                "PublishOne",
                grpc.unary_unary_rpc_method_handler,
                self.publish_one,
                b.PublishOneRequest,
                b.PublishOneResponse.SerializeToString,
            ),
            (
                "Subscribe",
                grpc.stream_stream_rpc_method_handler,
                self.subscribe,
                b.SubscribeRequest,
                raw,
            ),
            (
                "Request",
                grpc.unary_unary_rpc_method_handler,
                self.request,
                b.RequestRequest,
                b.RequestResponse.SerializeToString,
            ),
            (
                "GetEvent",
                grpc.unary_unary_rpc_method_handler,
                self.get_event,
                b.GetEventRequest,
                b.GetEventResponse.SerializeToString,
            ),
            (
                "QueryEvents",
                grpc.unary_unary_rpc_method_handler,
                self.query_events,
                b.QueryEventsRequest,
                b.QueryEventsResponse.SerializeToString,
            ),
            ("Fetch", grpc.unary_unary_rpc_method_handler, self.fetch, b.FetchRequest, raw),
            (
                "Acknowledge",
                grpc.unary_unary_rpc_method_handler,
                self.acknowledge,
                b.AcknowledgeRequest,
                b.AcknowledgeResponse.SerializeToString,
            ),
        )
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                name: make(fn, request_deserializer=req.FromString, response_serializer=ser)
                for name, make, fn, req, ser in table
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
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self.admin, server)  # type: ignore[no-untyped-call]
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(self.policy_api, server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            broker_pb2.DESCRIPTOR.services_by_name["BrokerService"].full_name,
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
            policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        try:
            self.port = server.add_insecure_port(listen)
        except RuntimeError:  # grpcio's way of saying the bind failed
            self.port = 0
        if not self.port:
            raise FailedPrecondition(
                f"cannot listen on {listen}",
                reason="LISTEN_FAILED",
                hint="is another process using that port? choose one with --listen HOST:PORT",
            )
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
        self.broker.close_streams(err)
        for queue in self._publish_streams:
            queue.put_nowait((0, err))  # answered after the frames already in flight
        if self.server is not None:
            await self.server.stop(grace)
