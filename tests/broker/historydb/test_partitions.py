"""Daily partitions: created ahead, on demand for any day, once under concurrency, dropped
whole by retention; and the writer's exactly-once INSERT."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from lockgate.broker import wire
from lockgate.broker.historydb.rows import ROW_COLUMNS, event_rows
from lockgate.broker.historydb.schema import (
    day_of_ms,
    drop_days_before,
    ensure_days,
    is_partitioned,
    partition_days,
)
from lockgate.broker.historydb.writer import DAYS_AHEAD, HistoryWriter
from lockgate.broker.ids import id_for_time_ms, time_ms_of
from lockgate.broker.store import Batch
from lockgate.broker.store.pg_engine import connect_pool
from tests.broker.historydb.conftest import event


def _ms(year: int, month: int, day: int) -> int:
    return int(dt.datetime(year, month, day, 12, tzinfo=dt.UTC).timestamp() * 1000)


def batch_at(unix_ms: int, n: int) -> Batch:
    ids = [id_for_time_ms(unix_ms) + i for i in range(n)]
    raw = [event(str(i), "1").SerializeToString() for i in ids]
    body = b"".join(wire.delivery_frames(ids, wire.subject_field("s"), raw))
    return Batch(ids[0], ids[-1], "acme", "s", n, "v", body)


async def test_days_ahead_on_demand_once_and_dropped(pg_fresh_dsn: str) -> None:
    pools = [await connect_pool(pg_fresh_dsn, min_size=1, max_size=2) for _ in range(4)]
    try:
        writers = [HistoryWriter(p) for p in pools]
        await asyncio.gather(*(w.prepare() for w in writers))  # four nodes start at once
        pool = pools[0]
        assert await is_partitioned(pool)
        today = day_of_ms(int(dt.datetime.now(dt.UTC).timestamp() * 1000))
        assert set(range(today - 1, today + DAYS_AHEAD + 1)) <= await partition_days(pool)

        # Four writers reach the same new days at once: each is created once, no error.
        old = [batch_at(_ms(2025, 1, 1), 3), batch_at(_ms(2025, 1, 2), 2)]
        counts = await asyncio.gather(*(w.write(event_rows(b)) for w in writers for b in old))
        assert sum(counts) == 5  # every row inserted by exactly one writer
        days = await partition_days(pool)
        assert {day_of_ms(_ms(2025, 1, 1)), day_of_ms(_ms(2025, 1, 2))} <= days
        await asyncio.gather(*(ensure_days(p, [today + 9]) for p in pools))
        assert today + 9 in await partition_days(pool)

        # Retention drops the whole days before the cut, not the day it falls in.
        assert await drop_days_before(pool, _ms(2025, 1, 2)) == 1
        assert await pool.fetchval("SELECT count(*) FROM history_events") == 2
    finally:
        for p in pools:
            await p.close()


async def test_a_write_is_all_or_nothing_and_once(pg_fresh_dsn: str) -> None:
    pool = await connect_pool(pg_fresh_dsn, min_size=1, max_size=2)
    try:
        writer = HistoryWriter(pool)
        await writer.prepare()
        b = batch_at(_ms(2026, 6, 1), 4)
        assert await writer.write(event_rows(b)) == 4
        assert await writer.write(event_rows(b)) == 0  # the direct COPY fails, nothing added
        # Half of it stored before, half new (two messages of one fetch, one redelivered).
        c = batch_at(_ms(2026, 6, 1) + 1, 2)
        assert await writer.write([*event_rows(b)[2:], *event_rows(c)]) == 2
        # JSON and not-JSON mixed in one write: the forgiving path keeps every row.
        timed = event("j", '{"a": 1}')
        timed.attributes["time"].ce_string = "2025-03-01T12:00:00.123456Z"
        raw = [timed, event("t", "plain text"), event("n", '"\\u0000"')]
        ids = [b.last_id + 1, b.last_id + 2, b.last_id + 3]
        body = b"".join(
            wire.delivery_frames(ids, wire.subject_field("s"), [e.SerializeToString() for e in raw])
        )
        mixed = Batch(ids[0], ids[-1], "acme", "s", 3, "v", body)
        assert await writer.write(event_rows(mixed)) == 3
        data = await pool.fetch(
            "SELECT ce_id, data::text FROM history_events WHERE id = ANY($1) ORDER BY id", ids
        )
        assert [tuple(r) for r in data] == [("j", '{"a": 1}'), ("t", None), ("n", None)]
        stored, ce_time = await pool.fetchrow(
            "SELECT stored_at, ce_time FROM history_events WHERE id = $1", ids[0]
        )
        assert abs(stored.timestamp() * 1000 - _ms(2026, 6, 1)) < 5
        assert ce_time == dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
        # The same through the direct COPY (every payload JSON): the same columns.
        fast = event("f", "[1]")
        fast.attributes["time"].ce_string = "2025-03-01T12:00:00.123456Z"
        fid = ids[-1] + 1
        body = wire.delivery_frame(fid, wire.subject_field("s"), fast.SerializeToString())
        assert await writer.write(event_rows(Batch(fid, fid, "acme", "s", 1, "v", body))) == 1
        row = await pool.fetchrow("SELECT * FROM history_events WHERE id = $1", fid)
        assert row["ce_time"] == ce_time and row["data"] == "[1]"
        assert row["stored_at"] == dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            milliseconds=time_ms_of(fid)
        )
    finally:
        await pool.close()


async def test_a_write_that_fails_commits_none_of_its_rows(pg_fresh_dsn: str) -> None:
    pool = await connect_pool(pg_fresh_dsn, min_size=1, max_size=1)
    try:
        writer = HistoryWriter(pool)
        await writer.prepare()
        rows = event_rows(batch_at(_ms(2026, 6, 2), 3))
        at = ROW_COLUMNS.index("event")
        bad = [*rows[:2], (*rows[2][:at], "not bytes", *rows[2][at + 1 :])]
        with pytest.raises(TypeError):  # asyncpg refuses to encode the third row
            await writer.write(bad)  # type: ignore[arg-type]
        assert await pool.fetchval("SELECT count(*) FROM history_events") == 0
        # The write's integer timestamps were its own: the pool's one connection has its
        # datetime codec back, after a failed write as after a good one.
        now = dt.datetime.now(dt.UTC)
        assert await pool.fetchval("SELECT $1::timestamptz", now) == now
        assert await writer.write(rows) == 3
        assert await pool.fetchval("SELECT $1::timestamptz", now) == now
    finally:
        await pool.close()


async def test_retention_before_the_schema_exists_drops_nothing(pg_fresh_dsn: str) -> None:
    pool = await connect_pool(pg_fresh_dsn, min_size=1, max_size=1)
    try:
        assert await drop_days_before(pool, _ms(2026, 1, 1)) == 0
    finally:
        await pool.close()
