"""Request/reply on one long-lived ``RequestStream``: requests told apart by id, answered as
their replies come, no call set up per request (the unary ``Request`` costs several times a
stream message in grpcio)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Protocol

import grpc

from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.clients._errors import (
    WRITE_FAILURE_GRACE,
    RequestTimeout,
    Unavailable,
    error_for_reason,
    from_rpc_error,
)

__all__ = ["REQUEST_BATCHES", "RequestCall", "Requester"]

REQUEST_BATCHES = "lockgate-request-batches"
"""Metadata key (see ``RequestStream`` in protos/broker/v1/broker.proto): in the broker's
initial metadata, it reads several requests per message; in ours, we read several answers."""
_BATCH_BYTES = 256 << 10  # well under any message limit; a larger request goes alone


def _expire(fut: asyncio.Future[cloudevent_pb2.CloudEvent], subject: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(
            RequestTimeout(
                f"no reply to the request on {subject} within {timeout}s",
                hint="check that a responder subscribes to it, or raise the timeout",
            )
        )


class RequestCall(Protocol):
    """The part of a ``RequestStream`` call the requester uses (a ``grpc.aio`` call)."""

    async def write(self, request: broker_pb2.RequestStreamRequest) -> None: ...
    async def initial_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...
    def __aiter__(self) -> AsyncIterator[broker_pb2.RequestStreamResponse]: ...
    def cancel(self) -> bool: ...


class Requester:
    """Owns the stream and the requests waiting on it; a broken stream fails the requests it
    carried (a request is not resent: its responder may already have acted) and the next
    request opens a new one."""

    def __init__(
        self,
        open_call: Callable[[], RequestCall],
        let_go: Callable[[], Coroutine[None, None, None]] | None = None,
    ) -> None:
        """``let_go`` waits until the channel has given up a connection that broke
        (:meth:`Connection.let_go`): the next stream must not open on the dead one."""
        self._open_call = open_call
        self._let_go = let_go
        self._letting_go: asyncio.Task[None] | None = None
        self._call: RequestCall | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        # grpc.aio takes one write at a time on a stream: requests queue for the writer task.
        self._outgoing: asyncio.Queue[broker_pb2.RequestStreamRequest] = asyncio.Queue()
        # request_id -> the stream it went on and its caller's future
        self._waiting: dict[int, tuple[RequestCall, asyncio.Future[cloudevent_pb2.CloudEvent]]] = {}
        self._ids = itertools.count(1)
        self.messages_sent = 0
        self._batching: RequestCall | None = None
        """The stream whose broker announced batches (then requests ready at once share a
        message: one stream writes one message at a time, each a wait on grpc's thread)."""

    async def request(
        self, subject: str, event: cloudevent_pb2.CloudEvent, timeout: float
    ) -> cloudevent_pb2.CloudEvent:
        """The first reply to ``event`` on ``subject``; raises the request's refusal."""
        letting_go = self._letting_go
        if letting_go is not None:  # the last stream's connection broke
            await letting_go
            if self._letting_go is letting_go:
                self._letting_go = None
        req = broker_pb2.RequestRequest(subject=subject, event=event)
        req.timeout.FromNanoseconds(round(timeout * 1e9))  # before any state: it may raise
        call = self._stream()
        rid = next(self._ids)
        fut: asyncio.Future[cloudevent_pb2.CloudEvent] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (call, fut)
        try:
            if self._call is call:
                self._outgoing.put_nowait(
                    broker_pb2.RequestStreamRequest(request_id=rid, request=req)
                )
            else:  # broken between opening and now
                fut.set_exception(Unavailable("the broker ended the request stream"))
            # The broker answers REQUEST_TIMEOUT itself at ``timeout``; the margin covers a
            # broker that cannot answer at all. A timer on the future itself, not wait_for
            # and shield: those cost two futures, a task wake-up and callbacks per request.
            expiry = asyncio.get_running_loop().call_later(
                timeout + 1.0, _expire, fut, subject, timeout
            )
            try:
                return await fut
            finally:
                expiry.cancel()
        finally:
            self._waiting.pop(rid, None)

    def _stream(self) -> RequestCall:
        if self._call is None:
            call = self._call = self._open_call()
            loop = asyncio.get_running_loop()
            self._outgoing = asyncio.Queue()
            self._reader = loop.create_task(self._read(call))
            self._writer = loop.create_task(self._write(call, self._outgoing))
        return self._call

    async def _write(
        self, call: RequestCall, outgoing: asyncio.Queue[broker_pb2.RequestStreamRequest]
    ) -> None:
        ahead: list[broker_pb2.RequestStreamRequest] = []
        try:
            while True:
                first = ahead.pop() if ahead else await outgoing.get()
                if self._batching is call:
                    size = first.ByteSize()
                    while not outgoing.empty():  # queued while the last write waited
                        after = outgoing.get_nowait()
                        size += after.ByteSize()
                        if size > _BATCH_BYTES:
                            ahead.append(after)
                            break
                        first.more.append(after)
                await call.write(first)
                self.messages_sent += 1
        except (grpc.RpcError, asyncio.InvalidStateError) as exc:
            # A write fails once the call has ended: the reader holds the status the broker
            # ended it with, so it speaks first (the broker reads a refused stream's first
            # message before ending it, so the write is not cut short: broker.rpc.refuse_stream).
            reader = self._reader
            if reader is not None and not reader.done():
                await asyncio.wait({reader}, timeout=WRITE_FAILURE_GRACE)
            self._broken(call, exc)

    async def _read(self, call: RequestCall) -> None:
        try:
            # A broker that reads batches says so at once; an older one sends its initial
            # metadata with the first answer (the writer sends one request a message until
            # then, so this never waits on the writer).
            if any(k == REQUEST_BATCHES for k, _ in await call.initial_metadata() or ()):
                self._batching = call
            async for message in call:
                for answer in (message, *message.more) if message.more else (message,):
                    self._answer(answer)
            self._broken(call, None)
        except grpc.RpcError as exc:
            self._broken(call, exc)

    def _answer(self, answer: broker_pb2.RequestStreamResponse) -> None:
        waiting = self._waiting.get(answer.request_id)
        if waiting is None or waiting[1].done():
            return  # its caller gave up
        fut = waiting[1]
        if answer.HasField("error"):
            err = answer.error
            fut.set_exception(error_for_reason(err.reason, err.message))
        else:
            fut.set_result(answer.event)

    def _broken(self, call: RequestCall, exc: BaseException | None) -> None:
        """Fails every waiting request with why the stream ended; the next opens a new one."""
        if self._call is call:
            self._call = None
        call.cancel()
        if isinstance(exc, grpc.RpcError):
            error = from_rpc_error(exc)
            lost = isinstance(error, Unavailable)
            if lost and self._let_go is not None and self._letting_go is None:
                self._letting_go = asyncio.get_running_loop().create_task(self._let_go())
        else:
            error = Unavailable("the broker ended the request stream")
        for on, fut in self._waiting.values():
            if on is call and not fut.done():
                fut.set_exception(error)
                fut.exception()  # its caller may have gone: never "never retrieved"

    async def close(self) -> None:
        call, tasks = self._call, (self._reader, self._writer, self._letting_go)
        self._call = self._reader = self._writer = self._letting_go = None
        if call is not None:
            call.cancel()
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                    await task
