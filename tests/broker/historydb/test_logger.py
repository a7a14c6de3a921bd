"""The message logger against real servers: its own JetStream, a fresh PostgreSQL database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from lockgate.broker.historydb.logger import MessageLogger
from lockgate.broker.store.pg_engine import connect_pool
from lockgate.broker.telemetry import Telemetry
from tests.broker.historydb.conftest import append, event, make_batch
from tests.support import eventually


@pytest_asyncio.fixture
async def pool(pg_fresh_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(pg_fresh_dsn, min_size=1, max_size=4)
    yield p
    await p.close()


async def rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    if await pool.fetchval("SELECT to_regclass('history_events')") is None:
        return []
    return list(await pool.fetch("SELECT * FROM history_events ORDER BY id"))


async def test_every_event_becomes_one_row_and_the_lag_drains(
    nc: Client, pool: asyncpg.Pool
) -> None:
    logger = MessageLogger(nc, pool, lag_interval=0.05)
    await logger.start()
    try:
        a = make_batch("acme", "orders.eu", [event("1", '{"n": 1}'), event("2", "not json")])
        b = make_batch("o.rg", "$dlq.x", [event("3", b"[1, 2]", "application/json")])
        await append(nc, a)
        await append(nc, b)
        got = await eventually(lambda: _count(pool, 3), what="3 rows")
        assert [(r["org"], r["subject"], r["ce_id"]) for r in got] == [
            ("acme", "orders.eu", "1"),
            ("acme", "orders.eu", "2"),
            ("o.rg", "$dlq.x", "3"),
        ]
        assert json.loads(got[0]["data"]) == {"n": 1}
        assert got[1]["data"] is None  # text that is not JSON: no jsonb, the bytes are kept
        assert json.loads(got[2]["data"]) == [1, 2]
        assert got[0]["policy_version"] == "v1"
        assert got[0]["event"] == event("1", '{"n": 1}').SerializeToString()
        await eventually(lambda: logger.lag == 0, what="lag 0")
        assert logger.stored_seq == 2
    finally:
        await logger.stop()


async def _count(pool: asyncpg.Pool, n: int) -> list[asyncpg.Record] | None:
    got = await rows(pool)
    return got if len(got) >= n else None


async def test_a_batch_handed_out_twice_is_stored_once(nc: Client, pool: asyncpg.Pool) -> None:
    """JetStream hands a batch out again when a logger died before its ack; here the same
    batch is simply in the log twice (another message id), which the writer sees alike."""
    batch = make_batch("acme", "dup", [event(str(i)) for i in range(50)])
    await append(nc, batch)
    await append(nc, batch, msg_id="again")
    one, two = MessageLogger(nc, pool, fetch_size=1), MessageLogger(nc, pool, fetch_size=1)
    await one.start()
    await two.start()
    try:
        await eventually(lambda: _lag_zero(one), what="lag 0")
        assert await pool.fetchval("SELECT count(*) FROM history_events") == 50
        assert one.stats.events + two.stats.events == 50
        assert one.stats.messages + two.stats.messages == 2
    finally:
        await one.stop()
        await two.stop()


async def _lag_zero(logger: MessageLogger) -> bool:
    return await logger.measure_lag() == 0


async def test_a_message_that_is_not_a_batch_is_skipped_not_retried(
    nc: Client, pool: asyncpg.Pool
) -> None:
    js = nc.jetstream()
    await js.publish("lglog.acme.x", b"junk", headers={"Lg-First": "1"})
    await js.publish(
        "lglog.acme.y",
        b"\x12\x03\x0d\x00\x00",
        headers={"Lg-First": "5", "Lg-Last": "5", "Lg-Count": "1"},
    )
    good = make_batch("acme", "after", [event("ok")])
    await append(nc, good)
    logger = MessageLogger(nc, pool)
    await logger.start()
    try:
        got = await eventually(lambda: _count(pool, 1))
        assert [r["ce_id"] for r in got] == ["ok"]
        await eventually(lambda: _lag_zero(logger))
        assert logger.stats.skipped == 2
    finally:
        await logger.stop()


async def test_the_lag_is_a_metric(
    nc: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(otel_metrics, "get_meter", provider.get_meter)
    await append(nc, make_batch("acme", "m", [event("1")]))
    await append(nc, make_batch("acme", "m", [event("2")]))
    logger = MessageLogger(nc, pool, telemetry=Telemetry())
    assert await logger.measure_lag() == 2  # measured before it runs: nothing logged yet

    def lag() -> list[int]:
        data = reader.get_metrics_data()
        return [
            int(p.value)
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "lockgate.history.lag"
            for p in m.data.data_points
        ]

    assert lag() == [2]
    await logger.start()
    try:
        await eventually(lambda: lag() == [0], what="the lag metric at 0")
    finally:
        await logger.stop()
        provider.shutdown()


class _DiesBeforeItsAck(MessageLogger):
    """A logger whose node dies between its commit and its ack."""

    died = False

    async def _ack(self, msgs: list[Msg]) -> None:
        self.died = True  # after the commit; no ack reaches NATS


async def test_a_batch_committed_but_never_acked_comes_back_and_adds_nothing(
    nc: Client, pool: asyncpg.Pool
) -> None:
    await append(nc, make_batch("acme", "crash", [event(str(i)) for i in range(50)]))
    one = _DiesBeforeItsAck(nc, pool, ack_wait=1.0)
    await one.start()
    try:
        await eventually(lambda: one.died, what="committed, not acked")
    finally:
        await one.stop()
    assert await pool.fetchval("SELECT count(*) FROM history_events") == 50
    two = MessageLogger(nc, pool, ack_wait=1.0)
    await two.start()  # JetStream hands the batch out again after the ack wait
    try:
        await eventually(lambda: two.stats.messages == 1, what="the batch again")
        await eventually(lambda: _lag_zero(two), what="lag 0")
        assert two.stats.events == 0
        assert await pool.fetchval("SELECT count(*) FROM history_events") == 50
    finally:
        await two.stop()


async def test_the_backoff_stays_bounded_however_long_the_outage(nc: Client) -> None:
    logger = MessageLogger(nc, None, retry_min=0.001, retry_max=0.002)  # type: ignore[arg-type]
    await logger._sleep(100_000)  # an outage of days: still a short, finite sleep
