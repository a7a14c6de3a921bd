"""Cluster mode end to end: three ``lockgate serve`` processes on one NATS JetStream, one
PostgreSQL database and one Redis (fresh stream, subject prefix, database and key prefix per
test), driven by the public Python client, with the publisher on one node and the readers
on the others."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from lockgate.broker.auth import create_key
from lockgate.broker.store.postgres import PgStore
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.clients import Client, LockgateError, Message, PermissionDenied
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@dataclass
class Cluster:
    nodes: list[RunningBroker]
    keys: dict[str, str]
    stream: str
    prefix: str


@contextlib.asynccontextmanager
async def _cluster(nats_url: str, dsn: str, redis_url: str) -> AsyncIterator[Cluster]:
    tag = uuid.uuid4().hex[:10]
    stream = f"LGT_{tag}"
    store = PgStore(dsn, max_size=2)
    await store.open()
    try:
        keys = {
            "admin": (await create_key(store, "default", "ops", ["admin"]))[0],
            "acme": (await create_key(store, "acme", "bot", []))[0],
            "globex": (await create_key(store, "globex", "bot", []))[0],
            "acme-admin": (await create_key(store, "acme", "ops", ["org-admin"]))[0],
        }
    finally:
        await store.close()
    args = [
        "--backbone",
        nats_url,
        "--store",
        dsn,
        "--limiter",
        redis_url,
        "--limiter-prefix",
        f"lgt:{tag}:",
        "--backbone-stream",
        stream,
        "--backbone-prefix",
        f"t{tag}",
        "--heartbeat",  # the roster's: a killed node drops out after 3 of them
        "0.5s",
    ]
    async with contextlib.AsyncExitStack() as stack:
        nodes = await asyncio.gather(
            *(stack.enter_async_context(run_broker(extra_args=args)) for _ in range(3))
        )
        try:
            yield Cluster(list(nodes), keys, stream, f"t{tag}")
        finally:
            # Together: each drains on its own (the stack would stop them one by one).
            await asyncio.gather(*(n.terminate() for n in nodes), return_exceptions=True)
            with contextlib.suppress(Exception):
                import nats

                nc = await nats.connect(nats_url)
                await nc.request(f"$JS.API.STREAM.DELETE.{stream}", b"", timeout=5)
                await nc.close()


async def _client(node: RunningBroker, key: str) -> Client:
    return await Client(node.target, key).connect()


async def _collect(sub: object, into: list[Message]) -> None:
    async for msg in sub:  # type: ignore[attr-defined]
        into.append(msg)


async def _warm(client: Client, subject: str, *received: list[Message]) -> None:
    """Publishes ``subject`` until every list received it: the other nodes' interest has
    reached NATS (ephemeral delivery is at-most-once: events before that are not owed)."""

    async def arrived() -> bool:
        await client.publish(subject, {"probe": True})
        return all(any(m.subject == subject for m in got) for got in received)

    await eventually(arrived, interval=0.1)


async def test_three_nodes_keep_every_promise_and_survive_a_kill_9(
    nats_url: str, pg_fresh_dsn: str, redis_url: str
) -> None:
    """One cluster (three node processes start in seconds each): the promises first, then
    kill -9 of a node under load."""
    async with _cluster(nats_url, pg_fresh_dsn, redis_url) as cluster:
        await _roster(cluster)
        await _promises(cluster)
        await _kill_9_under_load(cluster)
        await _roster(cluster, gone=cluster.nodes[0])


async def _roster(cluster: Cluster, gone: RunningBroker | None = None) -> None:
    """Every live node lists the live nodes (their heartbeats), and only them: a killed one
    drops out. An org-admin's status lists none; an agent may not read the status."""
    live = [n for n in cluster.nodes if n is not gone]
    admins = [await _client(n, cluster.keys["admin"]) for n in live]
    org_admin = await _client(live[0], cluster.keys["acme-admin"])
    agent = await _client(live[0], cluster.keys["acme"])
    try:
        ids = {(await a.admin.status()).node_id for a in admins}

        async def everyone_sees_the_live_nodes() -> bool:
            for a in admins:
                nodes = (await a.admin.status()).nodes
                if {n.node_id for n in nodes} != ids:
                    return False
                assert all(not n.card_unknown and n.listen and n.version for n in nodes)
            return True

        await eventually(everyone_sees_the_live_nodes, timeout=15)
        nodes = (await admins[0].admin.status()).nodes
        assert len({n.worker_id for n in nodes}) == len(ids)  # each its own leased id
        status = await org_admin.admin.status()
        assert status.node_id in ids and status.nodes == ()
        with pytest.raises(PermissionDenied):
            await agent.admin.status()
    finally:
        for c in (*admins, org_admin, agent):
            await c.close()


