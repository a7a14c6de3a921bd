"""Lockgate sides that use the public Python client (``lockgate.clients``), as users do."""

from __future__ import annotations

import asyncio
from typing import Any

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
    percentile,
    receive_until_stopped,
    stamp_of,
    stamped,
)
from lockgate.clients import Client, LockgateError, PublishResult


def _pub_result(published: int, sent: int, elapsed: float, cpu0: float, **extra: Any) -> Result:
    return {
        "published": published,
        "sent": sent,
        "pub_rate": published / elapsed,
        "pub_elapsed": elapsed,
        "cpu": (cpu_seconds() - cpu0) / elapsed,
        **extra,
    }


async def batch_publisher(args: Args, control: Control) -> Result:
    """``publish_batch_async`` of ``batch`` events in a loop from one task: up to ``window``
    frames unanswered (the client's back-pressure), each batch's results checked as they come
    (a done callback, as the JetStream baseline checks its acks: a publisher that kept every
    result until the end would pay the garbage collector for them). With ``rate`` (events/s)
    the batches are paced to it: a fixed offered load (bench/cluster_bench.py)."""
    data = stamped(0)
    items = [data] * args["batch"]
    counts = [0, 0]  # ok, rejected
    pending: set[asyncio.Future[list[PublishResult]]] = set()

    def check(f: asyncio.Future[list[PublishResult]]) -> None:
        pending.discard(f)
        if not f.cancelled() and f.exception() is None:
            for r in f.result():
                counts[r.error is not None] += 1

    async def publish() -> None:
        f = await c.publish_batch_async(SUBJECT, items)
        pending.add(f)
        f.add_done_callback(check)

    async with Client(args["target"], publish_window=args["window"]) as c:
        await c.publish(SUBJECT, data)  # open the stream
        emit("READY")
        await control.go()
        cpu0, t0 = cpu_seconds(), now_ns()
        end = t0 + int(args["duration"] * 1e9)
        if args.get("rate"):
            async for _ in paced(args["rate"] / args["batch"], args["duration"]):
                await publish()
        while now_ns() < end:
            await publish()
        await c.flush()
        await asyncio.gather(*pending)  # raises a batch's error, as f.result() did
        elapsed = (now_ns() - t0) / 1e9
        ok, rejected = counts
        out = _pub_result(ok + 1, ok + rejected + 1, elapsed, cpu0, rejected=rejected)
        out["frames"] = c.frames_sent
    return out


async def task_publisher(args: Args, control: Control) -> Result:
    """``await c.publish()`` from ``tasks`` concurrent tasks (the client coalesces them), with
    ``timeout=`` when given one (bench/run.py --publish-timeout)."""
    data = stamped(0)
    timeout = args.get("timeout")
    async with Client(args["target"]) as c:
        await c.publish(SUBJECT, data)  # warm the stream up
        emit("READY")
        stop, counts = asyncio.Event(), []

        async def loop() -> None:
            n = 0
            while not stop.is_set():
                await c.publish(SUBJECT, data, timeout=timeout)
                n += 1
            counts.append(n)

        await control.go()
        cpu0, t0 = cpu_seconds(), now_ns()
        tasks = [asyncio.create_task(loop()) for _ in range(args["tasks"])]
        await asyncio.sleep(args["duration"])
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = (now_ns() - t0) / 1e9
        total = sum(counts) + 1  # and the warm-up publish, which the subscriber saw too
        out = _pub_result(total, total, elapsed, cpu0)
        out["frames"] = c.frames_sent
    return out


async def latency_publisher(args: Args, control: Control) -> Result:
    """One ``c.publish()`` per event at a steady ``rate``, each in its own task, the send time
    in the data."""
    async with Client(args["target"]) as c:
        await c.publish(SUBJECT, stamped(0))
        emit("READY")
        await control.go()
        cpu0, t0 = cpu_seconds(), now_ns()
        pending: set[asyncio.Task[int]] = set()
        sent = 0
        async for _ in paced(args["rate"], args["duration"]):
            task = asyncio.create_task(c.publish(SUBJECT, stamped(now_ns())))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.gather(*pending)
        elapsed = (now_ns() - t0) / 1e9
    return _pub_result(sent + 1, sent + 1, elapsed, cpu0)


