"""Lockgate sides of the scenarios: raw-stub publishers, the Python client, subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from bench.common import (
    PATTERN,
    SUBJECT,
    Args,
    Control,
    Counter,
    EventFactory,
    Result,
    cpu_seconds,
    emit,
    now_ns,
    paced,
    publish_frame,
    publish_one_frame,
    receive_until_stopped,
    stamp_of,
    stamped,
)
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2

_METHOD = "/broker.v1.BrokerService/"
_OPTIONS = [
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def _identity(b: bytes) -> bytes:
    return b


async def _channel(target: str) -> grpc.aio.Channel:
    channel = grpc.aio.insecure_channel(target, _OPTIONS)
    await asyncio.wait_for(channel.channel_ready(), 10)
    return channel


def _publish_call(channel: grpc.aio.Channel) -> Callable[..., Any]:
    return channel.stream_stream(
        _METHOD + "Publish", _identity, broker_pb2.PublishResponse.FromString
    )


class _Acks:
    """Reads PublishResponses, freeing a window slot for each."""

    def __init__(self, window: int) -> None:
        self.slots = asyncio.Semaphore(window)
        self.acked = 0
        self.rejected = 0

    async def read(self, call: Any) -> None:
        while (resp := await call.read()) is not grpc.aio.EOF:
            self.acked += len(resp.ids) - len(resp.errors)
            self.rejected += len(resp.errors)
            self.slots.release()


async def batch_publisher(args: Args, control: Control) -> Result:
    """Pipelined ``Publish`` stream: ``batch`` events a frame, ``window`` frames unanswered."""
    channel = await _channel(args["target"])
    call = _publish_call(channel)()
    factory, data = EventFactory(), stamped(0)
    acks = _Acks(args["window"])
    reader = asyncio.create_task(acks.read(call))
    batch, subject = args["batch"], SUBJECT.encode()
    emit("READY")
    await control.go()
    cpu0, t0 = cpu_seconds(), now_ns()
    end = t0 + int(args["duration"] * 1e9)
    batch_id = sent = 0
    while now_ns() < end:
        await acks.slots.acquire()
        batch_id += 1
        await call.write(
            publish_frame(subject, factory.events(batch, data), factory.size, batch_id)
        )
        sent += batch
    await call.done_writing()
    await reader
    elapsed = (now_ns() - t0) / 1e9
    await channel.close()
    return _pub_result(acks.acked, sent, elapsed, cpu0, rejected=acks.rejected)


def _pub_result(published: int, sent: int, elapsed: float, cpu0: float, **extra: Any) -> Result:
    return {
        "published": published,
        "sent": sent,
        "pub_rate": published / elapsed,
        "pub_elapsed": elapsed,
        "cpu": (cpu_seconds() - cpu0) / elapsed,
        **extra,
    }


async def _publish_loop(stop: asyncio.Event, publish: Callable[[], Any], counts: list[int]) -> None:
    n = 0
    while not stop.is_set():
        await publish()
        n += 1
    counts.append(n)


async def _run_tasks(args: Args, control: Control, publish: Callable[[], Any]) -> Result:
    stop, counts = asyncio.Event(), []  # type: ignore[var-annotated]
    await control.go()
    cpu0, t0 = cpu_seconds(), now_ns()
    tasks = [
        asyncio.create_task(_publish_loop(stop, publish, counts)) for _ in range(args["tasks"])
    ]
    await asyncio.sleep(args["duration"])
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = (now_ns() - t0) / 1e9
    total = sum(counts) + 1  # and the warm-up publish, which the subscriber saw too
    return _pub_result(total, total, elapsed, cpu0)


async def unary_publisher(args: Args, control: Control) -> Result:
    """Raw grpcio: unary ``PublishOne``, one event per call, from ``tasks`` tasks."""
    channel = await _channel(args["target"])
    call = channel.unary_unary(
        _METHOD + "PublishOne", _identity, broker_pb2.PublishOneResponse.FromString
    )
    factory, data, subject = EventFactory(), stamped(0), SUBJECT.encode()

    async def one() -> None:
        await call(publish_one_frame(subject, factory.events(1, data)[0]))

    await one()
    emit("READY")
    out = await _run_tasks(args, control, one)
    await channel.close()
    return out


async def latency_publisher(args: Args, control: Control) -> Result:
    """Single events at a steady ``rate`` on the Publish stream (one-event frames, pipelined)."""
    channel = await _channel(args["target"])
    call = _publish_call(channel)()
    acks = _Acks(1 << 30)
    reader = asyncio.create_task(acks.read(call))
    factory, subject = EventFactory(), SUBJECT.encode()
    emit("READY")
    await control.go()
    cpu0, t0 = cpu_seconds(), now_ns()
    sent = 0
    async for n in paced(args["rate"], args["duration"]):
        event = factory.events(1, stamped(now_ns()))[0]
        await call.write(publish_frame(subject, [event], factory.size, n + 1))
        sent += 1
    await call.done_writing()
    await reader
    elapsed = (now_ns() - t0) / 1e9
    await channel.close()
    return _pub_result(acks.acked, sent, elapsed, cpu0)


def _open_request(args: Args) -> broker_pb2.SubscribeRequest:
    op = broker_pb2.SubscribeOpen(pattern=PATTERN, max_in_flight=args.get("max_in_flight", 0))
    if args.get("durable"):
        op.durable = args["durable"]
        op.start.policy = broker_pb2.START_POLICY_NEW
    return broker_pb2.SubscribeRequest(open=op)


async def _subscribe(channel: grpc.aio.Channel, args: Args) -> Any:
    """An open ``Subscribe`` stream, past its ``subscribed`` confirmation."""
    call = channel.stream_stream(
        _METHOD + "Subscribe",
        broker_pb2.SubscribeRequest.SerializeToString,
        broker_pb2.SubscribeResponse.FromString,
    )()
    await call.write(_open_request(args))
    first = await call.read()
    if first is grpc.aio.EOF or not first.HasField("subscribed"):
        raise RuntimeError(f"no Subscribed confirmation: {first!r}")
    return call


async def subscriber(args: Args, control: Control) -> Result:
    """``Subscribe`` stream; counts deliveries, acks them (durable), or times them (latency)."""
    channel = await _channel(args["target"])
    call = await _subscribe(channel, args)
    counter = Counter()
    emit("READY")
    cpu0 = cpu_seconds()
    errors: list[str] = []
    acker = _Acker() if args.get("durable") else None
    receive = _receive(call, counter, acker, bool(args.get("latency")), errors)
    await receive_until_stopped(receive, counter, control, cap=args.get("cap", 60.0))
    out = counter.result()
    out["cpu"] = (cpu_seconds() - cpu0) / max((counter.last_ns - counter.first_ns) / 1e9, 1e-9)
    if acker is not None and acker.duplicates:
        errors.append(f"{acker.duplicates:,} duplicate deliveries (same id, attempt 1)")
    if errors:
        out["error"] = "; ".join(errors)
    call.cancel()
    await channel.close()
    return out


class _Acker:
    """Acks each delivered id once; counts ids delivered again with attempt 1 (a broker bug:
    acking those a second time fails the stream with NOT_PENDING)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.duplicates = 0

    def fresh(self, deliveries: Any) -> list[int]:
        ids = []
        for d in deliveries:
            if d.id in self.seen and d.attempt == 1:
                self.duplicates += 1
            else:
                self.seen.add(d.id)
                ids.append(d.id)
        return ids


