"""The client façade: one channel, one coalescing publish stream, subscriptions, history, admin."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

import grpc
from google.protobuf.message import Message as _Message

from broker.v1 import admin_pb2, broker_pb2, cloudevent_pb2
from clients._codec import (
    AttributeValue,
    StartSpec,
    complete_cloudevent,
    default_source,
    fill_cloudevent,
    new_event_id,
    to_cloudevent,
    to_duration,
    to_start_position,
    to_timestamp,
)
from clients._errors import (
    InvalidEvent,
    LockgateError,
    RequestTimeout,
    Unavailable,
    error_for_reason,
    from_rpc_error,
)
from clients._message import Event, Message, PublishResult, StoredEvent
from clients._publisher import Publisher
from clients._subscription import Subscription

__all__ = ["Client"]

_R = TypeVar("_R", bound=_Message)
_BROKER = "/broker.v1.BrokerService/"
_ADMIN = "/broker.v1.AdminService/"
_LARGE = 64 * 1024  # payloads above this get their exact encoded size checked


class Client:
    """A connection to a Lockgate broker.

    Example::

        async with Client("127.0.0.1:50051", api_key="lg_...") as c:
            event_id = await c.publish("billing.invoices", {"total": 10})
            async for msg in c.subscribe("billing.>", durable="ledger"):
                print(msg.data)
                await msg.ack()
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        api_key: str | None = None,
        *,
        connect_timeout: float | None = 10.0,
        max_message_bytes: int = 1 << 20,
        publish_timeout: float = 30.0,
        max_reconnect_attempts: int | None = None,
        source: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.max_message_bytes = max_message_bytes
        self.publish_timeout = publish_timeout
        self.max_reconnect_attempts = max_reconnect_attempts
        self.source = source or default_source()
        self._credentials = credentials
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._channel: grpc.aio.Channel | None = None
        self._publisher: Publisher | None = None
        self._subscriptions: set[Subscription] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def connect(self) -> Client:
        """Open the channel and wait until the broker answers (``connect_timeout``)."""
        if self._channel is not None:
            return self
        options = [
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_send_message_length", self.max_message_bytes + 64 * 1024),
            ("grpc.max_receive_message_length", max(64 << 20, 16 * self.max_message_bytes)),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(self.target, self._credentials, options)
        else:
            channel = grpc.aio.insecure_channel(self.target, options)
        if self.connect_timeout is not None:
            try:
                await asyncio.wait_for(channel.channel_ready(), self.connect_timeout)
            except TimeoutError:
                await channel.close(None)
                raise Unavailable(
                    f"cannot reach the broker at {self.target}",
                    hint="start it with `lockgate serve`, or pass the right --server / target",
                ) from None
        self._channel = channel
        self._publish_stream: grpc.aio.StreamStreamMultiCallable[
            broker_pb2.PublishRequest, broker_pb2.PublishResponse
        ] = channel.stream_stream(
            _BROKER + "Publish",
            broker_pb2.PublishRequest.SerializeToString,
            broker_pb2.PublishResponse.FromString,
        )
        self._subscribe_stream: grpc.aio.StreamStreamMultiCallable[
            broker_pb2.SubscribeRequest, broker_pb2.SubscribeResponse
        ] = channel.stream_stream(
            _BROKER + "Subscribe",
            broker_pb2.SubscribeRequest.SerializeToString,
            broker_pb2.SubscribeResponse.FromString,
        )
        self._publisher = Publisher(
            lambda: self._publish_stream(None, metadata=self._metadata),
            publish_timeout=self.publish_timeout,
            max_frame_bytes=min(900 * 1024, self.max_message_bytes - 16 * 1024),
            max_reconnect_attempts=self.max_reconnect_attempts,
        )
        return self

    async def close(self) -> None:
        """Wait briefly for unanswered publishes, close subscriptions, then the channel."""
        for sub in list(self._subscriptions):
            await sub.close()
        if self._publisher is not None:
            await self._publisher.close()
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def frames_sent(self) -> int:
        """Publish frames written so far; with ``publishes`` it shows how well they coalesce."""
        return self._publisher.frames_sent if self._publisher is not None else 0

    def _require(self) -> grpc.aio.Channel:
        if self._channel is None:
            raise LockgateError(
                "the client is not connected",
                reason="NOT_CONNECTED",
                hint="use `async with Client(...) as c:` or `await c.connect()`",
            )
        return self._channel

    # -- publish ------------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        data: object,
        *,
        type: str = "lockgate.event",
        source: str | None = None,
        id: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
        datacontenttype: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Publish one event and return its broker-assigned id once it is stored.

        Concurrent calls share frames. Raises the :mod:`clients` error for a rejected event.

        >>> await c.publish("orders.created", {"order": 7}, type="com.shop.order.created")
        """
        self._require()
        publisher = self._publisher
        assert publisher is not None
        if isinstance(data, cloudevent_pb2.CloudEvent):
            event = complete_cloudevent(data, type=type, source=source or self.source)
            nbytes = event.ByteSize()
            batch = publisher.batch_for(subject, nbytes)
            index = len(batch.request.events)
            batch.request.events.append(event)
        else:
            # Build the event straight inside the open frame: no copy, one append.
            event = cloudevent_pb2.CloudEvent()
            nbytes = fill_cloudevent(
                event,
                data,
                type=type,
                source=source or self.source,
                id=id or new_event_id(),
                attributes=attributes,
                datacontenttype=datacontenttype,
            )
            if nbytes > _LARGE:
                nbytes = self._check_size(event)
            batch = publisher.batch_for(subject, nbytes)
            index = len(batch.request.events)
            batch.request.events.append(event)
        if timeout is None:
            await batch.future
        else:
            try:
                await asyncio.wait_for(asyncio.shield(batch.future), timeout)
            except TimeoutError:
                raise RequestTimeout(f"publish to {subject} got no answer in {timeout}s") from None
        return batch.result(index)

    def _check_size(self, event: cloudevent_pb2.CloudEvent) -> int:
        size = event.ByteSize()
        if size > self.max_message_bytes - 1024:
            raise InvalidEvent(
                f"event of {size} bytes exceeds max_message_bytes of {self.max_message_bytes}",
                reason="EVENT_TOO_LARGE",
                hint="send a reference to the data instead, or raise max_message_bytes",
            )
        return size

    async def publish_batch(
        self,
        subject: str,
        items: Sequence[object],
        *,
        type: str = "lockgate.event",
        source: str | None = None,
    ) -> list[PublishResult]:
        """Publish many events as one frame; rejections are returned, not raised.

        >>> results = await c.publish_batch("logs.app", ["a", "b", {"level": "warn"}])
        >>> [r.id for r in results if r.ok]
        """
        self._require()
        publisher = self._publisher
        assert publisher is not None
        src = source or self.source
        events = [to_cloudevent(item, type=type, source=src) for item in items]
        results: list[PublishResult] = []
        start = 0
        while start < len(events):
            # A fresh frame per chunk, so this call's events stay together.
            chunk = events[start : start + 1000]
            batch = publisher.batch_for(subject, publisher.max_frame_bytes + 1)
            batch.request.events.extend(chunk)
            batch.nbytes = publisher.max_frame_bytes  # full: nobody else joins it
            await batch.future
            dups = batch.duplicates
            for i in range(len(chunk)):
                err = batch.errors.get(i)
                if err is not None:
                    results.append(
                        PublishResult(0, error=error_for_reason(err.reason, err.message))
                    )
                else:
                    results.append(PublishResult(batch.ids[i], duplicate=i in dups))
            start += len(chunk)
        return results

    # -- subscribe ----------------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        *,
        queue: str | None = None,
        durable: str | None = None,
        start: StartSpec | None = None,
        max_in_flight: int | None = None,
        ack_wait: float | dt.timedelta | None = None,
        max_deliveries: int | None = None,
        model: type[object] | None = None,
    ) -> Subscription:
        """A subscription, opened on first use (``async for`` or ``async with``).

        ``start`` is "new", "all", a datetime, a timedelta (since now minus it), or an id to
        start after. With ``model`` each ``msg.data`` is validated into that class.

        >>> async for msg in c.subscribe("orders.*", queue="workers"):
        ...     await msg.ack()
        """
        self._require()
        request = broker_pb2.SubscribeOpen(
            pattern=pattern,
            queue_group=queue or "",
            durable=durable or "",
            max_in_flight=max_in_flight or 0,
            max_deliveries=max_deliveries or 0,
        )
        position = to_start_position(start)
        if position is not None:
            request.start.CopyFrom(position)
        if ack_wait is not None:
            request.ack_wait.CopyFrom(to_duration(ack_wait))
        sub: Subscription = Subscription(
            lambda: self._subscribe_stream(None, metadata=self._metadata),
            request,
            self._reply,
            model=model,
            max_reconnect_attempts=self.max_reconnect_attempts,
        )
        self._subscriptions.add(sub)
        return sub

    async def subscription(
        self,
        pattern: str,
        *,
        queue: str | None = None,
        durable: str | None = None,
        start: StartSpec | None = None,
        max_in_flight: int | None = None,
        ack_wait: float | dt.timedelta | None = None,
        max_deliveries: int | None = None,
        model: type[object] | None = None,
    ) -> Subscription:
        """Like :meth:`subscribe`, but returns once the broker confirmed the subscription.

        >>> sub = await c.subscription("orders.>")
        >>> await sub.close()
        """
        sub = self.subscribe(
            pattern,
            queue=queue,
            durable=durable,
            start=start,
            max_in_flight=max_in_flight,
            ack_wait=ack_wait,
            max_deliveries=max_deliveries,
            model=model,
        )
        await sub.start()
        return sub

    async def _reply(self, reply_to: str, data: object, request: Message) -> int:
        return await self.publish(reply_to, data, type=f"{request.type}.reply")

    # -- request/reply ------------------------------------------------------------------------

    async def request(
        self,
        subject: str,
        data: object,
        *,
        timeout: float = 5.0,
        type: str = "lockgate.request",
        model: type[object] | None = None,
    ) -> Event:
        """Publish a request and wait for the first reply.

        Raises :class:`NoResponders` when nobody listens, :class:`RequestTimeout` when nobody
        answers within ``timeout`` seconds.

        >>> reply = await c.request("math.add", [1, 2], timeout=2)
        >>> reply.data
        """
        channel = self._require()
        call: grpc.aio.UnaryUnaryMultiCallable[
            broker_pb2.RequestRequest, broker_pb2.RequestResponse
        ] = channel.unary_unary(
            _BROKER + "Request",
            broker_pb2.RequestRequest.SerializeToString,
            broker_pb2.RequestResponse.FromString,
        )
        req = broker_pb2.RequestRequest(
            subject=subject,
            event=to_cloudevent(data, type=type, source=self.source),
            timeout=to_duration(timeout),
        )
        try:
            response = await call(req, timeout=timeout + 1.0, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise RequestTimeout(
                    f"no reply to the request on {subject} within {timeout}s",
                    hint="check that a responder subscribes to it, or raise the timeout",
                ) from exc
            raise from_rpc_error(exc) from exc
        return Event(response.event, model)

    # -- history ------------------------------------------------------------------------------

    async def get_event(self, id: int, *, model: type[object] | None = None) -> StoredEvent:
        """Read one stored event by its assigned id (``NotFound`` if it is not there)."""
        response = await self._unary(
            _BROKER + "GetEvent", broker_pb2.GetEventRequest(id=id), broker_pb2.GetEventResponse
        )
        return StoredEvent(response.event, model)

    async def query_events(
        self,
        pattern: str = ">",
        *,
        since: dt.datetime | dt.timedelta | None = None,
        until: dt.datetime | None = None,
        after_id: int | None = None,
        page_size: int = 100,
        limit: int | None = None,
        model: type[object] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Stored events matching ``pattern``, oldest first, fetched a page at a time.

        >>> async for ev in c.query_events("orders.>", since=timedelta(hours=1)):
        ...     print(ev.id, ev.data)
        """
        request = broker_pb2.QueryEventsRequest(
            pattern=pattern, after_id=after_id or 0, page_size=page_size
        )
        if since is not None:
            if isinstance(since, dt.timedelta):
                since = dt.datetime.now(dt.UTC) - since
            request.start_time.CopyFrom(to_timestamp(since))
        if until is not None:
            request.end_time.CopyFrom(to_timestamp(until))
        count = 0
        while True:
            page = await self._unary(
                _BROKER + "QueryEvents", request, broker_pb2.QueryEventsResponse
            )
            for stored in page.events:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield StoredEvent(stored, model)
            if not page.next_page_token or not page.events:
                return
            request.page_token = page.next_page_token

    # -- admin --------------------------------------------------------------------------------

    async def list_durables(self) -> list[admin_pb2.DurableInfo]:
        """The org's durable subscriptions."""
        response = await self._unary(
            _ADMIN + "ListDurables", admin_pb2.ListDurablesRequest(), admin_pb2.ListDurablesResponse
        )
        return list(response.durables)

    async def get_durable(self, name: str) -> admin_pb2.GetDurableResponse:
        """One durable subscription and its pending deliveries."""
        return await self._unary(
            _ADMIN + "GetDurable",
            admin_pb2.GetDurableRequest(name=name),
            admin_pb2.GetDurableResponse,
        )

    async def delete_durable(self, name: str) -> None:
        """Remove a durable subscription and its state."""
        await self._unary(
            _ADMIN + "DeleteDurable",
            admin_pb2.DeleteDurableRequest(name=name),
            admin_pb2.DeleteDurableResponse,
        )

    async def list_dead_letters(self, durable: str | None = None) -> list[admin_pb2.DeadLetter]:
        """Dead letters, oldest first, of one durable or of all."""
        request = admin_pb2.ListDeadLettersRequest(durable=durable or "", page_size=1000)
        out: list[admin_pb2.DeadLetter] = []
        while True:
            page = await self._unary(
                _ADMIN + "ListDeadLetters", request, admin_pb2.ListDeadLettersResponse
            )
            out.extend(page.dead_letters)
            if not page.next_page_token or not page.dead_letters:
                return out
            request.page_token = page.next_page_token

    async def redrive(self, durable: str, ids: Sequence[int] | None = None) -> int:
        """Give dead letters back to their durable (all without ``ids``); returns how many."""
        response = await self._unary(
            _ADMIN + "RedriveDeadLetters",
            admin_pb2.RedriveDeadLettersRequest(durable=durable, ids=list(ids or ())),
            admin_pb2.RedriveDeadLettersResponse,
        )
        return response.count

    async def _unary(self, method: str, request: _Message, response_type: type[_R]) -> _R:
        channel = self._require()
        call: grpc.aio.UnaryUnaryMultiCallable[_Message, _R] = channel.unary_unary(
            method, _serialize, response_type.FromString
        )
        try:
            return await call(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc


def _serialize(message: _Message) -> bytes:
    return message.SerializeToString()
