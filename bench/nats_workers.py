"""Baselines with nats-py against a nats-server: core pub/sub and JetStream."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from bench.common import (
    PATTERN,
    SUBJECT,
    Args,
    Control,
    Counter,
    Result,
    cpu_seconds,
    emit,
    now_ns,
    paced,
    receive_until_stopped,
    stamp_of,
    stamped,
)

JS_STREAM = "JSBENCH"
JS_SUBJECT = "jsbench.x"
JS_PATTERN = "jsbench.>"
_LIMITS = {"pending_msgs_limit": 4_000_000, "pending_bytes_limit": 1 << 30}


def _pub_result(published: int, elapsed: float, cpu0: float, **extra: Any) -> Result:
    return {
        "published": published,
        "sent": published,
        "pub_rate": published / elapsed,
        "pub_elapsed": elapsed,
        "cpu": (cpu_seconds() - cpu0) / elapsed,
        **extra,
    }


async def core_publisher(args: Args, control: Control) -> Result:
    """``await nc.publish()`` as fast as it goes; nats-py's flusher batches the writes."""
    nc = await nats.connect(args["url"])
    data = stamped(0)
    emit("READY")
    await control.go()
    cpu0, t0 = cpu_seconds(), now_ns()
    end = t0 + int(args["duration"] * 1e9)
    sent = 0
    while now_ns() < end:
        for _ in range(1000):
            await nc.publish(SUBJECT, data)
        sent += 1000
    await nc.flush()
    elapsed = (now_ns() - t0) / 1e9
    await nc.close()
    return _pub_result(sent, elapsed, cpu0)


async def task_publisher(args: Args, control: Control) -> Result:
    """``await nc.publish()`` from ``tasks`` concurrent tasks."""
    nc = await nats.connect(args["url"])
    data = stamped(0)
    stop, counts = asyncio.Event(), []

    async def loop() -> None:
        n = 0
        while not stop.is_set():
            await nc.publish(SUBJECT, data)
            n += 1
            if not n % 100:
                await asyncio.sleep(0)  # nc.publish never yields: let the other tasks run
        counts.append(n)

    emit("READY")
    await control.go()
    cpu0, t0 = cpu_seconds(), now_ns()
    tasks = [asyncio.create_task(loop()) for _ in range(args["tasks"])]
    await asyncio.sleep(args["duration"])
    stop.set()
    await asyncio.gather(*tasks)
    await nc.flush()
    elapsed = (now_ns() - t0) / 1e9
    await nc.close()
    return _pub_result(sum(counts), elapsed, cpu0)


async def responder(args: Args, control: Control) -> Result:
    """Answers every request on ``bench.>`` with its own data (``msg.respond``)."""
    nc = await nats.connect(args["url"])
    counter = Counter()

    async def on_msg(msg: Msg) -> None:
        counter.add(1)
        await msg.respond(msg.data)

    await nc.subscribe(PATTERN, cb=on_msg, **_LIMITS)
    await nc.flush()
    emit("READY")
    cpu0 = cpu_seconds()
    await receive_until_stopped(asyncio.Event().wait(), counter, control)
    out = _sub_result(counter, cpu0, [])
    await nc.close()
    return out


async def requester(args: Args, control: Control) -> Result:
    """``await nc.request()`` at a steady ``rate`` (each in its own task); round-trip times."""
    from bench.client_workers import request_loop

    nc = await nats.connect(args["url"])
    await nc.request(SUBJECT, stamped(0), timeout=5)
    emit("READY")
    await control.go()
    out = await request_loop(args, lambda: nc.request(SUBJECT, stamped(0), timeout=5))
    await nc.close()
    return out


async def latency_publisher(args: Args, control: Control) -> Result:
    """Single messages at a steady ``rate``."""
    nc = await nats.connect(args["url"])
    emit("READY")
    await control.go()
    cpu0, t0 = cpu_seconds(), now_ns()
    sent = 0
    async for _ in paced(args["rate"], args["duration"]):
        await nc.publish(SUBJECT, stamped(now_ns()))
        sent += 1
    await nc.flush()
    elapsed = (now_ns() - t0) / 1e9
    await nc.close()
    return _pub_result(sent, elapsed, cpu0)


async def core_subscriber(args: Args, control: Control) -> Result:
    """Counts (or times) messages on ``bench.>`` in a nats-py callback."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(f"{type(exc).__name__}: {exc}")

    nc = await nats.connect(args["url"], error_cb=on_error)
    counter = Counter()
    latency = bool(args.get("latency"))

    async def on_msg(msg: Msg) -> None:
        t = counter.add(1)
        if latency:
            counter.latencies_ns.append(t - stamp_of(msg.data))

    await nc.subscribe(PATTERN, cb=on_msg, **_LIMITS)
    await nc.flush()
    emit("READY")
    cpu0 = cpu_seconds()
    await receive_until_stopped(asyncio.Event().wait(), counter, control)
    out = _sub_result(counter, cpu0, errors)
    await nc.close()
    return out


def _sub_result(counter: Counter, cpu0: float, errors: list[str]) -> Result:
    out = counter.result()
    out["cpu"] = (cpu_seconds() - cpu0) / max((counter.last_ns - counter.first_ns) / 1e9, 1e-9)
    if errors:
        out["error"] = errors[0]
    return out


async def js_publisher(args: Args, control: Control) -> Result:
    """JetStream async publish: up to ``max_pending`` unacknowledged, acks awaited at the end."""
    nc = await nats.connect(args["url"])
    js = nc.jetstream(publish_async_max_pending=args["max_pending"])
    data = stamped(0)
    failed: list[int] = []

    def check(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            failed.append(1)

    emit("READY")
    await control.go()
    cpu0, t0 = cpu_seconds(), now_ns()
    end = t0 + int(args["duration"] * 1e9)
    sent = 0
    while now_ns() < end:
        for _ in range(100):
            (await js.publish_async(JS_SUBJECT, data, stream=JS_STREAM)).add_done_callback(check)
        sent += 100
    await js.publish_async_completed()
    elapsed = (now_ns() - t0) / 1e9
    await nc.close()
    return _pub_result(sent - len(failed), elapsed, cpu0, rejected=len(failed))


async def js_subscriber(args: Args, control: Control) -> Result:
    """A durable pull consumer with explicit acks: fetch a batch, ack each message."""
    nc = await nats.connect(args["url"])
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=JS_STREAM, subjects=[JS_PATTERN]))
    config = ConsumerConfig(
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.NEW,
        max_ack_pending=args["max_ack_pending"],
    )
    psub = await js.pull_subscribe(JS_PATTERN, durable="bench-d", stream=JS_STREAM, config=config)
    counter = Counter()
    batch = args["batch"]

    async def receive() -> None:
        while True:
            try:
                msgs = await psub.fetch(batch, timeout=0.5)
            except NatsTimeout:
                continue
            for m in msgs:
                await m.ack()
            counter.add(len(msgs))

    emit("READY")
    cpu0 = cpu_seconds()
    await receive_until_stopped(receive(), counter, control, idle=2.0)
    out = _sub_result(counter, cpu0, [])
    await nc.close()
    return out
