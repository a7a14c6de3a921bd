"""The PostgreSQL engine: connecting (and the refusal when PostgreSQL is away) and the schema
migrations every PostgreSQL component runs at start, on a fresh database per test."""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest

from lockgate.broker.errors import FailedPrecondition, Unavailable
from lockgate.broker.store.pg_engine import (
    PgDatabase,
    PgOp,
    connect_pool,
    migrate,
    pg_errors,
    redact_dsn,
)

# Each step fails when run twice (no IF NOT EXISTS), so a step applied twice shows.
STEPS = [
    "CREATE TABLE t1 (x int); CREATE TABLE runs (step int)",
    "INSERT INTO runs VALUES (2); CREATE TABLE t2 (x int)",
    "INSERT INTO runs VALUES (3); ALTER TABLE t1 ADD COLUMN y int",
]


async def _version(dsn: str, component: str) -> int | None:
    pool = await connect_pool(dsn)
    try:
        v = await pool.fetchval(
            "SELECT version FROM lockgate_schema WHERE component = $1", component
        )
        return None if v is None else int(v)
    finally:
        await pool.close()


async def test_migrate_applies_each_step_once(pg_fresh_dsn: str) -> None:
    pool = await connect_pool(pg_fresh_dsn)
    try:
        await migrate(pool, "metadata", STEPS[:2])
        await migrate(pool, "metadata", STEPS[:2])  # idempotent: nothing left to apply
        assert await _version(pg_fresh_dsn, "metadata") == 2
        await migrate(pool, "metadata", STEPS)  # a newer Lockgate adds a step
        assert await _version(pg_fresh_dsn, "metadata") == 3
        assert [r["step"] for r in await pool.fetch("SELECT step FROM runs")] == [2, 3]
        # Components are versioned apart.
        await migrate(pool, "history", ["CREATE TABLE h (x int)"])
        assert await _version(pg_fresh_dsn, "history") == 1
        assert await _version(pg_fresh_dsn, "metadata") == 3
    finally:
        await pool.close()


async def test_concurrent_starts_migrate_once(pg_fresh_dsn: str) -> None:
    pools = [await connect_pool(pg_fresh_dsn, max_size=1) for _ in range(4)]
    try:
        await asyncio.gather(*(migrate(p, "metadata", STEPS) for p in pools))
        assert await _version(pg_fresh_dsn, "metadata") == 3
        assert sorted(r["step"] for r in await pools[0].fetch("SELECT step FROM runs")) == [2, 3]
    finally:
        for p in pools:
            await p.close()


async def test_a_failing_step_leaves_the_version_where_it_was(pg_fresh_dsn: str) -> None:
    pool = await connect_pool(pg_fresh_dsn)
    try:
        await migrate(pool, "metadata", STEPS[:1])
        broken = [*STEPS[:1], "CREATE TABLE t3 (x int); SELECT no_such_column FROM t1"]
        with pytest.raises(Unavailable):
            await migrate(pool, "metadata", broken)
        assert await _version(pg_fresh_dsn, "metadata") == 1
        assert await pool.fetchval("SELECT to_regclass('t3')") is None  # rolled back whole
    finally:
        await pool.close()


async def test_a_newer_schema_is_refused(pg_fresh_dsn: str) -> None:
    pool = await connect_pool(pg_fresh_dsn)
    try:
        await migrate(pool, "metadata", STEPS)
        with pytest.raises(FailedPrecondition) as info:
            await migrate(pool, "metadata", STEPS[:2])
        assert info.value.reason == "DATA_DIR_UNUSABLE"
        assert info.value.message == (
            "the PostgreSQL store's metadata schema is version 3, newer than this Lockgate "
            "understands (2)"
        )
        assert await _version(pg_fresh_dsn, "metadata") == 3
    finally:
        await pool.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_postgres_is_unavailable() -> None:
    dsn = f"postgresql://lg:s3cret@127.0.0.1:{_closed_port()}/x"
    with pytest.raises(Unavailable) as info:
        await connect_pool(dsn, timeout=2)
    assert info.value.reason == "STORE_UNAVAILABLE"
    assert info.value.message.startswith(
        "cannot connect to PostgreSQL at postgresql://lg:<redacted>@"
    )
    assert "s3cret" not in str(info.value)


async def test_a_server_that_never_answers_is_unavailable_in_bounded_time() -> None:
    # Accepts the TCP connection (the kernel's backlog) and never answers the start-up.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with pytest.raises(Unavailable) as info:
            await connect_pool(f"postgresql://lg@127.0.0.1:{port}/x", timeout=0.5)
    assert info.value.reason == "STORE_UNAVAILABLE"


async def test_failures_after_connecting_are_unavailable(pg_fresh_dsn: str) -> None:
    pool = await connect_pool(pg_fresh_dsn)
    await pool.close()
    with pytest.raises(Unavailable) as info:
        async with pg_errors("read the keys"):
            await pool.fetch("SELECT 1")
    assert info.value.message.startswith("the PostgreSQL store failed to read the keys: ")


def test_redact_dsn() -> None:
    assert redact_dsn("postgresql://u:pw@h:5432/d") == "postgresql://u:<redacted>@h:5432/d"
    assert redact_dsn("postgresql://u@h/d") == "postgresql://u@h/d"


async def test_close_waits_for_the_writes_in_progress(pg_fresh_dsn: str) -> None:
    db = PgDatabase(pg_fresh_dsn, component="t", steps=["CREATE TABLE t (x int)"])
    await db.open()

    def insert(x: int) -> PgOp:
        async def op(c: asyncpg.Connection) -> int:
            await c.execute("INSERT INTO t VALUES ($1)", x)
            return x

        return op

    first = db._enqueue(insert(1))
    await asyncio.sleep(0)  # the writer takes it: nothing queued, a transaction under way
    assert not db._queue and db._working
    await db.close()
    assert await first == 1
    conn = await asyncpg.connect(pg_fresh_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await conn.close()


async def test_a_failing_write_fails_its_group_and_the_writer_goes_on(pg_fresh_dsn: str) -> None:
    db = PgDatabase(pg_fresh_dsn, component="t", steps=["CREATE TABLE t (x int)"])
    await db.open()
    try:

        async def broken(c: asyncpg.Connection) -> None:
            await c.execute("INSERT INTO t VALUES (1)")
            raise ValueError("a bug in an op")

        async def fine(c: asyncpg.Connection) -> int:
            await c.execute("INSERT INTO t VALUES (2)")
            return int(await c.fetchval("SELECT count(*) FROM t"))

        together = [db._enqueue(broken), db._enqueue(fine)]  # one group: one transaction
        results = await asyncio.gather(*together, return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert await db._submit(fine) == 1  # the group was rolled back whole
    finally:
        await db.close()
