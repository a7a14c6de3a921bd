"""The client against a real ``lockgate serve`` process (``broker.testing.run_broker``)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pydantic
import pytest
import pytest_asyncio

from lockgate import clients
from lockgate.broker.testing import run_broker
from lockgate.clients import Client, Message, Subscription
from tests.support import eventually

if TYPE_CHECKING:
    from lockgate.broker.testing import RunningBroker


pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


class Order(pydantic.BaseModel):
    number: int
    items: list[str]


@dataclasses.dataclass
class Ping:
    seq: int
    note: str


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broker() -> AsyncIterator[RunningBroker]:
    async with run_broker() as b:
        yield b


@pytest_asyncio.fixture(loop_scope="module")
async def client(broker: RunningBroker) -> AsyncIterator[Client]:
    async with Client(broker.target, connect_timeout=10) as c:
        yield c


async def next_msg(sub: Subscription, timeout: float = 5.0) -> Message:
    return await asyncio.wait_for(anext(sub), timeout)


async def test_publish_subscribe_round_trip(client: Client) -> None:
    subject = unique("rt")
    async with client.subscribe(f"{subject}.>") as sub:
        ids = [
            await client.publish(f"{subject}.a", {"n": 1}),
            await client.publish(f"{subject}.b", "text"),
            await client.publish(f"{subject}.c", b"\x00raw"),
        ]
        got = [await next_msg(sub) for _ in range(3)]
    assert [m.id for m in got] == ids
    assert [m.data for m in got] == [{"n": 1}, "text", b"\x00raw"]
    assert [m.subject for m in got] == [f"{subject}.a", f"{subject}.b", f"{subject}.c"]
    assert got[0].attempt == 1 and got[0].type == "lockgate.event"


async def test_concurrent_publishes_coalesce_into_few_frames(client: Client) -> None:
    subject = unique("co")
    before = client.frames_sent
    ids = await asyncio.gather(*(client.publish(subject, i) for i in range(64)))
    assert len(set(ids)) == 64 and ids == sorted(ids)
    assert client.frames_sent - before <= 3


async def test_typed_messages(client: Client) -> None:
    subject = unique("typed")
    async with (
        client.subscribe(f"{subject}.order", model=Order) as orders,
        client.subscribe(f"{subject}.ping", model=Ping) as pings,
    ):
        await client.publish(f"{subject}.order", Order(number=7, items=["a", "b"]))
        await client.publish(f"{subject}.ping", Ping(3, "hi"))
        order = await next_msg(orders)
        assert order.data == Order(number=7, items=["a", "b"])
        assert order.data_as(Order).items == ["a", "b"]
        assert (await next_msg(pings)).data == Ping(3, "hi")


async def test_publish_batch_and_duplicates(client: Client) -> None:
    subject = unique("batch")
    event = clients.to_cloudevent({"k": 1}, source="test://dedup", id=uuid.uuid4().hex)
    first = await client.publish(subject, event)
    results = await client.publish_batch(subject, ["x", event, {"y": 2}])
    assert [r.ok for r in results] == [True, True, True]
    assert [r.duplicate for r in results] == [False, True, False]
    assert results[1].id == first


async def test_invalid_subject_is_raised(client: Client) -> None:
    with pytest.raises(clients.InvalidSubject):
        await client.publish("bad..subject", 1)
    with pytest.raises(clients.InvalidSubject):
        await client.subscription("bad..>")


async def test_durable_ack_nack_and_redelivery(client: Client) -> None:
    subject, name = unique("dur"), unique("d").replace(".", "-")
    sub = await client.subscription(
        subject, durable=name, start="all", ack_wait=0.5, max_deliveries=5
    )
    try:
        eid = await client.publish(subject, {"job": 1})
        msg = await next_msg(sub)
        assert (msg.id, msg.attempt) == (eid, 1)
        await msg.nack()
        again = await next_msg(sub)
        assert (again.id, again.attempt) == (eid, 2)
        # Not acked: redelivered after ack_wait.
        third = await next_msg(sub)
        assert (third.id, third.attempt) == (eid, 3)
        await third.ack()

        async def nothing_pending() -> bool:
            info = await client.admin.get_durable(name)
            assert info.durable.name == name
            return info.durable.pending_count == 0

        await eventually(nothing_pending)  # acked: nothing is left to redeliver
        marker = await client.publish(subject, "marker")  # the next delivery is the marker
        nxt = await next_msg(sub)
        assert (nxt.id, nxt.attempt) == (marker, 1)
        await nxt.ack()
        await eventually(nothing_pending)
        assert name in [d.name for d in await client.admin.list_durables()]
    finally:
        await sub.close()
    await client.admin.delete_durable(name)
    with pytest.raises(clients.NotFound):
        await client.admin.get_durable(name)


async def test_batches_ack_and_nack_a_whole_batch(client: Client) -> None:
    subject, name = unique("batches"), unique("b").replace(".", "-")
    sub = await client.subscription(subject, durable=name, start="all", ack_wait=30)
    try:
        ids = [r.id for r in await client.publish_batch(subject, list(range(10)))]
        batches = sub.batches()
        first = await asyncio.wait_for(anext(batches), 5)
        nacked = [m.id for m in first]
        assert nacked == ids[: len(first)] and first[0].data == 0
        await first.nack()  # the whole batch comes back, attempt 2
        ids += [r.id for r in await client.publish_batch(subject, list(range(10, 50)))]
        acked: dict[int, int] = {}
        while len(acked) < 50:
            batch = await asyncio.wait_for(anext(batches), 5)
            assert batch, "a batch is never empty"
            acked.update((m.id, m.attempt) for m in batch)
            await batch.ack()
        assert sorted(acked) == ids
        assert {acked[i] for i in nacked} == {2}
        assert {acked[i] for i in ids if i not in nacked} == {1}

        async def nothing_pending() -> bool:
            return (await client.admin.get_durable(name)).durable.pending_count == 0

        await eventually(nothing_pending)
    finally:
        await sub.close()
        await client.admin.delete_durable(name)
    assert [b async for b in sub.batches()] == []  # a closed subscription ends the iteration


async def test_subscription_error_reaches_batches(client: Client) -> None:
    sub = client.subscribe("bad..>")
    with pytest.raises(clients.InvalidSubject):
        await anext(sub.batches())


async def test_durable_with_default_start_gets_new_events(client: Client) -> None:
    subject, name = unique("durnew"), unique("dn").replace(".", "-")
    async with client.subscribe(subject, durable=name) as sub:
        eid = await client.publish(subject, "fresh")
        try:
            assert (await next_msg(sub, timeout=2)).id == eid
        finally:
            await client.admin.delete_durable(name)


async def test_dead_letters_and_redrive(client: Client) -> None:
    subject, name = unique("dlq"), unique("dl").replace(".", "-")
    async with client.subscribe(subject, durable=name, start="all", max_deliveries=2) as sub:
        eid = await client.publish(subject, "poison")
        for attempt in (1, 2):
            msg = await next_msg(sub)
            assert (msg.id, msg.attempt) == (eid, attempt)
            await msg.nack()
        letters = await eventually(lambda: client.admin.list_dead_letters(name))
        assert [d.id for d in letters] == [eid]
        assert await client.admin.redrive(name) == 1
        msg = await next_msg(sub)
        assert msg.id == eid
        await msg.ack()
    await client.admin.delete_durable(name)


async def test_request_reply(client: Client) -> None:
    subject = unique("rpc")

    async def responder(sub: Subscription) -> None:
        async for msg in sub:
            assert isinstance(msg.data, list)
            await msg.respond({"sum": sum(msg.data)})

    sub = await client.subscription(subject, queue="adders")
    task = asyncio.ensure_future(responder(sub))
    try:
        reply = await client.request(subject, [1, 2, 3], timeout=5)
        assert reply.data == {"sum": 6}
    finally:
        await sub.close()
        task.cancel()
    with pytest.raises(clients.NoResponders):
        await client.request(unique("nobody"), "hello?", timeout=2)


async def test_request_timeout(client: Client) -> None:
    subject = unique("slow")
    async with client.subscribe(subject):  # listens, never answers
        with pytest.raises(clients.RequestTimeout):
            await client.request(subject, "hi", timeout=0.5)


async def test_history_pagination(client: Client) -> None:
    subject = unique("hist")
    ids = list(await asyncio.gather(*(client.publish(f"{subject}.e", i) for i in range(25))))
    events = [e async for e in client.query_events(f"{subject}.>", page_size=10)]
    assert [e.id for e in events] == sorted(ids)
    assert sorted(e.data for e in events) == list(range(25))  # type: ignore[type-var]
    limited = [e async for e in client.query_events(f"{subject}.>", page_size=4, limit=6)]
    assert len(limited) == 6
    after = [e async for e in client.query_events(f"{subject}.>", after_id=sorted(ids)[19])]
    assert len(after) == 5
    one = await client.get_event(ids[0])
    assert one.subject == f"{subject}.e" and one.id == ids[0]
    with pytest.raises(clients.NotFound):
        await client.get_event(1)


async def test_replay_start_all(client: Client) -> None:
    subject = unique("replay")
    first = await client.publish(subject, "old")
    async with client.subscribe(subject, start="all") as sub:
        assert (await next_msg(sub)).id == first
    async with client.subscribe(subject, start=first - 1) as sub:
        assert (await next_msg(sub)).id == first


async def test_polling_with_fetch_and_acknowledge(client: Client) -> None:
    subject, name = unique("poll"), unique("p").replace(".", "-")
    info = await client.admin.create_durable(name, subject, start="all", ack_wait=0.5)
    assert info.name == name and info.pattern == subject
    assert await client.fetch(name, wait=0) == []
    ids = [await client.publish(subject, i) for i in range(3)]
    got = await client.fetch(name, max_events=10, wait=2)
    assert [m.id for m in got] == ids and [m.data for m in got] == [0, 1, 2]
    for m in got[:2]:
        await m.ack()
    await got[2].nack()
    again = await client.fetch(name, max_events=10, wait=2)
    assert [(m.id, m.attempt) for m in again] == [(ids[2], 2)]
    await client.acknowledge(name, ack=[ids[2]])
    assert await client.fetch(name, wait=0.7) == []
    await client.admin.delete_durable(name)