async def _promises(cluster: Cluster) -> None:
    n0, n1, n2 = cluster.nodes
    k = cluster.keys
    pub = await _client(n0, k["acme"])
    acme1 = await _client(n1, k["acme"])
    acme2 = await _client(n2, k["acme"])
    globex1 = await _client(n1, k["globex"])
    globex_pub = await _client(n0, k["globex"])
    admin = await _client(n2, k["admin"])
    try:
        everything = await acme1.subscription("orders.>")
        eu_only = await acme2.subscription("orders.*.eu")
        theirs = await globex1.subscription(">")
        got_all: list[Message] = []
        got_eu: list[Message] = []
        got_theirs: list[Message] = []
        tasks = [
            asyncio.create_task(_collect(everything, got_all)),
            asyncio.create_task(_collect(eu_only, got_eu)),
            asyncio.create_task(_collect(theirs, got_theirs)),
        ]
        await _warm(pub, "orders.probe.eu", got_all, got_eu)
        await _warm(globex_pub, "probe", got_theirs)
        for got in (got_all, got_eu, got_theirs):
            got.clear()
        ids = []
        for n in range(10):
            ids.append(await pub.publish("orders.a.eu", {"n": n}))
            ids.append(await pub.publish("orders.b.us", {"n": n}))
        # globex's own event on the same node: what globex's '>' receives, and only it.
        marker = await globex_pub.publish("orders.a.eu", {"marker": True})
        await eventually(lambda: len(got_all) >= 20 and len(got_eu) >= 10 and got_theirs)
        await _warm(pub, "orders.probe.eu", got_all, got_eu)  # nothing else is on its way
        for task in tasks:
            task.cancel()
        got_all = [m for m in got_all if m.subject != "orders.probe.eu"]
        got_eu = [m for m in got_eu if m.subject != "orders.probe.eu"]
        got_theirs = [m for m in got_theirs if m.subject != "probe"]
        # Ephemeral fan-out crosses nodes, with wildcards and per-subject order.
        assert sorted(m.id for m in got_all) == sorted(ids)
        for subject in ("orders.a.eu", "orders.b.us"):
            order = [m.data["n"] for m in got_all if m.subject == subject]
            assert order == list(range(10))
        assert [m.data["n"] for m in got_eu] == list(range(10))
        assert {m.subject for m in got_eu} == {"orders.a.eu"}
        assert [m.id for m in got_theirs] == [marker]  # no wildcard crosses orgs

        # History, from PostgreSQL, on a third node: acme's only.
        async def history(client: Client, pattern: str) -> list[int]:
            return [e.id async for e in client.query_events(pattern)]

        await eventually(lambda: _has(history(acme2, "orders.>"), set(ids)), timeout=15)
        assert marker not in await history(acme2, "orders.>")
        await eventually(lambda: _has(history(globex1, ">"), {marker}))
        assert not set(await history(globex1, ">")) & set(ids)  # none of acme's

        # One durable served by streams on two other nodes: every event delivered and acked.
        work1 = await acme1.subscription("jobs.>", durable="work")
        work2 = await acme2.subscription("jobs.>", durable="work")
        worked: list[Message] = []

        async def work(sub: object) -> None:
            async for msg in sub:  # type: ignore[attr-defined]
                worked.append(msg)
                await msg.ack()

        workers = [asyncio.create_task(work(work1)), asyncio.create_task(work(work2))]
        jobs = {await pub.publish(f"jobs.{n % 3}", {"n": n}) for n in range(30)}
        await eventually(lambda: {m.id for m in worked} >= jobs, timeout=30)
        assert {m.id for m in worked} == jobs
        for task in workers:
            task.cancel()

        # A policy set put through one node is in force on every node.
        shut = 'policy shut on "orders.shut.>" { deny publish }\n'
        await admin.admin.put_policies({"shut.policy": shut})

        async def refused_everywhere() -> bool:
            for client in (pub, acme1, acme2):
                with contextlib.suppress(PermissionDenied):
                    await client.publish("orders.shut.x", {"n": 0})
                    return False
            return True

        await eventually(refused_everywhere, timeout=10)
        await pub.publish("orders.open.x", {"n": 1})  # the rest still flows
    finally:
        for c in (pub, acme1, acme2, globex1, globex_pub, admin):
            await c.close()


