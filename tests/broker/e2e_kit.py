"""Helpers for the end-to-end tests: raw gRPC stubs against a real ``lockgate serve`` process.

Deliberately free of the Python client (``clients/``): these tests pin the wire contract
(``protos/broker/v1``), so they speak it with the generated stubs and nothing else.
``conftest.py`` re-exports :func:`error_info` and adds the fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pty
import subprocess
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lockgate.broker.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    cloudevent_pb2,
)

__all__ = [
    "LOCKGATE",
    "CloudEvent",
    "Metadata",
    "Stubs",
    "Sub",
    "assert_no_more",
    "auth",
    "error_info",
    "event",
    "lockgate_cli",
    "open_call",
    "pending_count",
    "publish_batches",
    "publish_one",
    "query_all",
    "subscribe",
    "unique",
]

CloudEvent = cloudevent_pb2.CloudEvent
Metadata = tuple[tuple[str, str], ...]

LOCKGATE = str(Path(sys.executable).with_name("lockgate"))


def error_info(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """``(code, ErrorInfo.reason, ErrorInfo.metadata)`` of a failed call.

    The reason is ``""`` when the status carries no ErrorInfo (e.g. a plain transport error),
    so a test that expects a reason fails with a readable diff rather than an exception.
    """
    status = rpc_status.from_call(err)
    if status is None:
        return err.code(), "", {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "lockgate.dev", info
            return err.code(), info.reason, dict(info.metadata)
    return err.code(), "", {}


def unique(prefix: str = "t") -> str:
    """A subject nobody else in the session uses."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def event(
    data: str | bytes = "x", *, source: str = "e2e", id: str | None = None, type: str = "e2e.test"
) -> CloudEvent:
    """A valid CloudEvent with a fresh id."""
    ev = CloudEvent(id=id or uuid.uuid4().hex, source=source, spec_version="1.0", type=type)
    if isinstance(data, bytes):
        ev.binary_data = data
    else:
        ev.text_data = data
    return ev


def auth(key: str) -> Metadata:
    return (("authorization", "Bearer " + key),)


class Stubs:
    """The two services on one channel, with optional call metadata."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata | None = None) -> None:
        self.channel = channel
        self.broker = broker_pb2_grpc.BrokerServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.md = metadata


async def query_all(
    stub: broker_pb2_grpc.BrokerServiceStub,
    pattern: str,
    metadata: Metadata | None = None,
    **kw: object,
) -> list[broker_pb2.StoredEvent]:
    """Every stored event matching ``pattern``, following every page."""
    out: list[broker_pb2.StoredEvent] = []
    token = ""
    while True:
        resp = await stub.QueryEvents(
            broker_pb2.QueryEventsRequest(
                pattern=pattern,
                page_size=1000,
                page_token=token,
                **kw,  # type: ignore[arg-type]
            ),
            metadata=metadata,
            timeout=30,
        )
        out.extend(resp.events)
        token = resp.next_page_token
        if not token:
            return out


class Sub:
    """A Subscribe stream read by a background task, so a test can wait with a timeout.

    (Cancelling a pending ``call.read()`` cancels the whole RPC, so ``wait_for(call.read())``
    is no way to wait "a little" for a delivery; the pump reads, the test waits on a queue.)
    """

    def __init__(self, call: grpc.aio.StreamStreamCall, subscribed: broker_pb2.Subscribed):
        self.call = call
        self.subscribed = subscribed
        self.error: grpc.aio.AioRpcError | None = None
        self._queue: asyncio.Queue[list[broker_pb2.Delivery] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            # read(), not ``async for``: the open message was sent with the read/write API.
            while (msg := await self.call.read()) is not grpc.aio.EOF:
                if msg.deliveries:
                    self._queue.put_nowait(list(msg.deliveries))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc
        except asyncio.CancelledError:
            pass
        finally:
            self._queue.put_nowait(None)

    async def collect(
        self, count: int, timeout: float = 10.0, *, ack: bool = False
    ) -> list[broker_pb2.Delivery]:
        """Deliveries until ``count`` arrived or ``timeout`` passed (acking each batch if
        asked). Raises the stream's error when it ended with one."""
        out: list[broker_pb2.Delivery] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                got = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            if got is None:
                self._queue.put_nowait(None)  # stays ended for the next caller
                if self.error is not None:
                    raise self.error
                break
            out.extend(got)
            if ack:
                await self.ack([d.id for d in got])
        return out

    async def ack(self, ids: Sequence[int]) -> None:
        await self.call.write(broker_pb2.SubscribeRequest(ack=broker_pb2.Ack(ids=ids)))

    async def nack(self, ids: Sequence[int], delay: float = 0.0) -> None:
        nack = broker_pb2.Nack(ids=ids)
        if delay:
            nack.delay.FromMilliseconds(int(delay * 1000))
        await self.call.write(broker_pb2.SubscribeRequest(nack=nack))

    async def ended(self, timeout: float = 10.0) -> grpc.aio.AioRpcError | None:
        """Waits for the stream to end; its error, or None for a clean end."""
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return self.error

    async def close(self) -> None:
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def open_call(
    stub: broker_pb2_grpc.BrokerServiceStub,
    metadata: Metadata | None = None,
    **open_kw: object,
) -> tuple[grpc.aio.StreamStreamCall, broker_pb2.Subscribed]:
    """Opens a Subscribe stream and reads its ``subscribed`` confirmation; nothing more
    is read from it (the stalled-subscriber tests want exactly that)."""
    call = stub.Subscribe(metadata=metadata)
    await call.write(
        broker_pb2.SubscribeRequest(open=broker_pb2.SubscribeOpen(**open_kw))  # type: ignore[arg-type]
    )
    first = await asyncio.wait_for(call.read(), 10)
    assert first is not grpc.aio.EOF and first.HasField("subscribed"), first
    return call, first.subscribed


