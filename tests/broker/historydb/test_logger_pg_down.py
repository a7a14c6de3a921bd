"""PostgreSQL unreachable (a fault-injecting proxy between the logger and the server): the
logger retries, acks nothing it did not commit, its lag grows and is visible, and after
recovery every event is in PostgreSQL exactly once."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio
from nats.aio.client import Client

from lockgate.broker.historydb.logger import MessageLogger
from lockgate.broker.store.pg_engine import connect_pool
from tests.broker.historydb.conftest import append, event, make_batch
from tests.support import eventually
from tests.support.tcp_proxy import TcpProxy


@pytest_asyncio.fixture
async def direct(pg_fresh_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(pg_fresh_dsn, min_size=1, max_size=2)
    yield p
    await p.close()


async def test_postgresql_down_then_back_every_event_once(
    nc: Client, pg_fresh_dsn: str, direct: asyncpg.Pool
) -> None:
    parts = urllib.parse.urlsplit(pg_fresh_dsn)
    async with TcpProxy(f"{parts.hostname}:{parts.port or 5432}") as proxy:
        via = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}@{proxy.target}"))
        pool = await connect_pool(via, min_size=1, max_size=2)
        logger = MessageLogger(nc, pool, lag_interval=0.05, retry_min=0.05, retry_max=0.2)
        await logger.start()
        try:
            await append(nc, make_batch("acme", "before", [event(f"b{i}") for i in range(10)]))
            await eventually(lambda: _count(direct, 10), what="the first batch logged")
            # ... and acked (its commit answered before the cut: otherwise it is retried,
            # rightly, and counted in the lag).
            await eventually(lambda: logger.stats.messages == 1, what="the first batch acked")

            await proxy.down()
            for n in range(5):
                await append(
                    nc, make_batch("acme", "during", [event(f"d{n}.{i}") for i in range(100)])
                )
            # The lag grows and is visible while nothing reaches PostgreSQL.
            await eventually(lambda: logger.lag == 5, what="a lag of 5 batches")
            await eventually(lambda: logger.stats.write_failures >= 2, what="retries")
            assert await direct.fetchval("SELECT count(*) FROM history_events") == 10
            info = await nc.jetstream().consumer_info("LOCKGATE_LOG", "lockgate-logger")
            assert info.ack_floor.stream_seq == 1  # nothing acked that was not committed

            # Back: the retried batches and a new one, each once.
            proxy.up()
            await append(nc, make_batch("acme", "after", [event(f"a{i}") for i in range(10)]))
            await eventually(lambda: _count(direct, 520), what="every event logged", timeout=20)
            await eventually(lambda: logger.lag == 0, what="lag 0")
            total, distinct = await direct.fetchrow(
                "SELECT count(*), count(DISTINCT id) FROM history_events"
            )
            assert (total, distinct) == (520, 520)
        finally:
            await logger.stop()
            pool.terminate()  # not a graceful close: it waits on connects to a dead proxy


async def _count(pool: asyncpg.Pool, n: int) -> bool:
    if await pool.fetchval("SELECT to_regclass('history_events')") is None:
        return False
    return bool(await pool.fetchval("SELECT count(*) FROM history_events") >= n)
