"""The client façade: one channel, one coalescing publish stream, subscriptions, history, admin."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message as _Message

from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.broker.v1.reasons import Reason
from lockgate.clients._admin import Admin
from lockgate.clients._backoff import Backoff
from lockgate.clients._channel import BROKER, Connection, Metadata, bearer
from lockgate.clients._codec import (
    AttributeValue,
    StartSpec,
    default_source,
    to_cloudevent,
    to_duration,
    to_start_position,
    to_timestamp,
)
from lockgate.clients._conversations import Conversations
from lockgate.clients._deadline import wait_again
from lockgate.clients._errors import (
    WRITE_FAILURE_GRACE,
    InvalidEvent,
    LockgateError,
    RequestTimeout,
    Unavailable,
    error_for_reason,
)
from lockgate.clients._keystore import Keystore
from lockgate.clients._message import Event, Message, PublishResult, StoredEvent
from lockgate.clients._publisher import WINDOW as PUBLISH_WINDOW
from lockgate.clients._publisher import Batch, Publisher
from lockgate.clients._pull import PullAcker
from lockgate.clients._requests import REQUEST_BATCHES, Requester
from lockgate.clients._subscription import Subscription
from lockgate.clients._targets import Targets, parse_targets
from lockgate.clients._tls import TLS
from lockgate.clients._wire import EventEncoder, entry_event_size

__all__ = ["Client"]

_R = TypeVar("_R", bound=_Message)
_T = TypeVar("_T")


class Client:
    """A connection to a Lockgate broker.

    Example::

        async with Client("127.0.0.1:50051", api_key="lg_...") as c:  # or a JWT
            event_id = await c.publish("billing.invoices", {"total": 10})
            async for msg in c.subscribe("billing.>", durable="ledger"):
                print(msg.data)
                await msg.ack()
    """

    def __init__(
        self,
        target: str | Sequence[str] = "127.0.0.1:50051",
        api_key: str | None = None,
        *,
        connect_timeout: float | None = 10.0,
        max_message_bytes: int = 1 << 20,
        publish_timeout: float = 30.0,
        max_reconnect_attempts: int | None = None,
        publish_window: int = PUBLISH_WINDOW,
        source: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        tls: TLS | bool | None = None,
        keystore: Keystore | str | os.PathLike[str] | None = None,
    ) -> None:
        """``target`` is ``HOST:PORT``, or ``grpcs://HOST:PORT`` for TLS. ``tls`` is a
        :class:`TLS` (CA file, and a client certificate and key for mTLS), ``True`` for TLS
        with the system's CAs, or None/False for plain text unless the target says
        ``grpcs://``. A failed handshake raises :class:`TLSError` naming the cause.
        ``publish_window`` is how many publish frames may be unanswered at once.

        Several targets (a list, or ``"HOST:PORT,HOST:PORT"``) are brokers to fail over
        between: the client connects to the first that answers, and when the current one
        answers UNAVAILABLE it moves to the next, with backoff; unary calls and publishes
        are retried there (publishes with their event ids, which the broker de-duplicates)
        and subscriptions re-open there (a durable by its name, an ephemeral one from new
        events). See :mod:`clients._targets`.

        ``keystore`` is this agent's :class:`Keystore` (or its file's path, created when
        missing) for the end-to-end encrypted ``client.conversations``."""
        self._targets = Targets(parse_targets(target), self._new_connection)
        self.connect_timeout = connect_timeout
        self.max_message_bytes = max_message_bytes
        self.publish_timeout = publish_timeout
        self.max_reconnect_attempts = max_reconnect_attempts
        if publish_window < 1:
            raise ValueError(f"publish_window is at least 1 frame, not {publish_window}")
        self.publish_window = publish_window
        self.source = source or default_source()
        self._credentials = credentials
        self._tls = TLS() if tls is True else tls or None
        self._metadata = bearer(api_key)
        self._connected = False
        self._streams: dict[tuple[Connection, str], Callable[..., object]] = {}
        self._publisher: Publisher | None = None
        self._requester: Requester | None = None
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._encoder = EventEncoder()
        self._pull_ackers: dict[str, PullAcker] = {}
        self._max_event_bytes = max_message_bytes - 1024
        self._keystore_spec = keystore
        self._conversations: Conversations | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """The broker the client talks to now (the first of several until a failover)."""
        return self._targets.target

    @property
    def targets(self) -> list[str]:
        """Every broker the client may fail over to, in order."""
        return list(self._targets.targets)

    @property
    def failovers(self) -> int:
        """How many times the client moved to another target after a failure."""
        return self._targets.failovers

    def _new_connection(self, target: str) -> Connection:
        return Connection(
            target,
            max_message_bytes=self.max_message_bytes,
            credentials=self._credentials,
            tls=self._tls,
        )

    async def connect(self) -> Client:
        """Open the channel and wait until the broker answers (``connect_timeout``); with
        several targets, the first that answers."""
        if self._connected:
            return self
        try:
            await self._targets.ready(self.connect_timeout)
        except BaseException:
            await self._targets.close()
            raise
        self._connected = True
        open_publish, publish_broken = self._opener(
            BROKER + "Publish",
            _identity,  # frames are encoded by clients._wire
            broker_pb2.PublishResponse.FromString,
        )
        self._publisher = Publisher(
            open_publish,
            publish_timeout=self.publish_timeout,
            max_frame_bytes=min(900 * 1024, self.max_message_bytes - 16 * 1024),
            max_reconnect_attempts=self.max_reconnect_attempts,
            window=self.publish_window,
            on_broken=publish_broken,
        )
        open_requests, _ = self._opener(
            BROKER + "RequestStream",
            broker_pb2.RequestStreamRequest.SerializeToString,
            broker_pb2.RequestStreamResponse.FromString,
            ((REQUEST_BATCHES, "1"),),
        )

        async def let_go() -> None:
            if self._connected:
                await self._targets.current.let_go(WRITE_FAILURE_GRACE)

        self._requester = Requester(open_requests, let_go)
        return self

    def _opener(
        self,
        method: str,
        serializer: Callable[[Any], bytes],
        deserializer: Callable[[bytes], Any],
        metadata: Metadata = (),
    ) -> tuple[Callable[[], Any], Callable[[], None]]:
        """A stream opener on the current target, and the report that the connection of its
        last stream broke (for :meth:`Targets.broken`); ``metadata`` is sent beside the
        credentials."""
        used: list[Connection] = []

        def open_call() -> Any:
            conn = self._require()
            used[:] = [conn]
            key = (conn, method)
            multi = self._streams.get(key)
            if multi is None:
                multi = self._streams[key] = conn.stream_stream(method, serializer, deserializer)
            return multi(None, metadata=(*self._metadata, *metadata))

        def broken() -> None:
            if used:
                self._targets.broken(used[0])

        return open_call, broken

    async def close(self) -> None:
        """Wait briefly for unanswered publishes, close subscriptions, then the channel."""
        for sub in list(self._subscriptions):
            await sub.close()
        for acker in self._pull_ackers.values():
            await acker.flush()
        if self._publisher is not None:
            await self._publisher.close()
        if self._requester is not None:
            await self._requester.close()
        if self._connected:
            self._connected = False
            self._streams.clear()
            await self._targets.close()

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

    @property
    def request_messages_sent(self) -> int:
        """``RequestStream`` messages written so far: requests ready at once share one."""
        return self._requester.messages_sent if self._requester is not None else 0

    @property
    def admin(self) -> Admin:
        """Durables, dead letters and policies (the ``admin`` role), as nats.py's
        ``jetstream()`` is a view on its connection.

        >>> for d in await c.admin.list_durables():
        ...     print(d.name, d.pending_count)
        """
        return Admin(self._unary)

    @property
    def conversations(self) -> Conversations:
        """Direct, group and broadcast conversations, end-to-end encrypted with the keys of
        ``keystore=`` (:mod:`clients._conversations`).

        >>> conv = await c.conversations.create("group", ["bob", "cy"])
        >>> await c.conversations.send(conv.id, {"text": "hi"})
        """
        if self._conversations is None:
            spec = self._keystore_spec
            ks = spec if spec is None or isinstance(spec, Keystore) else Keystore.open(spec)
            self._conversations = Conversations(self, ks)
        return self._conversations

    def _require(self) -> Connection:
        if not self._connected:
            raise LockgateError(
                "the client is not connected",
                reason=Reason.NOT_CONNECTED,
                hint="use `async with Client(...) as c:` or `await c.connect()`",
            )
        return self._targets.current

    async def _failover(self, call: Callable[[Connection], Awaitable[_T]]) -> _T:
        """``call`` on the current target; with several targets, UNAVAILABLE moves to the
        next one and ``call`` is tried again there, with backoff, for up to
        ``connect_timeout`` (10 s without one). A single target fails as before (gRPC
        itself retries the idempotent calls, see clients._channel)."""
        backoff: Backoff | None = None
        deadline = 0.0
        while True:
            conn = self._require()
            try:
                return await call(conn)
            except Unavailable:
                if len(self._targets.targets) < 2:
                    raise
                loop = asyncio.get_running_loop()
                if backoff is None:
                    backoff = Backoff()
                    deadline = loop.time() + (self.connect_timeout or 10.0)
                delay = backoff.next_delay()
                if loop.time() + delay > deadline:
                    raise
                self._targets.broken(conn)
                await asyncio.sleep(delay)

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
        publisher = self._publisher
        if publisher is None or not self._connected:
            self._require()
            assert publisher is not None
        event = self._encoder.entry(
            data, type, source or self.source, id, attributes, datacontenttype
        )
        if len(event) > self._max_event_bytes:
            self._check_size(event)
        # Fresh when the encoder made its id (no caller id, not a caller's CloudEvent).
        fresh = not id and not isinstance(data, cloudevent_pb2.CloudEvent)
        if timeout is None or timeout == math.inf:
            batch, index = publisher.append(subject, event, fresh=fresh)
            try:
                await batch.future
            except asyncio.CancelledError:
                await batch.rewait()
        else:
            if not timeout >= 0:  # NaN: no deadline could ever pass; negative: one did
                raise ValueError(
                    f"a publish timeout is a number of seconds, not NaN or negative: {timeout}"
                )
            batch, index = publisher.append(subject, event, fresh=fresh)
            # Not asyncio.wait_for: a task and a timer per call were two thirds of the
            # publish's CPU. A deadline is shared by a frame's publishers (clients._deadline).
            deadline = publisher.deadline(batch, timeout)
            try:
                await deadline.future
            except asyncio.CancelledError:
                await wait_again(deadline)
            if deadline.expired:  # the answer, if it comes, is ignored
                raise RequestTimeout(f"publish to {subject} got no answer in {timeout}s")
        return batch.result(index)

    def _too_large(self, size: int) -> InvalidEvent:
        return InvalidEvent(
            f"event of {size} bytes exceeds max_message_bytes of {self.max_message_bytes} bytes",
            reason=Reason.EVENT_TOO_LARGE,
            hint="send a reference to the data instead, or raise max_message_bytes",
        )

    def _check_size(self, event: bytes) -> None:
        size = entry_event_size(event)
        if size > self._max_event_bytes:
            raise self._too_large(size)

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
        return await self._batch_results(await self._queue_batch(subject, items, type, source))

    async def publish_batch_async(
        self,
        subject: str,
        items: Sequence[object],
        *,
        type: str = "lockgate.event",
        source: str | None = None,
    ) -> asyncio.Future[list[PublishResult]]:
        """Queue a batch and return a future of its results without waiting for the broker.

        Pipelined publishing from one task, as JetStream's ``publish_async``: up to
        ``publish_window`` frames are unanswered at once, and this waits only while the
        window is full (back-pressure). Batches of one subject are stored in call order.
        Await the futures, or :meth:`flush`, to see the outcomes.

        >>> futures = [await c.publish_batch_async("logs.app", chunk) for chunk in chunks]
        >>> await c.flush()
        >>> failed = [r for f in futures for r in f.result() if not r.ok]
        """
        chunks = await self._queue_batch(subject, items, type, source)
        return asyncio.ensure_future(self._batch_results(chunks))

    async def flush(self) -> None:
        """Wait until every publish queued so far is answered by the broker (or failed)."""
        if self._publisher is not None:
            await self._publisher.drain()

    async def _queue_batch(
        self, subject: str, items: Sequence[object], type: str, source: str | None
    ) -> list[Batch]:
        self._require()
        publisher = self._publisher
        assert publisher is not None
        src = source or self.source
        events = self._encoder.entries(items, type, src)
        limit = self._max_event_bytes
        for raw in events:
            if len(raw) > limit:
                self._check_size(raw)
        await publisher.room()
        # Frames of their own, so this call's events stay together; all queued before
        # awaiting any.
        fresh = not any(isinstance(item, cloudevent_pb2.CloudEvent) for item in items)
        return publisher.queue(subject, events, fresh=fresh)

    @staticmethod
    async def _batch_results(chunks: list[Batch]) -> list[PublishResult]:
        results: list[PublishResult] = []
        for batch in chunks:
            try:
                await batch.future
            except asyncio.CancelledError:
                await batch.rewait()
            dups = batch.duplicates
            errors = batch.errors
            if not errors and not dups:
                results += map(PublishResult, batch.ids)
                continue
            for i in range(len(batch)):
                err = errors.get(i)
                if err is not None:
                    results.append(
                        PublishResult(0, error=error_for_reason(err.reason, err.message))
                    )
                else:
                    results.append(PublishResult(batch.ids[i], duplicate=i in dups))
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
        open_call, broken = self._opener(
            BROKER + "Subscribe",
            broker_pb2.SubscribeRequest.SerializeToString,
            broker_pb2.SubscribeResponse.FromString,
        )
        sub: Subscription = Subscription(
            open_call,
            request,
            self._reply,
            model=model,
            max_reconnect_attempts=self.max_reconnect_attempts,
            on_broken=broken,
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
        if not 0 < timeout < math.inf:  # NaN too: the broker could never be told it
            raise ValueError(f"a request timeout is a positive number of seconds, not {timeout}")
        self._require()
        requester = self._requester
        assert requester is not None
        event = to_cloudevent(data, type=type, source=self.source)

        async def send(conn: Connection) -> cloudevent_pb2.CloudEvent:
            # One RequestStream carries every request of the client (clients._requests).
            return await requester.request(subject, event, timeout)

        return Event(await self._failover(send), model)

    # -- history ------------------------------------------------------------------------------

    async def get_event(self, id: int, *, model: type[object] | None = None) -> StoredEvent:
        """Read one stored event by its assigned id (``NotFound`` if it is not there)."""
        response = await self._unary(
            BROKER + "GetEvent", broker_pb2.GetEventRequest(id=id), broker_pb2.GetEventResponse
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
        cloudevent_id: str = "",
    ) -> AsyncIterator[StoredEvent]:
        """Stored events matching ``pattern``, oldest first, fetched a page at a time;
        ``cloudevent_id``: only those with that CloudEvents id (a producer's UUID).

        >>> async for ev in c.query_events("orders.>", since=timedelta(hours=1)):
        ...     print(ev.id, ev.data)
        """
        request = broker_pb2.QueryEventsRequest(
            pattern=pattern,
            after_id=after_id or 0,
            page_size=page_size,
            cloudevent_id=cloudevent_id,
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
                BROKER + "QueryEvents", request, broker_pb2.QueryEventsResponse
            )
            for stored in page.events:
                if limit is not None and count >= limit:
                    return
                count += 1
                yield StoredEvent(stored, model)
            # A wildcard page over a large log may be short, even empty, with a cursor:
            # only a page without one is the last.
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    # -- polling ------------------------------------------------------------------------------

    async def fetch(
        self,
        durable: str,
        *,
        max_events: int = 100,
        wait: float | dt.timedelta | None = None,
        pattern: str | None = None,
        start: StartSpec | None = None,
        model: type[object] | None = None,
    ) -> list[Message]:
        """Pull up to ``max_events`` deliveries of a durable, waiting up to ``wait`` for the first.

        With ``pattern`` the durable is created when missing. Fetched messages are pending until
        acked (``await msg.ack()``, sent in batches) and redelivered after the ack wait otherwise.

        >>> for msg in await c.fetch("billing", pattern="orders.>", wait=5):
        ...     await msg.ack()
        """
        request = broker_pb2.FetchRequest(
            durable=durable, max_events=max_events, pattern=pattern or ""
        )
        if wait is not None:
            request.wait.CopyFrom(to_duration(wait))
        position = to_start_position(start)
        if position is not None:
            request.start.CopyFrom(position)
        seconds = wait.total_seconds() if isinstance(wait, dt.timedelta) else wait or 0.0
        response = await self._unary(
            BROKER + "Fetch", request, broker_pb2.FetchResponse, timeout=seconds + 30.0
        )
        acker = self._pull_ackers.get(durable)
        if acker is None:
            acker = self._pull_ackers[durable] = PullAcker(durable, self.acknowledge, self._reply)
        return [Message(acker, d, model) for d in response.deliveries]

    async def acknowledge(
        self,
        durable: str,
        ack: Sequence[int] = (),
        nack: Sequence[int] = (),
        delay: float | dt.timedelta | None = None,
    ) -> None:
        """Ack and nack deliveries of a durable by id, and wait for the broker's answer."""
        request = broker_pb2.AcknowledgeRequest(
            durable=durable, ack_ids=list(ack), nack_ids=list(nack)
        )
        if delay:
            request.nack_delay.CopyFrom(to_duration(delay))
        await self._unary(BROKER + "Acknowledge", request, broker_pb2.AcknowledgeResponse)

    async def _unary(
        self,
        method: str,
        request: _Message,
        response_type: type[_R],
        *,
        timeout: float | None = None,
    ) -> _R:
        return await self._failover(
            lambda conn: conn.unary(
                method, request, response_type, metadata=self._metadata, timeout=timeout
            )
        )


def _identity(frame: bytes) -> bytes:
    return frame
