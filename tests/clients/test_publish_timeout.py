"""``publish(..., timeout=T)`` against a real ``lockgate serve``: a publish whose deadline passes
before its answer raises RequestTimeout (the answer is then ignored), one answered in time
returns its id, and the publishers of one frame with different deadlines each get their own
outcome. A broker that stores but whose answers never arrive is a real one behind a stalled
``TcpProxy``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from lockgate import clients
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1.reasons import Reason
from lockgate.clients import Client
from tests.broker.e2e_kit import unique
from tests.support import TcpProxy, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broker() -> AsyncIterator[RunningBroker]:
    async with run_broker() as b:
        yield b


async def stored(c: Client, subject: str) -> list[tuple[int, object]]:
    return [(e.id, e.data) async for e in c.query_events(subject, page_size=1000)]


async def until_stored(target: str, subject: str, count: int) -> None:
    """Returns once the broker holds ``count`` events on ``subject``."""
    async with Client(target) as direct:

        async def all_stored() -> bool:
            return len(await stored(direct, subject)) >= count

        await eventually(all_stored)


async def test_a_publish_answered_before_its_deadline_returns_its_id(
    broker: RunningBroker,
) -> None:
    subject = unique("intime")
    async with Client(broker.target) as c:
        ids = [await c.publish(subject, i, timeout=30) for i in range(3)]
        ids += await asyncio.gather(*(c.publish(subject, i, timeout=30) for i in range(3, 50)))
        ids.append(await c.publish(subject, 50, timeout=math.inf))
        events = await stored(c, subject)
    assert ids == [eid for eid, _ in events]
    assert [data for _, data in events] == list(range(51))


async def test_a_deadline_that_passes_raises_and_a_retry_keeps_the_event_once(
    broker: RunningBroker,
) -> None:
    subject = unique("late")
    async with TcpProxy(broker.target) as proxy, Client(proxy.target) as c:
        await c.publish(subject, 0)  # the stream is open
        proxy.stall(to_server=False)  # the broker stores, its answers never arrive
        with pytest.raises(clients.RequestTimeout) as caught:
            await c.publish(subject, 1, id="the-one", timeout=0.2)
        assert caught.value.reason == Reason.DEADLINE_EXCEEDED
        await until_stored(broker.target, subject, 2)  # only the answer was lost
        proxy.resume()
        await proxy.cut()  # the unanswered frame goes again on a new connection
        retried = await asyncio.wait_for(c.publish(subject, 1, id="the-one", timeout=10), 20)
        events = await stored(c, subject)
    assert [data for _, data in events] == [0, 1]  # neither the resend nor the retry doubled it
    assert retried == events[1][0]


async def test_publishers_of_one_frame_with_mixed_deadlines_each_get_their_outcome(
    broker: RunningBroker,
) -> None:
    subject = unique("mixed")
    async with TcpProxy(broker.target) as proxy, Client(proxy.target) as c:
        await c.publish(subject, -1)
        proxy.stall(to_server=False)
        # Interleaved in one frame: short deadlines (several milliseconds apart, so several
        # timers), long ones, and none.
        short = [
            asyncio.ensure_future(c.publish(subject, i, timeout=0.1 + i / 1000))
            for i in range(0, 60, 3)
        ]
        long = [
            asyncio.ensure_future(c.publish(subject, i + 1, timeout=60)) for i in range(0, 60, 3)
        ]
        endless = [asyncio.ensure_future(c.publish(subject, i + 2)) for i in range(0, 60, 3)]
        frames = c.frames_sent
        done, _ = await asyncio.wait(short, timeout=20)
        assert done == set(short)
        for f in short:
            with pytest.raises(clients.RequestTimeout):
                f.result()
        assert not any(f.done() for f in long + endless)
        await until_stored(broker.target, subject, 61)
        proxy.resume()
        await proxy.cut()
        ids = await asyncio.wait_for(asyncio.gather(*long, *endless), 20)
        events = await stored(c, subject)
    assert c.frames_sent > frames
    assert sorted(data for _, data in events) == list(range(-1, 60))  # each stored once
    by_data = {data: eid for eid, data in events}
    assert ids == [by_data[i + 1] for i in range(0, 60, 3)] + [
        by_data[i + 2] for i in range(0, 60, 3)
    ]


async def test_a_cancelled_publisher_leaves_its_deadline_to_the_others(
    broker: RunningBroker,
) -> None:
    subject = unique("cancel")
    async with TcpProxy(broker.target) as proxy, Client(proxy.target) as c:
        await c.publish(subject, 0)
        proxy.stall(to_server=False)
        # The same timeout in the same loop turn: one deadline shared by all three.
        waiting = [asyncio.ensure_future(c.publish(subject, i, timeout=60)) for i in (1, 2, 3)]
        await until_stored(broker.target, subject, 4)
        waiting[0].cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting[0]
        proxy.resume()
        await proxy.cut()
        ids = await asyncio.wait_for(asyncio.gather(*waiting[1:]), 20)
        events = await stored(c, subject)
    assert [data for _, data in events] == [0, 1, 2, 3]
    assert ids == [eid for eid, data in events if data in (2, 3)]


@pytest.mark.parametrize("timeout", [math.nan, -1.0])
async def test_a_nan_or_negative_timeout_is_refused_before_anything_is_sent(
    broker: RunningBroker, timeout: float
) -> None:
    subject = unique("nan")
    async with Client(broker.target) as c:
        await c.publish(subject, 0)
        frames = c.frames_sent
        with pytest.raises(ValueError, match="NaN or negative"):
            await c.publish(subject, 1, timeout=timeout)
        await c.flush()
        assert c.frames_sent == frames
        assert [data for _, data in await stored(c, subject)] == [0]
