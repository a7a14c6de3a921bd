"""``BrokerService``: publish, subscribe, request/reply, history and polling.

``Subscribe`` and ``Fetch`` answer with pre-encoded bytes (see ``broker.wire``): they are
registered raw, so fan-out costs a bytes join per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from lockgate.broker import wire
from lockgate.broker.auth import Authenticator, Principal
from lockgate.broker.delivery import BoundSession, EphemeralSubscription
from lockgate.broker.durables import DurableOptions
from lockgate.broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    to_status,
)
from lockgate.broker.frameturn import FrameTurn
from lockgate.broker.ids import time_ms_of
from lockgate.broker.node import Broker
from lockgate.broker.pipeline import Prepared
from lockgate.broker.publishframe import FrameReader
from lockgate.broker.quotas import Connections
from lockgate.broker.rpc import (
    Context,
    Servicer,
    page_after,
    page_size,
    parse_request,
    refuse_stream,
    start_spec,
    timestamp_ms,
    unary,
)
from lockgate.broker.stages import STAGES
from lockgate.broker.stages import now as stage_now
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2

__all__ = ["RAW_REQUESTS", "RAW_RESPONSES", "REQUEST_BATCHES", "BrokerService"]

CloudEvent = cloudevent_pb2.CloudEvent
RAW_RESPONSES = ("Subscribe", "Fetch")
RAW_REQUESTS = ("Publish",)
"""Read at the byte level (``broker.publishframe``), protobuf parsing only what it does not
read."""
_PIPELINE_DEPTH = 64
_log = logging.getLogger("lockgate.broker")
_REQUESTS_IN_FLIGHT = 1000
REQUEST_BATCHES = "lockgate-request-batches"
"""Metadata key: the broker announces that it reads ``RequestStreamRequest.more``; a client
that sends it gets ready answers together in ``RequestStreamResponse.more``."""


PublishResult = tuple[int, Prepared | asyncio.Future[Prepared] | BrokerError]
"""A Publish stream's frame on its way to its answer: its batch id, and what it became (or
the task preparing it)."""


def _cancel_unanswered(results: asyncio.Queue[PublishResult | None]) -> None:
    """Cancels the prepares of frames a closing stream will not answer (each lets go of
    what it claimed in the dedup window; one already staged is stored, unacknowledged)."""
    while not results.empty():
        item = results.get_nowait()
        if item is not None and isinstance(item[1], asyncio.Future):
            task = item[1]
            if not task.cancel() and not task.cancelled():
                task.exception()  # it failed after an earlier one: nobody asks for why


class BrokerService(Servicer):
    """The broker's main service; :attr:`publish_streams` lets a drain reach every
    Publish stream."""

    SERVICE = "broker.v1.BrokerService"
    publish_streams: set[asyncio.Queue[PublishResult | None]]

    def __init__(self, broker: Broker, auth: Authenticator) -> None:
        super().__init__(broker, auth)
        self.publish_streams = set()
        cfg = broker.config
        self.connections = Connections(cfg.max_connections_per_org, cfg.max_streams_per_connection)
        """Open Publish and Subscribe streams by connection and org (the quotas)."""
        broker.telemetry.observe_grpc_connections(self.connections.by_org)

    async def Publish(
        self,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[broker_pb2.PublishResponse]:
        frames = requests.__aiter__()
        unread: AsyncIterator[bytes] | None = frames
        try:
            cert = self.certificate(context)
            principal = self.authorized(await self.authenticated(context), "Publish")
            key = self.auth.key_from_metadata(context.invocation_metadata())
            # Counted from its first frame, as Subscribe from its open message (see there).
            try:
                first = await frames.__anext__()
            except StopAsyncIteration:
                return
            unread = None
            release = self.connections.open(principal.org, context.peer())
        except BrokerError as err:
            await refuse_stream(context, unread, err)
            return
        # Frames are admitted in arrival order (ids are assigned before the first await),
        # stored concurrently so one group commit covers many, and answered in order; at most
        # _PIPELINE_DEPTH frames are in flight. With a shared dedup window (a cluster) each
        # frame is prepared in a task of its own, chained to the previous frame's: its
        # round trip to the window overlaps theirs, where one frame at a time waited for it
        # (see Pipeline.prepare's ``after``). On drain, stop() puts a BrokerError in every
        # stream's queue, so an idle publisher learns at once that it should reconnect.
        results: asyncio.Queue[PublishResult | None] = asyncio.Queue()
        window = asyncio.Semaphore(_PIPELINE_DEPTH)
        broker = self.broker
        concurrent = broker.pipeline.concurrent

        reader_of_frames = FrameReader()

        async def arriving() -> AsyncIterator[bytes]:
            yield first
            async for raw in frames:
                yield raw

        async def read() -> None:
            events: Sequence[CloudEvent]
            turn: FrameTurn | None = None
            try:
                async for raw in arriving():
                    received = stage_now() if STAGES.enabled else 0
                    await window.acquire()
                    frame = reader_of_frames.read(raw)
                    if frame is None:  # not the common layout: protobuf and per-event checks
                        req = parse_request(broker_pb2.PublishRequest, raw)
                        subject, batch_id, events = req.subject, req.batch_id, req.events
                        fresh = req.fresh
                    else:
                        subject, batch_id, events, fresh = frame
                    if concurrent:
                        turn = FrameTurn(turn)
                        turn.prepared = asyncio.ensure_future(
                            broker.prepare(
                                principal, subject, events, received, turn=turn, fresh=fresh
                            )
                        )
                        results.put_nowait((batch_id, turn.prepared))
                        continue
                    try:
                        prepared = await broker.prepare(
                            principal, subject, events, received, fresh=fresh
                        )
                    except BrokerError as exc:
                        results.put_nowait((batch_id, exc))
                        return
                    # Its store write is already queued; the responder awaits it in order.
                    results.put_nowait((batch_id, prepared))
            except BrokerError as exc:  # a frame that does not decode (MALFORMED_MESSAGE)
                results.put_nowait((0, exc))
            finally:
                results.put_nowait(None)

        async def watch() -> None:
            # A revoked key ends the stream even while it is idle; frames before it commit.
            revoked = await self.auth.until_revoked(key, certified=cert is not None)
            results.put_nowait((0, revoked))

        reader = asyncio.create_task(read())
        watcher = asyncio.create_task(watch())
        self.publish_streams.add(results)
        try:
            while (item := await results.get()) is not None:
                window.release()
                batch_id, staged = item
                try:
                    if isinstance(staged, BrokerError):
                        raise staged
                    if isinstance(staged, asyncio.Future):
                        staged = await staged
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
            release()
            self.publish_streams.discard(results)
            reader.cancel()
            watcher.cancel()
            _cancel_unanswered(results)

    @unary()
    async def PublishOne(
        self, request: broker_pb2.PublishOneRequest, p: Principal, context: Context
    ) -> broker_pb2.PublishOneResponse:
        outcome = await self.broker.publish(p, request.subject, [request.event])
        if outcome.errors:
            raise outcome.errors[0][1]
        return broker_pb2.PublishOneResponse(id=outcome.ids[0], duplicate=bool(outcome.duplicates))

    async def Subscribe(
        self,
        requests: AsyncIterator[broker_pb2.SubscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes]:
        sub: EphemeralSubscription | None = None
        session: BoundSession | None = None
        reader: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        release: Callable[[], None] | None = None
        it = requests.__aiter__()
        unread: AsyncIterator[broker_pb2.SubscribeRequest] | None = it
        try:
            cert = self.certificate(context)
            principal = self.authorized(await self.authenticated(context), "Subscribe")
            key = self.auth.key_from_metadata(context.invocation_metadata())
            try:
                first = await it.__anext__()
            except StopAsyncIteration:
                return
            unread = None
            # Counted once the open message is read: refusing a stream whose first write is
            # still in flight makes grpcio's client report INTERNAL instead of our status
            # (grpc/grpc#36066). Streams not counted yet are bounded by max_concurrent_streams.
            release = self.connections.open(principal.org, context.peer())
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
                            session.ack(list(req.ack.ids))
                        elif kind == "nack":
                            session.nack(list(req.nack.ids), req.nack.delay.ToMilliseconds() / 1000)
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

            async def watch() -> None:
                # Ends the stream once its key is revoked, idle or not.
                outbox.close(await self.auth.until_revoked(key, certified=cert is not None))

            reader = asyncio.create_task(read())
            watcher = asyncio.create_task(watch())
            delivered = self.broker.telemetry.delivered
            latency = self.broker.telemetry.delivery_latency
            totals = self.broker.telemetry.totals
            kind = {"kind": "durable" if session is not None else "ephemeral"}
            while (body := await outbox.take()) is not None:
                first_id = wire.first_id(body)
                if STAGES.enabled:
                    STAGES.sent(first_id, stage_now())
                yield body
                delivered.add(outbox.last_count)
                totals.add(principal.org, 1, outbox.last_count)
                # An id holds the millisecond it was issued at (admission): one figure per
                # batch, its first event's, which waited the longest.
                latency.record(max(0.0, time.time() - time_ms_of(first_id) / 1000), kind)
            if outbox.error is not None:
                raise outbox.error
            if self.broker.draining:
                raise Unavailable(
                    "the broker is shutting down", reason="SHUTTING_DOWN", hint="reconnect"
                )
        except BrokerError as err:
            await refuse_stream(context, unread, err)
        finally:
            if release is not None:
                release()
            if reader is not None:
                reader.cancel()
            if watcher is not None:
                watcher.cancel()
            if sub is not None:
                self.broker.unsubscribe(sub)
            if session is not None:
                self.broker.unbind_durable(principal, session)

    async def RequestStream(
        self,
        requests: AsyncIterator[broker_pb2.RequestStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[broker_pb2.RequestStreamResponse]:
        """Requests on one stream, each answered as its reply comes; at most
        ``_REQUESTS_IN_FLIGHT`` wait or have answers not yet written (then the stream is not
        read: back-pressure).
        A stream writes one message at a time (about 0.3-1 ms each on a loaded machine), so
        at 1,000 requests/s one message per request made its queue grow without end; with
        batches (see ``REQUEST_BATCHES``) what waits goes in the next message."""
        try:
            cert = self.certificate(context)
            principal = self.authorized(await self.authenticated(context), "RequestStream")
            key = self.auth.key_from_metadata(context.invocation_metadata())
            release = self.connections.open(principal.org, context.peer())
        except BrokerError as err:
            await refuse_stream(context, requests.__aiter__(), err)
            return
        batched = any(k == REQUEST_BATCHES for k, _ in context.invocation_metadata() or ())
        # Half the message limit: the answers' own framing, and a margin.
        batch_bytes = self.broker.config.max_message_bytes // 2
        await context.send_initial_metadata(((REQUEST_BATCHES, "1"),))
        answers: asyncio.Queue[broker_pb2.RequestStreamResponse | BrokerError | None]
        answers = asyncio.Queue()
        room = asyncio.Semaphore(_REQUESTS_IN_FLIGHT)
        pending: set[asyncio.Task[None]] = set()
        broker = self.broker

        async def answer(rid: int, req: broker_pb2.RequestRequest) -> None:
            try:
                timeout = req.timeout.ToMilliseconds() / 1000 or 5.0
                reply = await broker.request(principal, req.subject, req.event, timeout)
                answers.put_nowait(broker_pb2.RequestStreamResponse(request_id=rid, event=reply))
            except BrokerError as exc:
                error = broker_pb2.RequestError(reason=exc.reason, message=exc.message)
                answers.put_nowait(broker_pb2.RequestStreamResponse(request_id=rid, error=error))
            except Exception:  # a bug must answer its request, not leave it to the timeout
                _log.exception("request.failed: request %d on %s failed", rid, req.subject)
                error = broker_pb2.RequestError(
                    reason="INTERNAL", message="the broker failed to handle the request"
                )
                answers.put_nowait(broker_pb2.RequestStreamResponse(request_id=rid, error=error))

        async def read() -> None:
            try:
                async for item in requests:
                    for one in (item, *item.more) if item.more else (item,):
                        await room.acquire()
                        task = asyncio.create_task(answer(one.request_id, one.request))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                await asyncio.gather(*pending)  # half-closed: answer what was asked
            except BrokerError as exc:  # a message that does not decode (MALFORMED_MESSAGE)
                answers.put_nowait(exc)
            finally:
                answers.put_nowait(None)

        async def watch() -> None:
            answers.put_nowait(await self.auth.until_revoked(key, certified=cert is not None))

        reader = asyncio.create_task(read())
        watcher = asyncio.create_task(watch())
        try:
            ahead: list[broker_pb2.RequestStreamResponse | BrokerError | None] = []
            while (item := ahead.pop() if ahead else await answers.get()) is not None:
                if isinstance(item, BrokerError):
                    await context.abort_with_status(to_status(item))
                    return
                if batched:
                    size = item.ByteSize()
                    while not answers.empty():  # ready now: in this message
                        after = answers.get_nowait()
                        if not isinstance(after, broker_pb2.RequestStreamResponse):
                            ahead.append(after)
                            break
                        size += after.ByteSize()
                        if size > batch_bytes:
                            ahead.append(after)
                            break
                        item.more.append(after)
                yield item
                # A request's room is given back once its answer is written, not once it is
                # ready: a peer that does not read its answers stops the reading of its
                # requests, where the ready answers queued without end.
                for _ in range(1 + len(item.more)):
                    room.release()
        finally:
            release()
            reader.cancel()
            watcher.cancel()
            for task in pending:
                task.cancel()

    @unary()
    async def Request(
        self, request: broker_pb2.RequestRequest, p: Principal, context: Context
    ) -> broker_pb2.RequestResponse:
        timeout = request.timeout.ToMilliseconds() / 1000 or 5.0
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(0.0, remaining - 0.01))
        reply = await self.broker.request(p, request.subject, request.event, timeout)
        return broker_pb2.RequestResponse(event=reply)

    @unary()
    async def GetEvent(
        self, request: broker_pb2.GetEventRequest, p: Principal, context: Context
    ) -> broker_pb2.GetEventResponse:
        return broker_pb2.GetEventResponse(event=await self.broker.get_event(p, request.id))

    @unary()
    async def QueryEvents(
        self, request: broker_pb2.QueryEventsRequest, p: Principal, context: Context
    ) -> broker_pb2.QueryEventsResponse:
        # Up to 64 bits, as after_id (uint64) is: a token past the last id is an empty page.
        after = max(request.after_id, page_after(request.page_token, (1 << 64) - 1))
        size = page_size(request.page_size)
        start = (
            timestamp_ms(request.start_time, "start_time") if request.HasField("start_time") else 0
        )
        end = timestamp_ms(request.end_time, "end_time") if request.HasField("end_time") else 0
        events, last = await self.broker.query(
            p,
            request.pattern or ">",
            after_id=after,
            start_ms=start,
            end_ms=end,
            limit=size,
            cloudevent_id=request.cloudevent_id,
        )
        return broker_pb2.QueryEventsResponse(
            events=events, next_page_token=str(last) if last else ""
        )

    @unary()
    async def Fetch(
        self, request: broker_pb2.FetchRequest, p: Principal, context: Context
    ) -> bytes:
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

    @unary()
    async def Acknowledge(
        self, request: broker_pb2.AcknowledgeRequest, p: Principal, context: Context
    ) -> broker_pb2.AcknowledgeResponse:
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
