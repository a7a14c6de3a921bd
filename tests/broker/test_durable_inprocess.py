"""Durable delivery in-process, where the interleavings are easy to provoke: a consumer
that falls behind a fast publisher (past its in-memory buffer, so it reads the log while
batches are still being committed) gets every event exactly once as a first delivery."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.config import Config
from lockgate.broker.node import Broker
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2


def events(k: int, n: int) -> list[cloudevent_pb2.CloudEvent]:
    return [
        cloudevent_pb2.CloudEvent(
            id=f"{k}-{i}", source="t", spec_version="1.0", type="t", binary_data=b"x" * 64
        )
        for i in range(n)
    ]


async def test_slow_durable_gets_everything_once(tmp_path: Path) -> None:
    cfg = Config(data_dir=str(tmp_path), fsync="never", max_in_flight=50)
    broker = Broker(cfg, SqliteStore(tmp_path, fsync="never"))
    await broker.start()
    try:
        session = await broker.subscribe_durable(DEV_PRINCIPAL, "slow", "t.>")
        seen: list[int] = []
        total = 480 * 50

        async def consume() -> None:
            while len(seen) < total:
                body = await session.outbox.take()
                assert body is not None
                ids = [d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
                seen.extend(ids)
                # The test's subject: a consumer slower than the publisher.
                await asyncio.sleep(0.0005)
                session.consumer.ack(ids)  # raises NOT_PENDING on a duplicate delivery

        reader = asyncio.create_task(consume())
        published: list[int] = []
        for chunk in range(0, 480, 16):  # bursts of concurrent batches
            outs = await asyncio.gather(
                *(
                    broker.publish(DEV_PRINCIPAL, "t.x", events(k, 50))
                    for k in range(chunk, chunk + 16)
                )
            )
            for out in outs:
                published.extend(out.ids)
        await asyncio.wait_for(reader, 15)
        assert len(seen) == len(set(seen)) == total
        assert sorted(seen) == sorted(published)
    finally:
        await broker.stop()
