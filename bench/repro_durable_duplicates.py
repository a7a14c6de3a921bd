"""Repro: a durable subscriber that falls behind gets the same ids twice (attempt 1 both times),
and acking the second copy ends its stream with FAILED_PRECONDITION / NOT_PENDING.

    .venv/bin/python bench/repro_durable_duplicates.py [--batches 600] [--delay 0.005]

Publishes ``batches`` x 500 events to "bench.x" while a durable subscriber ("bench-d",
START_POLICY_NEW, max_in_flight 5000) acks each delivery batch, sleeping ``delay`` s per batch
so that it falls behind. Prints duplicates, the stream's error, and how many events never came.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import EventFactory, publish_frame, stamped
from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2

_M = "/broker.v1.BrokerService/"


async def publish(channel: grpc.aio.Channel, batches: int, ids: list[int]) -> None:
    call = channel.stream_stream(_M + "Publish", bytes, broker_pb2.PublishResponse.FromString)()
    factory, data = EventFactory(), stamped(0)
    for i in range(batches):
        await call.write(publish_frame(b"bench.x", factory.events(500, data), factory.size, i + 1))
    await call.done_writing()
    while (resp := await call.read()) is not grpc.aio.EOF:
        ids.extend(resp.ids)


async def consume(channel: grpc.aio.Channel, delay: float, seen: set[int]) -> None:
    call = channel.stream_stream(
        _M + "Subscribe",
        broker_pb2.SubscribeRequest.SerializeToString,
        broker_pb2.SubscribeResponse.FromString,
    )()
    op = broker_pb2.SubscribeOpen(pattern="bench.>", durable="bench-d", max_in_flight=5000)
    op.start.policy = broker_pb2.START_POLICY_NEW
    await call.write(broker_pb2.SubscribeRequest(open=op))
    await call.read()  # Subscribed
    try:
        while (resp := await asyncio.wait_for(call.read(), 3)) is not grpc.aio.EOF:
            ids = [d.id for d in resp.deliveries]
            dups = [i for i in ids if i in seen]
            if dups:
                print(f"duplicate: {len(dups)} of {len(ids)} ids again, first {dups[0]}")
            seen.update(ids)
            await call.write(broker_pb2.SubscribeRequest(ack=broker_pb2.Ack(ids=ids)))
            await asyncio.sleep(delay)
    except TimeoutError:
        print("subscriber idle for 3 s: done")
    except grpc.aio.AioRpcError as exc:
        print(f"subscriber stream failed: {exc.code().name}: {exc.details()}")
    except asyncio.InvalidStateError:  # the ack after the broker ended the stream
        print(f"subscriber stream failed: {(await call.code()).name}: {await call.details()}")


async def main(args: argparse.Namespace) -> None:
    async with run_broker() as b:
        channel = grpc.aio.insecure_channel(b.target)
        published: list[int] = []
        seen: set[int] = set()
        consumer = asyncio.create_task(consume(channel, args.delay, seen))
        await asyncio.sleep(0.5)
        await publish(channel, args.batches, published)
        await consumer
        missing = len(set(published) - seen)
        print(f"published {len(published):,}, received {len(seen):,} distinct, missing {missing:,}")
        await channel.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=600)
    p.add_argument("--delay", type=float, default=0.005)
    asyncio.run(main(p.parse_args()))
