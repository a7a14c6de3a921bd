"""Durables across nodes (the owner model): three nodes in one process on one LocalBackbone
and one LocalLeases, sharing one store, as cluster nodes share PostgreSQL and the log. A
durable created on one node is usable on the others; streams on several nodes share its
events; acks, nacks with delay, ack deadlines, max deliveries and dead letters are the
owner's one engine; stopping the owner moves the durable to a node whose stream then gets
the pending events again."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio

from lockgate.broker import durable_relay
from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.backbone.local import LocalBackbone
from lockgate.broker.config import Config
from lockgate.broker.delivery import BoundSession
from lockgate.broker.durable_relay import RelayedStream
from lockgate.broker.durables import DurableOptions
from lockgate.broker.errors import FailedPrecondition, NotFound
from lockgate.broker.leases import Leases, LocalLeases, RedisLeases
from lockgate.broker.node import Broker
from lockgate.broker.store import Store
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from tests.support import eventually

ORG = DEV_PRINCIPAL.org


class SharedStore:
    """One store for several nodes of this process: opened and closed by the test, not by
    each node."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Cluster:
    """Nodes on one backbone and one store; their leases are one LocalLeases, or (with
    ``redis_url``) each node's own RedisLeases client on one fresh prefix, as processes."""

    def __init__(self, tmp: Path, redis_url: str = "") -> None:
        self.tmp = tmp
        self.store = SqliteStore(tmp, fsync="never")
        self.backbone = LocalBackbone()
        self.local = LocalLeases()
        self.redis_url = redis_url
        self.prefix = f"lockgate-test:{uuid.uuid4().hex}:"
        self.nodes: list[Broker] = []

    def leases(self) -> Leases:
        if self.redis_url:
            return RedisLeases(self.redis_url, prefix=self.prefix)
        return self.local

    async def start(self, n: int, **settings: Any) -> list[Broker]:
        await self.store.open()
        for i in range(n):
            config = Config(data_dir=str(self.tmp), worker_id=i + 1, **settings)
            node = Broker(
                config,
                cast(Store, SharedStore(self.store)),
                backbone=self.backbone,
                leases=self.leases(),
                shared_durables=True,
            )
            await node.start()
            self.nodes.append(node)
        return self.nodes

    async def stop(self) -> None:
        for node in self.nodes:
            if not node.draining:
                await node.stop()
            if self.redis_url:
                await node.leases.close()
        await self.store.close()


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    await c.stop()


@pytest_asyncio.fixture
async def redis_cluster(tmp_path: Path, redis_url: str) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, redis_url)
    yield c
    await c.stop()


@pytest_asyncio.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def either_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    c = Cluster(tmp_path, url)
    yield c
    await c.stop()


def event(eid: str) -> cloudevent_pb2.CloudEvent:
    return cloudevent_pb2.CloudEvent(id=eid, source="/c", spec_version="1.0", type="t")


async def publish(node: Broker, subject: str, n: int, tag: str) -> list[int]:
    out = await node.publish(DEV_PRINCIPAL, subject, [event(f"{tag}-{i}") for i in range(n)])
    assert out.errors == []
    return out.ids


async def take(session: BoundSession, n: int, timeout: float = 10) -> list[broker_pb2.Delivery]:
    out: list[broker_pb2.Delivery] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            body = await session.outbox.take()
            assert body is not None, "the stream ended"
            out.extend(broker_pb2.SubscribeResponse.FromString(body).deliveries)
    return out


async def take_any(streams: list[BoundSession], n: int) -> list[broker_pb2.Delivery]:
    """``n`` deliveries from whichever of ``streams`` gets them."""
    out: list[broker_pb2.Delivery] = []

    async def drain(stream: BoundSession) -> None:
        while len(out) < n:
            body = await stream.outbox.take()
            assert body is not None, "the stream ended"
            out.extend(broker_pb2.SubscribeResponse.FromString(body).deliveries)

    tasks = [asyncio.create_task(drain(s)) for s in streams]
    try:
        await eventually(lambda: len(out) >= n or any(t.done() for t in tasks))
        for t in tasks:
            if t.done():
                t.result()  # raises what ended it
    finally:
        for t in tasks:
            t.cancel()
    return out