async def subscriber(args: Args, control: Control) -> Result:
    """``async for msg in sub`` (or ``sub.batches()`` with ``batches``); durable subscribers
    ack every message (``msg.ack()``, or ``batch.ack()``)."""
    async with Client(args["target"]) as c:
        sub = await c.subscription(
            PATTERN,
            durable=args.get("durable"),
            start="new" if args.get("durable") else None,
            max_in_flight=args.get("max_in_flight"),
        )
        counter = Counter()
        errors: list[str] = []
        latency = bool(args.get("latency"))
        durable = bool(args.get("durable"))

        async def by_message() -> None:
            add = counter.add
            async for msg in sub:
                t = add(1)
                if durable:
                    await msg.ack()
                if latency:
                    stamp = stamp_of(msg.data)  # type: ignore[arg-type]
                    counter.latencies_ns.append(t - stamp)
                    counter.samples.append((msg.id, stamp, t))

        async def by_batch() -> None:
            async for batch in sub.batches():
                t = counter.add(len(batch))
                if durable:
                    await batch.ack()
                if latency:
                    counter.latencies_ns.extend(t - stamp_of(m.data) for m in batch)  # type: ignore[arg-type]

        async def receive() -> None:
            try:
                await (by_batch() if args.get("batches") else by_message())
            except LockgateError as exc:
                errors.append(f"{exc.reason}: {exc.message}")

        emit("READY")
        cpu0 = cpu_seconds()
        await receive_until_stopped(receive(), counter, control, cap=args.get("cap", 60.0))
        out = counter.result()
        span = max((counter.last_ns - counter.first_ns) / 1e9, 1e-9)
        out["cpu"] = (cpu_seconds() - cpu0) / span
        if errors:
            out["error"] = "; ".join(errors)
    return out


async def responder(args: Args, control: Control) -> Result:
    """Answers every request on ``bench.>`` with its own data (``msg.respond``, in a task so
    a slow reply does not hold the next request)."""
    async with Client(args["target"]) as c:
        sub = await c.subscription(PATTERN)
        counter = Counter()
        replies: set[asyncio.Task[int]] = set()

        async def receive() -> None:
            async for msg in sub:
                counter.add(1)
                task = asyncio.create_task(msg.respond(msg.data))
                replies.add(task)
                task.add_done_callback(replies.discard)

        emit("READY")
        cpu0 = cpu_seconds()
        await receive_until_stopped(receive(), counter, control)
        out = counter.result()
        out["cpu"] = (cpu_seconds() - cpu0) / max((counter.last_ns - counter.first_ns) / 1e9, 1e-9)
    return out


async def requester(args: Args, control: Control) -> Result:
    """``await c.request()`` at a steady ``rate`` (each in its own task); round-trip times."""
    async with Client(args["target"]) as c:
        await _first_reply(c)
        emit("READY")
        await control.go()
        return await request_loop(args, lambda: c.request(SUBJECT, stamped(0), timeout=5.0))


async def _first_reply(c: Client) -> None:
    for _ in range(100):  # the responder subscribed before READY, but be patient
        try:
            await c.request(SUBJECT, stamped(0), timeout=1.0)
            return
        except LockgateError:
            await asyncio.sleep(0.05)


async def request_loop(args: Args, call: Any) -> Result:
    """Requests at ``rate`` for ``duration`` seconds; the publisher result with latencies."""
    cpu0, t0 = cpu_seconds(), now_ns()
    samples: list[int] = []
    failed: list[str] = []

    async def one() -> None:
        start = now_ns()
        try:
            await call()
        except Exception as exc:
            failed.append(f"{type(exc).__name__}: {exc}")
            return
        samples.append(now_ns() - start)

    pending: set[asyncio.Task[None]] = set()
    sent = 0
    async for _ in paced(args["rate"], args["duration"]):
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
    await asyncio.gather(*pending)
    elapsed = (now_ns() - t0) / 1e9
    lat = sorted(samples[200:])
    out = _pub_result(len(samples), sent, elapsed, cpu0)
    if lat:
        out.update(
            p50_us=percentile(lat, 0.50) / 1e3,
            p90_us=percentile(lat, 0.90) / 1e3,
            p99_us=percentile(lat, 0.99) / 1e3,
            max_us=lat[-1] / 1e3,
            samples=len(lat),
        )
    if failed:
        out["error"] = f"{len(failed)} failed requests, e.g. {failed[0]}"
    return out