async def _has(ids: object, want: set[int]) -> bool:
    return want <= set(await ids)  # type: ignore[misc]


async def _kill_9_under_load(cluster: Cluster) -> None:
    """Publishers on two nodes, one of them given a second node to fail over to; the first
    node is killed: both carry on (one through its second node), and every event either
    was told stored is stored (history read on the third node). A durable has streams on
    the first node (which never acks) and the second: what the first held is redelivered
    to the second."""
    n0, n1, n2 = cluster.nodes
    k = cluster.keys
    holder, worker, jobs_pub = [await _client(n, k["acme"]) for n in (n0, n1, n2)]
    held: list[Message] = []
    done: set[int] = set()

    async def hold(sub: object) -> None:
        async for msg in sub:  # type: ignore[attr-defined]
            held.append(msg)  # never acked: pending when its node dies

    async def work(sub: object) -> None:
        async for msg in sub:  # type: ignore[attr-defined]
            done.add(msg.id)
            await msg.ack()

    durable = {"durable": "kjobs", "ack_wait": 2.0}
    streams = [
        asyncio.create_task(hold(await holder.subscription("kjobs.>", **durable))),  # type: ignore[arg-type]
        asyncio.create_task(work(await worker.subscription("kjobs.>", **durable))),  # type: ignore[arg-type]
    ]
    jobs = {await jobs_pub.publish(f"kjobs.{n % 3}", {"n": n}) for n in range(40)}
    await eventually(lambda: held and len(held) + len(done) >= len(jobs))
    acked: dict[str, list[int]] = {"zero": [], "one": []}
    stop = asyncio.Event()

    async def publisher(targets: list[RunningBroker], name: str) -> None:
        client = await Client([t.target for t in targets], k["acme"]).connect()
        try:
            n = 0
            while not stop.is_set():
                n += 1
                with contextlib.suppress(LockgateError):  # not acknowledged: not counted
                    acked[name].append(await client.publish(f"load.{name}", {"n": n}))
        finally:
            await client.close()

    tasks = [
        asyncio.create_task(publisher([n0, n1], "zero")),
        asyncio.create_task(publisher([n1], "one")),
    ]
    await eventually(lambda: len(acked["zero"]) >= 50 and len(acked["one"]) >= 50)
    await n0.kill()  # kill -9
    before = {name: len(ids) for name, ids in acked.items()}
    # Both carry on: the first one's client through n1.
    await eventually(lambda: all(len(acked[n]) >= before[n] + 50 for n in acked), timeout=20)
    stop.set()
    await asyncio.gather(*tasks)
    # The durable's pending events on the dead node: redelivered to the live stream.
    await eventually(lambda: done >= jobs, timeout=20)
    for task in streams:
        task.cancel()
    for client in (worker, jobs_pub):
        await client.close()
    with contextlib.suppress(Exception):  # its node is gone
        await asyncio.wait_for(holder.close(), 5)
    reader = await _client(n2, k["acme"])
    try:

        async def stored() -> set[int]:
            return {e.id async for e in reader.query_events("load.>", page_size=1000)}

        async def all_stored() -> bool:
            every = {i for ids in acked.values() for i in ids}
            gone = every - await stored()
            assert not gone, f"{len(gone)} of {len(every)} acknowledged events missing"
            return True

        await eventually(all_stored, timeout=20)
    finally:
        await reader.close()