async def _receive(
    call: Any, counter: Counter, acker: _Acker | None, latency: bool, errors: list[str]
) -> None:
    try:
        while (resp := await call.read()) is not grpc.aio.EOF:
            deliveries = resp.deliveries
            if acker is None:
                t = counter.add(len(deliveries))
            else:
                ids = acker.fresh(deliveries)
                if ids:
                    await call.write(broker_pb2.SubscribeRequest(ack=broker_pb2.Ack(ids=ids)))
                t = counter.add(len(ids))
            if latency:
                for d in deliveries:
                    stamp = stamp_of(d.event.binary_data)
                    counter.latencies_ns.append(t - stamp)
                    counter.samples.append((d.id, stamp, t))
    except grpc.aio.AioRpcError as exc:
        errors.append(f"{exc.code().name}: {exc.details()}")
    except asyncio.InvalidStateError:  # an ack written after the broker ended the stream
        errors.append(f"{(await call.code()).name}: {await call.details()}")


async def raw_responder(args: Args, control: Control) -> Result:
    """Answers every delivery that has a ``reply_to`` with its own event: one ``Publish``
    frame each on one raw stream (the grpcio floor's responder, and the broker's with it)."""
    channel = await _channel(args["target"])
    sub = await _subscribe(channel, args)
    pub = _publish_call(channel)()
    acks = _Acks(1 << 30)
    reader = asyncio.create_task(acks.read(pub))
    counter = Counter()

    async def receive() -> None:
        n = 0
        while (resp := await sub.read()) is not grpc.aio.EOF:
            counter.add(len(resp.deliveries))
            for d in resp.deliveries:
                n += 1
                req = broker_pb2.PublishRequest(subject=d.reply_to, events=[d.event], batch_id=n)
                await pub.write(req.SerializeToString())

    emit("READY")
    cpu0 = cpu_seconds()
    await receive_until_stopped(receive(), counter, control)
    out = counter.result()
    out["cpu"] = (cpu_seconds() - cpu0) / max((counter.last_ns - counter.first_ns) / 1e9, 1e-9)
    reader.cancel()
    sub.cancel()
    pub.cancel()
    await channel.close()
    return out