async def subscribe(
    stub: broker_pb2_grpc.BrokerServiceStub,
    metadata: Metadata | None = None,
    **open_kw: object,
) -> Sub:
    """Opens a Subscribe stream, waits until it is live and starts reading it."""
    return Sub(*await open_call(stub, metadata, **open_kw))


async def publish_batches(
    stub: broker_pb2_grpc.BrokerServiceStub,
    subject: str,
    batches: Sequence[Sequence[CloudEvent]],
    metadata: Metadata | None = None,
) -> list[broker_pb2.PublishResponse]:
    """Sends batches on one Publish stream, pipelined, and returns the responses in order."""
    call = stub.Publish(metadata=metadata)
    responses: list[broker_pb2.PublishResponse] = []

    async def reader() -> None:
        async for resp in call:
            responses.append(resp)

    task = asyncio.create_task(reader())
    for n, events in enumerate(batches):
        await call.write(broker_pb2.PublishRequest(subject=subject, events=events, batch_id=n + 1))
    await call.done_writing()
    await asyncio.wait_for(task, 60)
    return responses


async def publish_one(
    stub: broker_pb2_grpc.BrokerServiceStub,
    subject: str,
    data: str = "x",
    metadata: Metadata | None = None,
) -> int:
    """Publishes one event and returns its id."""
    resp = await stub.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=event(data)),
        metadata=metadata,
        timeout=10,
    )
    return resp.id


async def pending_count(stubs: Stubs, name: str) -> int:
    """How many deliveries durable ``name`` has unacknowledged (acks are applied when this
    says so, not when the client wrote them)."""
    info = await stubs.admin.GetDurable(
        admin_pb2.GetDurableRequest(name=name), metadata=stubs.md, timeout=10
    )
    return info.durable.pending_count


async def assert_no_more(
    sub: Sub,
    stub: broker_pb2_grpc.BrokerServiceStub,
    subject: str,
    metadata: Metadata | None = None,
) -> int:
    """Asserts that nothing more is on its way to ``sub``, without a fixed wait: publishes a
    marker on ``subject`` (which ``sub`` must match) and asserts that the marker is the next
    delivery, since whatever the broker queued for ``sub`` before it arrives first. Returns the
    marker's id (a durable ``sub`` still has to ack it)."""
    marker = await publish_one(stub, subject, "marker", metadata)
    got = await sub.collect(1, 10)
    assert [d.id for d in got] == [marker], (
        f"expected only the marker {marker}, got {[(d.id, d.attempt) for d in got]}"
    )
    return marker


def lockgate_cli_in_process(*args: str) -> str:
    """Runs ``lockgate ARGS`` through the CLI's entry point in this process (no interpreter
    start, a second or more on a loaded machine) and returns its stdout: for a fixture's
    setup (keys, tokens), not for tests of the command itself. Call it from a thread (the
    command runs its own event loop), one at a time (it redirects sys.stdout)."""
    from lockgate.broker import cli

    out = io.StringIO()
    with _IN_PROCESS, contextlib.redirect_stdout(out):
        code = cli.main(list(args))
    assert code == 0, f"lockgate {' '.join(args)} exited {code}"
    return out.getvalue()


_IN_PROCESS = threading.Lock()


def lockgate_cli(*args: str) -> str:
    """Runs the ``lockgate`` command and returns its stdout."""
    cmd = [LOCKGATE] if os.path.exists(LOCKGATE) else [sys.executable, "-m", "lockgate.broker.cli"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"lockgate {' '.join(args)}: {proc.stderr}"
    return proc.stdout


_ROOT = Path(__file__).resolve().parents[2]
_LOCKGATE = [sys.executable, "-m", "lockgate.broker.cli"]


def run_cli(args: list[str], *, tty: str = "") -> tuple[int, str, str]:
    """Runs ``lockgate ARGS``: exit code, stdout, stderr. ``tty`` = ``"stdout"`` or
    ``"stderr"``: that stream is a terminal (a pty), as a person's, for what the CLI shows
    on a terminal only (progress bars, ``top``'s redraws); its text is returned as read."""
    if not tty:
        out = subprocess.run(
            [*_LOCKGATE, *args], capture_output=True, text=True, cwd=_ROOT, timeout=60
        )
        return out.returncode, out.stdout, out.stderr
    leader, follower = pty.openpty()
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, tty: follower}
    try:
        proc = subprocess.Popen(
            [*_LOCKGATE, *args],
            stdout=streams["stdout"],
            stderr=streams["stderr"],
            cwd=_ROOT,
            text=True,
        )
        os.close(follower)
        follower = -1
        chunks = []
        with contextlib.suppress(OSError):  # EIO once the pty's writer is gone
            while chunk := os.read(leader, 65536):
                chunks.append(chunk)
        other = proc.stderr if tty == "stdout" else proc.stdout
        piped = other.read() if other else ""
        code = proc.wait(60)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    shown = b"".join(chunks).decode()
    return (code, shown, piped) if tty == "stdout" else (code, piped, shown)
