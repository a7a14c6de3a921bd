"""A live subscription: one ``Subscribe`` stream, re-opened when it breaks, with batched acks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import repeat
from types import TracebackType
from typing import Protocol

import grpc

from lockgate.broker.v1 import broker_pb2
from lockgate.broker.v1.reasons import Reason
from lockgate.clients._backoff import Backoff
from lockgate.clients._codec import to_duration
from lockgate.clients._errors import LockgateError, Unavailable, from_rpc_error
from lockgate.clients._message import Message, MessageBatch
from lockgate.clients._tracing import receive_span

__all__ = ["Subscription"]

log = logging.getLogger("lockgate.client")


class SubscribeCall(Protocol):
    """The part of a ``Subscribe`` stream call a subscription uses (a ``grpc.aio`` call)."""

    async def write(self, request: broker_pb2.SubscribeRequest) -> None: ...
    async def read(self) -> object: ...  # a SubscribeResponse, or grpc.aio.EOF
    def cancel(self) -> bool: ...
    def done(self) -> bool: ...


RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL})


class Subscription:
    """An async iterator of :class:`Message`, live once opened; close it when done.
    :meth:`batches` iterates by batch instead.

    Example::

        async with client.subscribe("orders.>", durable="billing") as sub:
            async for msg in sub:
                print(msg.subject, msg.data)
                await msg.ack()

        sub = await client.subscription("orders.>")   # opened: the broker confirmed it
        msg = await anext(sub)
        await sub.close()
    """

    def __init__(
        self,
        open_call: Callable[[], SubscribeCall],
        request: broker_pb2.SubscribeOpen,
        publish: Callable[[str, object, Message], Awaitable[int]],
        *,
        model: type[object] | None = None,
        max_reconnect_attempts: int | None = None,
        on_broken: Callable[[], None] | None = None,
    ) -> None:
        """``on_broken`` is told when the stream broke in a way a retry may cure, before
        it is re-opened (the client fails over to another target then)."""
        self._open_call = open_call
        self._on_broken = on_broken
        self._request = request
        self._publish = publish
        self._model = model
        self.max_reconnect_attempts = max_reconnect_attempts
        self.durable = bool(request.durable)
        self.name = request.durable
        """The durable name, or the name the broker gave an ephemeral subscription."""
        self.last_id = 0
        """The highest id stored when the subscription (last) opened."""
        self.reconnects = 0
        self._buffer: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._call: SubscribeCall | None = None
        self._ack_ids: list[int] = []
        self._nacks: list[broker_pb2.Nack] = []
        self._outbox = asyncio.Event()

    # -- opening and closing ------------------------------------------------------------------

    async def start(self) -> Subscription:
        """Open the stream and wait for the broker's confirmation (idempotent)."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._ready = loop.create_future()
            self._task = loop.create_task(self._run(), name=f"lockgate-sub-{self._request.pattern}")
        assert self._ready is not None
        await asyncio.shield(self._ready)
        return self

    async def close(self) -> None:
        """Send the acks still queued, then end the stream. Iteration stops."""
        if self._closed:
            return
        call = self._call
        if call is not None and (self._ack_ids or self._nacks) and not call.done():
            with contextlib.suppress(grpc.RpcError, TimeoutError, OSError):
                await asyncio.wait_for(self._flush(call), 2.0)
        self._closed = True
        if call is not None:
            call.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._wake()

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- iteration ----------------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        buffer = self._buffer
        if not buffer:
            await self._until_buffered()
        return buffer.popleft()

    async def batches(self) -> AsyncIterator[MessageBatch]:
        """Every message received and not yet taken, a batch at a time (never empty).

        Cheaper than one ``async for`` step per message when a consumer handles many at
        once; :meth:`MessageBatch.ack` acks them all in one frame.

        Example::

            async for batch in sub.batches():
                store([m.data for m in batch])
                await batch.ack()
        """
        buffer = self._buffer
        while True:
            try:
                if not buffer:
                    await self._until_buffered()
            except StopAsyncIteration:
                return
            batch = MessageBatch(self, buffer)
            buffer.clear()
            yield batch

    async def _until_buffered(self) -> None:
        """Returns once a message is buffered; raises the subscription's error, or
        StopAsyncIteration once it is closed."""
        if self._task is None:
            await self.start()
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def pending(self) -> int:
        """Messages received and not yet taken by the iterator."""
        return len(self._buffer)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- acks (called by Message) -------------------------------------------------------------

    def _ack(self, id: int) -> None:
        if self.durable:
            self._ack_ids.append(id)
            self._outbox.set()

    def _ack_many(self, ids: list[int]) -> None:
        if self.durable and ids:
            self._ack_ids.extend(ids)
            self._outbox.set()

    def _nack(self, id: int, delay: float | dt.timedelta | None) -> None:
        self._nack_many([id], delay)

    def _nack_many(self, ids: list[int], delay: float | dt.timedelta | None) -> None:
        if self.durable and ids:
            nack = broker_pb2.Nack(ids=ids)
            if delay:
                nack.delay.CopyFrom(to_duration(delay))
            self._nacks.append(nack)
            self._outbox.set()

    async def _respond(self, reply_to: str, data: object, request: Message) -> int:
        return await self._publish(reply_to, data, request)

    async def _flush(self, call: SubscribeCall) -> None:
        if self._ack_ids:
            ids, self._ack_ids = self._ack_ids, []
            try:
                await call.write(broker_pb2.SubscribeRequest(ack=broker_pb2.Ack(ids=ids)))
            except BaseException:
                # Keep them for the next stream: a durable takes acks from any of its streams.
                self._ack_ids[:0] = ids
                raise
        while self._nacks:
            await call.write(broker_pb2.SubscribeRequest(nack=self._nacks[0]))
            self._nacks.pop(0)

    async def _write_acks(self, call: SubscribeCall) -> None:
        while True:
            await self._outbox.wait()
            self._outbox.clear()
            await asyncio.sleep(0)  # gather every ack of this loop turn into one frame
            await self._flush(call)

    # -- the stream ---------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff()
        while not self._closed:
            call = self._call = self._open_call()
            writer: asyncio.Task[None] | None = None
            got_deliveries = False
            try:
                await call.write(broker_pb2.SubscribeRequest(open=self._request))
                first = await call.read()
                if not isinstance(first, broker_pb2.SubscribeResponse):  # grpc.aio.EOF
                    raise Unavailable("the broker ended the subscription before confirming it")
                if first.HasField("subscribed"):
                    self.name = first.subscribed.name
                    self.last_id = first.subscribed.last_id
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
                if self._ack_ids or self._nacks:
                    self._outbox.set()
                writer = asyncio.get_running_loop().create_task(self._write_acks(call))
                self._receive(first)
                while True:
                    response = await call.read()
                    if not isinstance(response, broker_pb2.SubscribeResponse):  # grpc.aio.EOF
                        break
                    got_deliveries = True
                    self._receive(response)
                error: BaseException = Unavailable("the broker ended the subscription stream")
            except asyncio.CancelledError:
                call.cancel()
                raise
            except (grpc.RpcError, LockgateError, OSError) as exc:
                error = exc
            except Exception as exc:  # a bug here must end iteration loudly, not hang it
                log.exception("client.subscription.failed: %s", self.name)
                self._fail(exc)
                return
            finally:
                if writer is not None:
                    writer.cancel()
            call.cancel()
            if self._closed:
                return
            if got_deliveries:
                backoff.reset()
            delay = backoff.next_delay()
            limit = self.max_reconnect_attempts
            if self.durable and _reason(error) == Reason.NOT_PENDING:
                # The broker ended the stream over an ack of an id no longer pending (acked
                # twice, e.g. after a redelivery). Acks are idempotent to us: drop the queued
                # ones (unacked events come back after ack_wait) and carry on.
                log.info("client.subscription.reopening: %s: %s", self.name, error)
                self._ack_ids.clear()
                self._nacks.clear()
            elif not _retryable(error) or (limit is not None and backoff.failures > limit):
                self._fail(error)
                return
            self.reconnects += 1
            if self._on_broken is not None and _reason(error) != Reason.NOT_PENDING:
                self._on_broken()
            if not self.durable:
                # An ephemeral subscription cannot resume: it continues with new events.
                self._request.start.CopyFrom(
                    broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_NEW)
                )
            log.info(
                "client.subscription.reconnecting: %s broke (%s); again in %.2fs",
                self.name,
                error,
                delay,
            )
            await asyncio.sleep(delay)

    def _receive(self, response: broker_pb2.SubscribeResponse) -> None:
        deliveries = response.deliveries
        if deliveries:
            receive_span(deliveries, self.name if self.durable else "")
            self._buffer.extend(map(Message, repeat(self), deliveries, repeat(self._model)))
            self._wake()

    def _fail(self, error: BaseException) -> None:
        exc = from_rpc_error(error) if isinstance(error, grpc.RpcError) else error
        self._error = exc
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()
        self._wake()


def _reason(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError):
        return from_rpc_error(error).reason
    return error.reason if isinstance(error, LockgateError) else ""


def _retryable(error: BaseException) -> bool:
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in RETRYABLE
    return isinstance(error, Unavailable | OSError | asyncio.InvalidStateError)
