"""Worker ids under leases: a node alone uses 0; cluster nodes each lease a free one (two
nodes on one Redis prefix never share one); a pinned id in use refuses the start; a node that
cannot renew (Redis down) or lost its lease issues no ids (publishes fail closed) and an
unpinned one moves to another free id."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.config import Config, ConfigError
from lockgate.broker.errors import Unavailable
from lockgate.broker.leases import LocalLeases, RedisLeases, worker_id_lease
from lockgate.broker.node import Broker
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.broker.workerid import WorkerIds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def worker_of(event_id: int) -> int:
    return (event_id >> 12) & 1023


def event(eid: str) -> cloudevent_pb2.CloudEvent:
    return cloudevent_pb2.CloudEvent(id=eid, source="/w", spec_version="1.0", type="t")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_node_alone_uses_0_while_its_lease_holds() -> None:
    clock = Clock()
    w = WorkerIds(LocalLeases(clock=clock), "n1", pinned=None, shared=False, clock=clock)
    await w.take()
    assert w.worker_id == 0
    w.check()
    clock.now += 14.9
    w.check()
    clock.now += 0.2  # not renewed within its TTL: it might be somebody else's now
    with pytest.raises(Unavailable) as exc:
        w.check()
    assert "holds no worker id" in exc.value.message
    assert await w.renew()
    w.check()


async def test_shared_leases_give_every_node_its_own_id() -> None:
    clock = Clock()
    leases = LocalLeases(clock=clock)
    nodes = [WorkerIds(leases, f"n{i}", pinned=None, shared=True, clock=clock) for i in range(20)]
    for w in nodes:
        await w.take()
    assert len({w.worker_id for w in nodes}) == 20


async def test_a_lost_lease_stops_ids_and_an_unpinned_node_moves_on() -> None:
    clock = Clock()
    leases = LocalLeases(clock=clock)
    moved: list[int] = []
    free = WorkerIds(leases, "free", pinned=None, shared=True, clock=clock)
    pinned = WorkerIds(leases, "pinned", pinned=5, shared=True, clock=clock)
    await free.take()
    await pinned.take()
    free.on_change = moved.append
    old = free.worker_id
    clock.now += 16  # both stalled past their TTL; others take their ids
    assert await leases.acquire(worker_id_lease(old), "thief", 15.0)
    assert await leases.acquire(worker_id_lease(5), "thief", 15.0)
    assert await free.renew()
    assert moved == [free.worker_id] and free.worker_id != old
    free.check()
    assert not await pinned.renew()
    with pytest.raises(Unavailable) as exc:
        pinned.check()
    assert "the lease on worker id 5 went to another node" in exc.value.message
    await leases.release(worker_id_lease(5), "thief")
    assert await pinned.renew()
    pinned.check()


async def test_redis_down_at_start_fails_publishes_closed_not_the_start() -> None:
    leases = RedisLeases(f"redis://127.0.0.1:{closed_port()}/0")
    w = WorkerIds(leases, "n", pinned=None, shared=True)
    try:
        await w.take()
        with pytest.raises(Unavailable) as exc:
            w.check()
        assert "the Redis leases failed" in exc.value.message
        assert not await w.renew()
    finally:
        await leases.close()


def config_out_of_range() -> None:
    from lockgate.broker.config_load import load_config

    load_config(flags={"worker_id": 1024}, env={})


def test_a_worker_id_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        config_out_of_range()
    assert exc.value.message == "worker_id = 1024 is out of range"


# -- nodes on one Redis ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    yield f"lockgate-test:{uuid.uuid4().hex}:"


def node(path: Path, redis_url: str, prefix: str, worker: int = -1) -> Broker:
    path.mkdir(exist_ok=True)
    config = Config(data_dir=str(path), worker_id=worker, limiter=redis_url)
    leases = RedisLeases(redis_url, prefix=prefix)
    return Broker(config, SqliteStore(path, fsync="never"), leases=leases)


async def test_two_nodes_on_one_redis_never_share_a_worker_id(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    a = node(tmp_path / "a", redis_url, prefix)
    b = node(tmp_path / "b", redis_url, prefix)
    await a.start()
    await b.start()
    try:
        assert a.worker.worker_id != b.worker.worker_id
        out_a = await a.publish(DEV_PRINCIPAL, "w.x", [event("1")])
        out_b = await b.publish(DEV_PRINCIPAL, "w.x", [event("2")])
        assert worker_of(out_a.ids[0]) == a.worker.worker_id
        assert worker_of(out_b.ids[0]) == b.worker.worker_id

        taken = node(tmp_path / "c", redis_url, prefix, worker=a.worker.worker_id)
        with pytest.raises(ConfigError) as exc:
            await taken.start()
        assert exc.value.message == f"worker id {a.worker.worker_id} is in use by another node"
        await taken.leases.close()

        # a stalls past its TTL and another holder takes its id: a moves to a free one.
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_url)
        old = a.worker.worker_id
        await r.delete(f"{prefix}lease:{worker_id_lease(old)}")
        await r.aclose()
        thief = RedisLeases(redis_url, prefix=prefix)
        assert await thief.acquire(worker_id_lease(old), "thief", 15.0)
        assert await a.worker.renew()
        assert a.worker.worker_id not in (old, b.worker.worker_id)
        moved = await a.publish(DEV_PRINCIPAL, "w.x", [event("3")])
        assert worker_of(moved.ids[0]) == a.worker.worker_id
        assert moved.ids[0] > out_a.ids[0]
        await thief.close()
    finally:
        await b.stop()
        await a.stop()
        await a.leases.close()
        await b.leases.close()


async def test_a_pinned_node_that_lost_its_lease_fails_publishes_closed(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    a = node(tmp_path / "a", redis_url, prefix, worker=9)
    await a.start()
    thief = RedisLeases(redis_url, prefix=prefix)
    try:
        await a.publish(DEV_PRINCIPAL, "w.x", [event("1")])
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_url)
        await r.delete(f"{prefix}lease:{worker_id_lease(9)}")
        await r.aclose()
        assert await thief.acquire(worker_id_lease(9), "thief", 15.0)
        assert not await a.worker.renew()
        with pytest.raises(Unavailable) as exc:
            await a.publish(DEV_PRINCIPAL, "w.x", [event("2")])
        assert exc.value.reason == "UNAVAILABLE"
        assert "the lease on worker id 9 went to another node" in exc.value.message
        await thief.release(worker_id_lease(9), "thief")
        assert await a.worker.renew()
        out = await a.publish(DEV_PRINCIPAL, "w.x", [event("2")])
        assert worker_of(out.ids[0]) == 9
    finally:
        await thief.close()
        await a.stop()
        await a.leases.close()
