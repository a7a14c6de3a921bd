"""Reconnect against a real broker process that is stopped and started again (same data dir)."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.broker.testing import run_broker
from lockgate.clients import Client
from tests.support import eventually

pytestmark = pytest.mark.e2e


async def _pending(c: Client, durable: str, count: int) -> bool:
    return (await c.admin.get_durable(durable)).durable.pending_count == count


async def test_durable_subscription_and_publishes_survive_a_restart() -> None:
    async with run_broker() as broker, Client(broker.target) as c:
        sub = await c.subscription("jobs.>", durable="worker", start="all")
        first = await c.publish("jobs.a", 1)
        msg = await asyncio.wait_for(anext(sub), 5)
        assert msg.id == first
        await msg.ack()
        await eventually(lambda: _pending(c, "worker", 0))  # the ack was applied

        await broker.terminate()
        # Publishing while the broker is down waits for it, then goes through once.
        pending = asyncio.ensure_future(c.publish("jobs.b", 2))
        # Time to try the dead broker and, wrongly, give up: nothing observable marks a try
        # that fails inside the client (the await below fails if it gave up).
        await asyncio.sleep(0.3)
        assert not pending.done()
        await broker.restart()

        second = await asyncio.wait_for(pending, 20)
        assert second > first
        msg = await asyncio.wait_for(anext(sub), 20)
        assert (msg.id, msg.data) == (second, 2)  # the acked event is not redelivered
        await msg.ack()
        assert sub.reconnects >= 1 and sub.name == "worker"
        stored = [e.id async for e in c.query_events("jobs.>")]
        assert stored == [first, second]
        await sub.close()


async def test_unanswered_publishes_are_not_duplicated_after_a_crash() -> None:
    async with run_broker() as broker, Client(broker.target) as c:
        await c.publish("warm.up", 0)
        pending = [asyncio.ensure_future(c.publish("crash.x", i)) for i in range(200)]
        await asyncio.sleep(0)  # one loop turn: the frame is written, the answer may not come
        await broker.kill()
        await broker.restart()
        ids = await asyncio.wait_for(asyncio.gather(*pending), 20)
        stored = [e.id async for e in c.query_events("crash.x", page_size=1000)]
        assert sorted(ids) == stored and len(set(ids)) == 200
