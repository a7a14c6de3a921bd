"""Connection loss between client and a live broker, through a fault-injecting TCP proxy."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.broker.testing import run_broker
from lockgate.clients import Client
from tests.support import TcpProxy, eventually

pytestmark = pytest.mark.e2e


async def test_cut_connections_lose_nothing_and_duplicate_nothing() -> None:
    async with (
        run_broker() as broker,
        TcpProxy(broker.target) as proxy,
        Client(proxy.target) as c,
    ):
        # Deliveries on a cut stream come back after ack_wait: keep it short.
        sub = await c.subscription("loss.>", durable="survivor", start="all", ack_wait=1.0)
        received: list[int] = []

        async def consume() -> None:
            async for msg in sub:
                received.append(msg.id)
                await msg.ack()

        consumer = asyncio.ensure_future(consume())
        published: list[int] = []

        async def produce(worker: int) -> None:
            for i in range(50):
                published.append(await c.publish(f"loss.{worker}", i))

        producers = asyncio.gather(*(produce(w) for w in range(8)))
        for published_before_cut in (50, 150, 250):  # cut mid-stream, three times
            await eventually(lambda n=published_before_cut: len(published) >= n)
            await proxy.cut()
        await asyncio.wait_for(producers, 30)

        stored = [e.id async for e in c.query_events("loss.>", page_size=1000)]
        assert sorted(published) == stored  # every publish stored exactly once
        assert len(stored) == 400
        await eventually(lambda: set(received) >= set(stored), timeout=15)
        assert set(received) == set(stored)  # at-least-once: redeliveries allowed
        assert proxy.connections > 1
        consumer.cancel()
        await sub.close()
