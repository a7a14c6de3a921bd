"""PgStore under the broker's own engines: a broker whose log is SQLite and whose metadata
(durables, dead letters, keys, policies, audit) is PostgreSQL, as a cluster node's is beside
its JetStream log. Acks, redeliveries, dead letters and a restart behave as on SQLite alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.config import Config
from lockgate.broker.delivery import DurableSession
from lockgate.broker.node import Broker
from lockgate.broker.store import ConsumerRecord, DeadLetterRecord, EventLog
from lockgate.broker.store.postgres import PgStore
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from tests.support import eventually

# The EventLog's methods go to the log, the rest to the metadata store.
_LOG = frozenset(n for n in vars(EventLog) if not n.startswith("_"))


class _Hybrid:
    """A test's composition of a log and a metadata store (cluster mode has its own)."""

    def __init__(self, log: SqliteStore, meta: PgStore) -> None:
        self.log, self.meta = log, meta

    def __getattr__(self, name: str) -> object:
        return getattr(self.log if name in _LOG else self.meta, name)

    async def open(self) -> None:
        await self.log.open()
        await self.meta.open()

    async def close(self) -> None:
        await self.meta.close()
        await self.log.close()


def _broker(where: Path, dsn: str) -> Broker:
    cfg = Config(data_dir=str(where), fsync="never", max_deliveries=2, ack_wait=30.0)
    store = _Hybrid(SqliteStore(where, fsync="never"), PgStore(dsn, max_size=4))
    return Broker(cfg, store)  # type: ignore[arg-type]


@pytest.fixture
async def broker(tmp_path: Path, pg_fresh_dsn: str) -> AsyncIterator[Broker]:
    b = _broker(tmp_path, pg_fresh_dsn)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def _take(session: DurableSession, n: int) -> list[broker_pb2.Delivery]:
    out: list[broker_pb2.Delivery] = []
    async with asyncio.timeout(5):
        while len(out) < n:
            body = await session.outbox.take()
            assert body is not None
            out.extend(broker_pb2.SubscribeResponse.FromString(body).deliveries)
    return out


async def _publish(broker: Broker, subject: str, n: int, tag: str = "e") -> list[int]:
    events = [
        cloudevent_pb2.CloudEvent(id=f"{tag}-{i}", source="t", spec_version="1.0", type="t")
        for i in range(n)
    ]
    return (await broker.publish(DEV_PRINCIPAL, subject, events)).ids


async def _stored(broker: Broker, name: str) -> ConsumerRecord:
    (rec,) = [r for r in await broker.store.load_consumers() if r.name == name]
    return rec


async def test_acks_and_dead_letters_are_stored(broker: Broker) -> None:
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    ids = await _publish(broker, "a.x", 3)
    await _take(session, 3)
    await broker.acknowledge(DEV_PRINCIPAL, "d", ids[:2], [])
    rec = await _stored(broker, "d")
    assert set(rec.pending) == {ids[2]} and rec.delivered_id == ids[2]
    consumer = session.consumer
    consumer.expire(time.monotonic() + 10_000)  # the ack wait passed: attempt 2
    (again,) = await _take(session, 1)
    assert (again.id, again.attempt) == (ids[2], 2)
    consumer.expire(time.monotonic() + 20_000)  # past max_deliveries=2: dead-lettered

    async def dead_letters() -> list[DeadLetterRecord]:
        return await broker.store.list_dead_letters("default", "d", (0, 0), 10)

    async def settled() -> bool:
        # The dead letter is stored first, then its pending row goes.
        return (await _stored(broker, "d")).pending == {}

    (dead,) = await eventually(dead_letters)
    assert (dead.id, dead.attempts) == (ids[2], 2)
    await eventually(settled)
    assert await broker.redrive("default", "d", None) == 1
    (back,) = await _take(session, 1)
    assert back.id == ids[2]


async def test_restart_keeps_position_and_pending(tmp_path: Path, pg_fresh_dsn: str) -> None:
    broker = _broker(tmp_path, pg_fresh_dsn)
    await broker.start()
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    ids = await _publish(broker, "a.x", 4)
    await _take(session, 4)
    await broker.acknowledge(DEV_PRINCIPAL, "d", ids[:3], [])
    await broker.stop()

    broker = _broker(tmp_path, pg_fresh_dsn)
    await broker.start()
    try:
        consumer = broker.durable("default", "d")
        assert set(consumer.pending) == {ids[3]}
        later = await _publish(broker, "a.x", 1, tag="later")
        session = consumer.attach(broker.config.max_message_bytes)
        got = await _take(session, 2)
        assert [(d.id, d.attempt) for d in got] == [(ids[3], 2), (later[0], 1)]
    finally:
        await broker.stop()