def owner_of(nodes: list[Broker], name: str) -> Broker:
    [owner] = [n for n in nodes if (ORG, name) in n.consumers]
    return owner


async def test_a_durable_created_on_one_node_is_usable_on_another(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3)
    await a.create_durable(DEV_PRINCIPAL, "d", "x.>")
    stream = await b.subscribe_durable(DEV_PRINCIPAL, "d", "x.>")
    assert isinstance(stream, RelayedStream) and stream.owner == a.node_id
    assert (ORG, "d") not in b.consumers  # b relays; a runs it
    ids = await publish(c, "x.a", 3, "e")
    got = await take(stream, 3)
    assert [d.id for d in got] == ids
    await stream.ack([ids[0]])  # on the stream: to the owner
    await b.acknowledge(DEV_PRINCIPAL, "d", [ids[1]], [])  # unary, on a non-owner: stored
    consumer = a.durable(ORG, "d")
    await eventually(lambda: set(consumer.pending) == {ids[2]})

    # Fetch on a third node: the owner's poll, answered through the backbone.
    stream.close()
    await eventually(lambda: not consumer.sessions)
    ids2 = await publish(a, "x.b", 2, "f")
    body = await c.fetch(DEV_PRINCIPAL, "d", 10, 5.0)
    fetched = [d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
    assert set(ids2) <= set(fetched)

    # The owner's refusals reach the caller with their reason.
    with pytest.raises(FailedPrecondition) as exc:
        await c.acknowledge(DEV_PRINCIPAL, "d", [12345], [])
    assert exc.value.reason == "NOT_PENDING"
    with pytest.raises(FailedPrecondition) as mismatch:
        await c.subscribe_durable(DEV_PRINCIPAL, "d", "other.>")
    assert mismatch.value.reason == "DURABLE_MISMATCH"
    with pytest.raises(NotFound) as unknown:
        await b.acknowledge(DEV_PRINCIPAL, "nope", [1], [])
    assert unknown.value.reason == "UNKNOWN_DURABLE"


async def test_streams_on_two_nodes_get_every_event_once(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3)
    on_b = await b.subscribe_durable(DEV_PRINCIPAL, "q", "q.>")  # b takes it on
    on_c = await c.subscribe_durable(DEV_PRINCIPAL, "q", "q.>")  # c relays to b
    assert owner_of([a, b, c], "q") is b
    ids: list[int] = []
    for n in range(10):
        ids += await publish(a, "q.x", 20, f"p{n}")
    got: dict[str, list[int]] = {"b": [], "c": []}

    async def drain(name: str, stream: BoundSession) -> None:
        while True:
            body = await stream.outbox.take()
            if body is None:
                return
            batch = [d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
            got[name] += batch
            await stream.ack(batch)

    tasks = [asyncio.create_task(drain("b", on_b)), asyncio.create_task(drain("c", on_c))]
    try:
        await eventually(lambda: len(got["b"]) + len(got["c"]) >= len(ids))
        assert sorted(got["b"] + got["c"]) == sorted(ids)  # every event, once
        assert got["b"] and got["c"]  # shared between the nodes
        await eventually(lambda: not b.durable(ORG, "q").pending)
    finally:
        for t in tasks:
            t.cancel()


async def test_nacks_deadlines_and_dead_letters_are_the_owners(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    options = DurableOptions(max_deliveries=3)
    await a.create_durable(DEV_PRINCIPAL, "r", "r.>", options)
    stream = await b.subscribe_durable(DEV_PRINCIPAL, "r", "r.>")
    [eid] = await publish(a, "r.x", 1, "n")
    [first] = await take(stream, 1)
    assert (first.id, first.attempt) == (eid, 1)
    await stream.nack([eid], 0.2)  # with a delay: comes back once it passed
    [second] = await take(stream, 1)
    assert (second.id, second.attempt) == (eid, 2)
    consumer = a.durable(ORG, "r")
    consumer.expire(time.monotonic() + 10_000)  # its ack deadline passed
    [third] = await take(stream, 1)
    assert (third.id, third.attempt) == (eid, 3)
    consumer.expire(time.monotonic() + 20_000)  # past max_deliveries: a dead letter

    async def dead() -> list[int]:
        return [r.id for r in await cluster.store.list_dead_letters(ORG, "r", (0, 0), 10)]

    assert await eventually(dead) == [eid]

    async def dlq() -> list[str]:  # published after the dead letter is stored
        return [e.event.id for e in (await b.query(DEV_PRINCIPAL, "$dlq.r"))[0]]

    assert await eventually(dlq) == ["n-0"]
    # Redrive on the node that does not run it: back to the stream.
    assert await b.redrive(ORG, "r", None) == 1
    [back] = await take(stream, 1)
    assert back.id == eid


async def test_stopping_the_owner_moves_the_durable_and_its_pending(
    either_cluster: Cluster,
) -> None:
    a, b, c = await either_cluster.start(3)
    await a.create_durable(DEV_PRINCIPAL, "m", "m.>")
    stream = await b.subscribe_durable(DEV_PRINCIPAL, "m", "m.>")
    ids = await publish(c, "m.x", 3, "k")
    got = await take(stream, 3)
    assert [d.id for d in got] == ids
    await b.acknowledge(DEV_PRINCIPAL, "m", [ids[0]], [])  # stored by the owner
    await a.stop()
    # b's stream carries on: b took the durable on and hands out what a left pending.
    again = await take(stream, 2)
    assert sorted(d.id for d in again) == ids[1:]
    assert all(d.attempt == 2 for d in again)
    assert owner_of([b, c], "m") is b
    await stream.ack(ids[1:])
    more = await publish(c, "m.x", 2, "l")
    assert [d.id for d in await take(stream, 2)] == more


async def crash(node: Broker) -> None:
    """The node vanishes as with kill -9: off the backbone, nothing stored, no lease given
    back (its leases run out)."""
    node.backbone.leave(node)
    relay = node.durables.relay
    assert relay is not None
    tasks = [*node._tasks, relay._task]
    tasks += [c._task for c in node.consumers.values()]
    for t in tasks:
        if t is not None:
            t.cancel()
    await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
    node.draining = True  # the fixture does not stop it


async def test_a_crashed_owner_leaves_its_pending_to_a_survivor(redis_cluster: Cluster) -> None:
    a, b, c = await redis_cluster.start(3)  # the leases in Redis, as in a real cluster
    await a.create_durable(DEV_PRINCIPAL, "k", "k.>")
    stream = await b.subscribe_durable(DEV_PRINCIPAL, "k", "k.>")
    ids = await publish(c, "k.x", 4, "k")
    assert [d.id for d in await take(stream, 4)] == ids
    await b.acknowledge(DEV_PRINCIPAL, "k", ids[:1], [])  # a unary ack is stored at once
    await crash(a)
    # a's lease runs out (3 s); b takes the durable on from the store: what a handed out
    # and nobody acked comes again (from the log or the stored pending).
    again = await take(stream, 3)
    assert sorted(d.id for d in again) == ids[1:]
    assert owner_of([b, c], "k") is b


async def test_a_vanished_relay_leaves_its_deliveries_to_other_streams(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3)
    await a.create_durable(DEV_PRINCIPAL, "v", "v.>")
    on_b = await b.subscribe_durable(DEV_PRINCIPAL, "v", "v.>")
    ids = await publish(a, "v.x", 3, "v")
    assert [d.id for d in await take(on_b, 3)] == ids
    on_c = await c.subscribe_durable(DEV_PRINCIPAL, "v", "v.>")
    await crash(b)
    # The owner no longer hears b's holds: it unbinds b's session, whose deliveries are
    # due again for c's stream.
    again = await take(on_c, 3)
    assert sorted(d.id for d in again) == ids
    assert all(d.attempt == 2 for d in again)


async def test_any_node_creates_describes_and_lists_a_durable(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    options = DurableOptions(max_deliveries=7)
    await a.create_durable(DEV_PRINCIPAL, "s", "s.>", options)
    # On b, which does not run it: the owner checks the create and answers its settings.
    same = await b.create_durable(DEV_PRINCIPAL, "s", "s.>", options)
    assert (same.rec.pattern, same.rec.max_deliveries) == ("s.>", 7)
    with pytest.raises(FailedPrecondition) as exc:
        await b.create_durable(DEV_PRINCIPAL, "s", "s.>", DurableOptions(max_deliveries=3))
    assert exc.value.reason == "DURABLE_MISMATCH"
    assert (ORG, "s") not in b.consumers
    stream = await a.subscribe_durable(DEV_PRINCIPAL, "s", "s.>")
    ids = await publish(b, "s.x", 2, "s")
    await take(stream, 2)
    a.durable(ORG, "s").flush(force=True)
    # Described and listed on b from the store (pending as last written).
    assert await b.durable_names(ORG) == ["s"]
    await eventually(
        lambda: _pending(b, "s", set(ids)), what="b's view shows a's pending deliveries"
    )
    seen = await b.durable_view(ORG, "s")
    assert seen.rec.max_deliveries == 7
    with pytest.raises(NotFound):
        await b.durable_view(ORG, "none")
    # Deleted through b: gone everywhere.
    await b.delete_durable(ORG, "s")
    assert await a.durable_names(ORG) == [] and (ORG, "s") not in a.consumers


async def _pending(node: Broker, name: str, ids: set[int]) -> bool:
    return set((await node.durable_view(ORG, name)).pending) == ids


async def test_on_the_cluster_store_durables_move_between_nodes(
    tmp_path: Path, nats_url: str, pg_fresh_dsn: str, redis_url: str
) -> None:
    """As processes would: each node its own ClusterStore (JetStream log, PostgreSQL) and
    RedisLeases client; the durable's owner reads the other nodes' commits from the log."""
    from lockgate.broker.store.cluster import ClusterStore
    from lockgate.broker.store.jetstream import JetStreamLog

    stream = "LGT_" + uuid.uuid4().hex[:12]
    backbone, prefix = LocalBackbone(), f"lockgate-test:{uuid.uuid4().hex}:"
    nodes: list[Broker] = []
    for i in range(3):
        log = JetStreamLog(nats_url, stream=stream, root=stream.lower())
        config = Config(data_dir=str(tmp_path), worker_id=i + 1, store=pg_fresh_dsn)
        store = ClusterStore(pg_fresh_dsn, log, max_size=3)
        leases = RedisLeases(redis_url, prefix=prefix)
        nodes.append(Broker(config, store, backbone=backbone, leases=leases))
        await nodes[-1].start()
    a, b, c = nodes
    try:
        assert a.durables.relay is not None  # a cluster store: the durables are shared
        on_b = await b.subscribe_durable(DEV_PRINCIPAL, "j", "j.>")  # b takes it on
        on_c = await c.subscribe_durable(DEV_PRINCIPAL, "j", "j.>")  # c relays to b
        ids = await publish(a, "j.x", 6, "j")  # committed by a, read by b from the log
        got = await take_any([on_b, on_c], 6)
        assert sorted(d.id for d in got) == ids
        await b.acknowledge(DEV_PRINCIPAL, "j", ids, [])
        more = await publish(c, "j.x", 2, "k")
        await eventually(lambda: set(b.durable(ORG, "j").pending) == set(more))
        await b.stop()  # b stores what is pending and gives the durable up; c takes it on
        redelivered: set[int] = set()
        async with asyncio.timeout(10):
            while redelivered != set(more):
                redelivered |= {d.id for d in await take(on_c, 1) if d.attempt >= 2}
        assert owner_of([a, c], "j") is c
    finally:
        for n in nodes:
            if not n.draining:
                await n.stop()
            await n.leases.close()
        import nats

        nc = await nats.connect(nats_url)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
        await nc.close()


async def test_a_webhook_durable_no_stream_needs_still_gets_an_owner(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its receiver is the webhook dispatcher of the node running it (told through
    ``on_durable_created``), so when its owner stops another node takes it on."""
    monkeypatch.setattr(durable_relay, "WEBHOOK_EVERY", 1)
    a, b = await cluster.start(2, webhook_allow_private=True)
    hook = DurableOptions(endpoint_url="http://127.0.0.1:9/hook")
    await a.create_durable(DEV_PRINCIPAL, "hook", "h.>", hook)
    assert (ORG, "hook") in a.consumers
    told: list[str] = []
    b.on_durable_created.append(lambda c: told.append(c.name))
    await a.stop()
    await eventually(lambda: (ORG, "hook") in b.consumers, what="b runs the webhook durable")
    assert told == ["hook"]
