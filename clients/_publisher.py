"""Publish coalescing: many concurrent ``publish()`` calls, few frames, one long-lived stream.

``publish()`` appends its event to the open batch of its subject and wakes one flusher task. The
flusher sends every open batch as one ``PublishRequest`` (at most ``MAX_EVENTS`` events or
``MAX_FRAME_BYTES``) on a bidirectional ``Publish`` stream, with an incrementing ``batch_id``; a
reader task resolves each batch when its ``PublishResponse`` comes back. All publishers of a batch
await one shared future and read their result by position, so the per-event work is one append.

At most ``window`` frames are unanswered at a time (as JetStream's ``publish_async`` bounds its
pending acks): while the window is full the flusher waits for answers, and events published
meanwhile gather in the open batches, so a busy stream sends fewer, larger frames. Frames go out
in the order their first event was published and the broker answers them in order, so the
events of one subject are stored in publish order. :meth:`Publisher.room` is the back-pressure
for callers that queue whole batches without awaiting them (``Client.publish_batch_async``).

When the stream breaks with UNAVAILABLE, the stream is re-opened and every unanswered batch is sent
again with the same CloudEvent ``id`` and ``source``: the broker's dedup window turns the resend
into ``duplicate`` results, giving at-least-once publishing without duplicates in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import grpc

from lockgate.broker.v1 import broker_pb2
from lockgate.broker.v1.reasons import Reason
from lockgate.clients._backoff import Backoff
from lockgate.clients._deadline import Deadline, deadline_key, wait_again
from lockgate.clients._errors import (
    WRITE_FAILURE_GRACE,
    LockgateError,
    Unavailable,
    error_for_reason,
    from_rpc_error,
)
from lockgate.clients._wire import encode_publish_frame

__all__ = ["Batch", "Publisher"]

log = logging.getLogger("lockgate.client")

MAX_EVENTS = 1000
MAX_FRAME_BYTES = 900 * 1024
WINDOW = 16
"""Frames unanswered on the stream at most (the broker itself pipelines up to 64 per stream)."""
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL})


class PublishCall(Protocol):
    """The part of a ``Publish`` stream call the publisher uses (a ``grpc.aio`` call).

    Frames are written pre-encoded (see :mod:`clients._wire`), so requests are bytes.
    """

    async def write(self, request: bytes) -> None: ...
    def __aiter__(self) -> AsyncIterator[broker_pb2.PublishResponse]: ...
    def cancel(self) -> bool: ...


class Batch:
    """The events of one frame, then the broker's answer to it."""

    __slots__ = (
        "deadline",
        "deadlines",
        "duplicates",
        "error",
        "errors",
        "events",
        "fresh",
        "future",
        "ids",
        "nbytes",
        "settled",
        "subject",
    )

    def __init__(self, subject: str, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.subject = subject
        self.events: list[bytes] = []  # the events' PublishRequest entries (clients._wire)
        # Every id generated here and the frame not sent yet: the frame says so (the
        # broker's dedup window then need not look the ids up); a resend never does.
        self.fresh = True
        # All publishers of the batch await this one future (a future per event costs ~40%
        # of the publish path). A cancelled publisher cancels it for everybody; the others
        # notice and wait again (see rewait), so the happy path pays nothing for this.
        self.future: asyncio.Future[None] = loop.create_future()
        self.settled = False
        self.error: BaseException | None = None
        self.nbytes = 0
        self.deadline = deadline
        self.ids: Sequence[int] = ()
        self.duplicates: frozenset[int] = frozenset()
        self.errors: dict[int, broker_pb2.PublishError] = {}
        self.deadlines: dict[int, Deadline] | None = None  # publishers' timeouts, by millisecond

    def __len__(self) -> int:
        return len(self.events)

    def resolve(self, response: broker_pb2.PublishResponse) -> None:
        self.ids = response.ids
        if response.duplicate_indexes:
            self.duplicates = frozenset(response.duplicate_indexes)
        if response.errors:
            self.errors = {e.index: e for e in response.errors}
        self.settled = True
        if not self.future.done():
            self.future.set_result(None)
        if self.deadlines:
            self._settle_deadlines()

    def fail(self, exc: BaseException) -> None:
        if self.settled:
            return
        self.settled = True
        self.error = exc
        if not self.future.done():
            self.future.set_exception(exc)
            self.future.exception()  # mark retrieved: nobody may be waiting any more
        if self.deadlines:
            self._settle_deadlines()

    def _settle_deadlines(self) -> None:
        assert self.deadlines is not None
        for deadline in self.deadlines.values():
            deadline.settle()

    def over(self) -> bool:
        return self.settled

    async def rewait(self) -> None:
        """After ``await self.future`` raised CancelledError: re-raise it if this task was
        cancelled, else another publisher was, so wait for the broker's answer again."""
        await wait_again(self)
        if self.error is not None:
            raise self.error

    def result(self, index: int) -> int:
        """The assigned id of event ``index``, or raise its rejection."""
        if self.error is not None:
            raise self.error
        if self.errors:
            err = self.errors.get(index)
            if err is not None:
                raise error_for_reason(err.reason, err.message)
        try:
            return self.ids[index]
        except IndexError:
            raise LockgateError(
                f"the broker answered {len(self.ids)} ids for a batch of {len(self)} events",
                reason=Reason.PROTOCOL_ERROR,
            ) from None


class Publisher:
    """Owns the ``Publish`` stream, the open batches and the unanswered ones."""

    def __init__(
        self,
        open_call: Callable[[], PublishCall],
        *,
        publish_timeout: float = 30.0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_reconnect_attempts: int | None = None,
        window: int = WINDOW,
        on_broken: Callable[[], None] | None = None,
    ) -> None:
        """``on_broken`` is told when the stream broke in a way a retry may cure
        (UNAVAILABLE), before the retry: the client fails over to another target then."""
        if window < 1:
            raise ValueError(f"the publish window is at least 1 frame, not {window}")
        self._open_call = open_call
        self._on_broken = on_broken
        self.window = window
        self.publish_timeout = publish_timeout
        self.max_frame_bytes = max_frame_bytes
        self.max_reconnect_attempts = max_reconnect_attempts
        self._loop = asyncio.get_running_loop()
        self._open: dict[str, Batch] = {}  # subject -> batch still taking events
        self._queue: list[Batch] = []  # batches to send, in order
        self._inflight: dict[int, Batch] = {}  # batch_id -> sent, unanswered
        self._next_batch_id = 1
        self._wake = asyncio.Event()
        self._answers = asyncio.Event()  # set whenever a frame is answered or failed
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.frames_sent = 0
        """Frames written on the stream (resends included): a measure of coalescing."""
        self.reconnects = 0
        self._answered = 0

    # -- the hot path -------------------------------------------------------------------------

    def append(self, subject: str, entry: bytes, *, fresh: bool = False) -> tuple[Batch, int]:
        """Add an event's entry to the open batch of ``subject`` (a new one when it is full):
        the batch and the event's position in it. ``fresh``: its id was generated by the
        client for it (not the caller's)."""
        if self._closed:
            raise LockgateError("the client is closed", reason=Reason.CLOSED)
        batch = self._open.get(subject)
        nbytes = len(entry)
        if (
            batch is None
            or len(batch.events) >= MAX_EVENTS
            or batch.nbytes + nbytes > self.max_frame_bytes
        ):
            batch = self._open[subject] = self._enqueue(subject)
        batch.nbytes += nbytes
        if not fresh:
            batch.fresh = False
        events = batch.events
        events.append(entry)
        return batch, len(events) - 1

    def queue(self, subject: str, entries: list[bytes], *, fresh: bool = False) -> list[Batch]:
        """Queue ``entries`` as frames of their own (``MAX_EVENTS`` and ``max_frame_bytes`` at
        most), after everything queued so far: later publishes of ``subject`` go to a frame
        behind them, so the subject's order is the call order. ``fresh``: as for
        :meth:`append`, for every entry."""
        if self._closed:
            raise LockgateError("the client is closed", reason=Reason.CLOSED)
        self._open.pop(subject, None)
        limit = self.max_frame_bytes
        total = sum(map(len, entries))
        if len(entries) <= MAX_EVENTS and total <= limit:
            parts = [(entries, total)] if entries else []
        else:
            parts = []
            start = size = 0
            for end, raw in enumerate(entries):
                if end - start >= MAX_EVENTS or (size + len(raw) > limit and end > start):
                    parts.append((entries[start:end], size))
                    start = end
                    size = 0
                size += len(raw)
            parts.append((entries[start:], size))
        batches = []
        for events, nbytes in parts:
            batch = self._enqueue(subject)
            batch.events = events
            batch.nbytes = nbytes
            batch.fresh = fresh
            batches.append(batch)
        return batches

    def _enqueue(self, subject: str) -> Batch:
        batch = Batch(subject, self._loop, self._loop.time() + self.publish_timeout)
        self._queue.append(batch)
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name="lockgate-publisher")
        self._wake.set()
        return batch

    def deadline(self, batch: Batch, timeout: float) -> Deadline:
        """The deadline ``timeout`` seconds from now for a publisher waiting on ``batch``:
        shared by the batch's publishers whose deadlines fall in the same millisecond."""
        key = deadline_key(self._loop.time() + timeout)
        deadlines = batch.deadlines
        if deadlines is None:
            deadlines = batch.deadlines = {}
        deadline = deadlines.get(key)
        if deadline is None:
            deadline = deadlines[key] = Deadline(self._loop, key)
            if batch.settled:  # not a batch append returns, but then no timer may outlive it
                deadline.settle()
        return deadline

    def backlog(self) -> int:
        """Frames queued or unanswered."""
        return len(self._queue) + len(self._inflight)

    async def room(self) -> None:
        """Returns once fewer than ``window`` frames are queued or unanswered."""
        while self.backlog() >= self.window and not self._closed:
            self._answers.clear()
            await self._answers.wait()

    async def drain(self) -> None:
        """Returns once every frame queued so far is answered (or failed)."""
        pending = [b.future for b in [*self._queue, *self._inflight.values()]]
        if pending:
            await asyncio.wait(pending)

    # -- the stream ---------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff()
        while not self._closed:
            await self._wake.wait()
            if not self._queue and not self._inflight:
                self._wake.clear()
                continue
            answered_before = self._answered
            call = self._open_call()
            reader = self._loop.create_task(self._read(call))
            writer = self._loop.create_task(self._write(call))
            tick = min(1.0, self.publish_timeout)
            try:
                while True:
                    done, _ = await asyncio.wait(
                        {reader, writer}, timeout=tick, return_when=asyncio.FIRST_COMPLETED
                    )
                    if done:
                        break
                    self._expire_inflight()
            except asyncio.CancelledError:  # close(): the stream's tasks and call end with it
                for task in (reader, writer):
                    task.cancel()
                call.cancel()
                await asyncio.gather(reader, writer, return_exceptions=True)
                raise
            error = _task_error(reader) if reader in done else _task_error(writer)
            if reader not in done and error is not None and not isinstance(error, grpc.RpcError):
                # A write failed because the RPC ended: the reader holds the real status.
                await asyncio.wait({reader}, timeout=WRITE_FAILURE_GRACE)
                if reader.done():
                    error = _task_error(reader) or error
            for task in (reader, writer):
                task.cancel()
            call.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            if self._closed:
                break
            if self._answered != answered_before:
                backoff.reset()  # the stream worked for a while: start the backoff afresh
            retry = error is None or _retryable(error)
            # Unanswered batches go back to the front of the queue, in their original order.
            unanswered = [self._inflight[k] for k in sorted(self._inflight)]
            self._inflight.clear()
            self._queue[:0] = unanswered
            if not retry and error is not None:
                exc = from_rpc_error(error) if isinstance(error, grpc.RpcError) else error
                self._fail_all(exc if isinstance(exc, LockgateError) else _wrap(exc))
                continue
            delay = backoff.next_delay()
            self.reconnects += 1
            limit = self.max_reconnect_attempts
            if limit is not None and backoff.failures > limit:
                self._fail_all(_unavailable(error))
                continue
            self._expire(error)
            if self._on_broken is not None and error is not None:
                self._on_broken()
            log.info(
                "client.publish.reconnecting: the stream broke (%s); again in %.2fs", error, delay
            )
            await asyncio.sleep(delay)
            self._wake.set()

    async def _write(self, call: PublishCall) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self._inflight:
                # One loop turn lets every publisher that is ready append to the open batches;
                # frames are in flight, so the turn costs nothing. An idle stream sends at once:
                # a lone publish does not wait a turn it cannot share (latency).
                await asyncio.sleep(0)
            while len(self._inflight) >= self.window:
                self._answers.clear()
                await self._answers.wait()  # the open batches keep filling meanwhile
            room = self.window - len(self._inflight)
            batches, self._queue = self._queue[:room], self._queue[room:]
            for batch in batches:
                if self._open.get(batch.subject) is batch:
                    del self._open[batch.subject]  # sent: later events go to a new batch
            # Every batch is in flight before the first write: if a write fails or is cancelled,
            # the unwritten ones are re-queued with the unanswered ones, never lost.
            frames = []
            for batch in batches:
                batch_id = self._next_batch_id
                self._next_batch_id += 1
                self._inflight[batch_id] = batch
                frames.append((batch, batch_id))
            for batch, batch_id in frames:
                subject = batch.subject.encode()
                fresh, batch.fresh = batch.fresh, False  # fresh on its first write only
                await call.write(encode_publish_frame(subject, batch.events, batch_id, fresh=fresh))
                self.frames_sent += 1

    async def _read(self, call: PublishCall) -> None:
        async for response in call:
            batch = self._inflight.pop(response.batch_id, None)
            if batch is not None:
                batch.resolve(response)
            self._answered += 1
            self._answers.set()
        # The server ended the stream without an error: treat it as a broken connection.
        raise Unavailable("the broker closed the publish stream", reason=Reason.UNAVAILABLE)

    def _expire(self, error: BaseException | None) -> None:
        now = self._loop.time()
        keep = []
        for batch in self._queue:
            if batch.deadline <= now:
                batch.fail(_unavailable(error))
                if self._open.get(batch.subject) is batch:
                    del self._open[batch.subject]
            else:
                keep.append(batch)
        self._queue = keep
        self._answers.set()

    def _expire_inflight(self) -> None:
        """Fail sent batches the broker has not answered within ``publish_timeout``."""
        now = self._loop.time()
        late = [k for k, b in self._inflight.items() if b.deadline <= now]
        for batch_id in late:
            self._inflight.pop(batch_id).fail(
                Unavailable(
                    f"the broker did not answer within publish_timeout ({self.publish_timeout}s)",
                    hint="the broker may be overloaded; retry, or raise publish_timeout",
                )
            )
        if late:
            self._answers.set()

    def _fail_all(self, exc: LockgateError) -> None:
        for batch in [*self._queue, *self._inflight.values()]:
            batch.fail(exc)
        self._queue.clear()
        self._inflight.clear()
        self._open.clear()
        self._answers.set()

    async def close(self, timeout: float | None = 5.0) -> None:
        """Wait (up to ``timeout``) for unanswered batches, then stop."""
        pending = [b.future for b in [*self._queue, *self._inflight.values()]]
        if pending and timeout:
            await asyncio.wait(pending, timeout=timeout)
        self._closed = True
        self._fail_all(LockgateError("the client was closed", reason=Reason.CLOSED))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _task_error(task: asyncio.Task[None]) -> BaseException | None:
    if task.cancelled():
        return None
    return task.exception()


def _retryable(error: BaseException) -> bool:
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in RETRYABLE
    # InvalidStateError: grpc.aio refuses writes once the RPC finished (the connection broke).
    return isinstance(error, Unavailable | OSError | asyncio.InvalidStateError)


def _unavailable(error: BaseException | None) -> LockgateError:
    detail = f": {error}" if error is not None else ""
    return Unavailable(
        f"could not publish before the timeout, the broker is unreachable{detail}",
        hint="check that the broker runs (start it with `lockgate serve`)",
    )


def _wrap(exc: BaseException) -> LockgateError:
    return LockgateError(f"publishing failed: {exc!r}", reason=Reason.INTERNAL)