async def raw_requester(args: Args, control: Control) -> Result:
    """Requests at ``rate`` on one raw ``RequestStream`` (each in its own task, like the
    client's requester); round-trip times."""
    from bench.client_workers import request_loop

    channel = await _channel(args["target"])
    call = channel.stream_stream(
        _METHOD + "RequestStream",
        broker_pb2.RequestStreamRequest.SerializeToString,
        broker_pb2.RequestStreamResponse.FromString,
    )()
    waiting: dict[int, asyncio.Future[Any]] = {}
    outgoing: asyncio.Queue[broker_pb2.RequestStreamRequest] = asyncio.Queue()
    ids = iter(range(1, 1 << 62))
    factory, data = EventFactory(), stamped(0)

    async def write() -> None:
        while True:
            await call.write(await outgoing.get())

    async def read() -> None:
        while (resp := await call.read()) is not grpc.aio.EOF:
            fut = waiting.pop(resp.request_id, None)
            if fut is not None and not fut.done():
                if resp.HasField("error"):
                    fut.set_exception(RuntimeError(resp.error.message))
                else:
                    fut.set_result(resp.event)

    async def request() -> Any:
        rid = next(ids)
        fut = waiting[rid] = asyncio.get_running_loop().create_future()
        event = cloudevent_pb2.CloudEvent.FromString(factory.events(1, data)[0])
        req = broker_pb2.RequestRequest(subject=SUBJECT, event=event)
        req.timeout.FromSeconds(5)
        outgoing.put_nowait(broker_pb2.RequestStreamRequest(request_id=rid, request=req))
        return await asyncio.wait_for(fut, 5.0)

    tasks = [asyncio.create_task(write()), asyncio.create_task(read())]
    for _ in range(100):  # the responder subscribed before READY, but be patient
        try:
            await request()
            break
        except (RuntimeError, TimeoutError):
            await asyncio.sleep(0.05)
    emit("READY")
    await control.go()
    try:
        return await request_loop(args, request)
    finally:
        for t in tasks:
            t.cancel()
        call.cancel()
        await channel.close()
