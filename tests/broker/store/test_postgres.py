"""PgStore beyond the role contracts (tests/broker/contracts run those): several nodes on one
database, PostgreSQL going away and coming back, a newer schema and a closed store."""

from __future__ import annotations

import urllib.parse

import asyncpg
import pytest

from lockgate.broker.errors import FailedPrecondition, Unavailable
from lockgate.broker.store import ApiKeyRecord, AuditQuery, AuditRecord, ConsumerRecord
from lockgate.broker.store import PolicyVersionRecord as Version
from lockgate.broker.store.postgres import PgStore
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually


def _key(key_id: str) -> ApiKeyRecord:
    return ApiKeyRecord(key_id, "hash", "acme", "a1", ("admin",), 1)


async def test_nodes_share_one_database(pg_fresh_dsn: str) -> None:
    a, b = PgStore(pg_fresh_dsn, max_size=2), PgStore(pg_fresh_dsn, max_size=2)
    await a.open()
    await b.open()  # the schema is there already: nothing to migrate
    try:
        await a.put_key(_key("k1"))
        assert await b.get_key("k1") == _key("k1")
        await b.save_policy_version(Version("v1", 1, "rpc", {"p": "x"}), activate=True, org="acme")
        assert (await a.active_org_policies())["acme"].files == {"p": "x"}
        await a.create_consumer(ConsumerRecord("acme", "d", "x.>"))
        await a.change_consumer("acme", "d", delivered=[5, 6])
        # A takeover: another node loads what the owner wrote.
        (rec,) = await b.load_consumers()
        assert rec.pending == {5: 1, 6: 1}
        # Audit ids are unique across nodes and increase in each node's write order.
        for n in range(3):
            await a.append_audit([AuditRecord(n, f"a{n}")])
            await b.append_audit([AuditRecord(n, f"b{n}")])
        got = await a.query_audit(AuditQuery())
        assert len({r.id for r in got}) == 6
        for node in "ab":
            mine = [r.action for r in got if r.action.startswith(node)]
            assert mine == [f"{node}0", f"{node}1", f"{node}2"]
    finally:
        await a.close()
        await b.close()


def _via(proxy: TcpProxy, dsn: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)[0] + "@" + proxy.target
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def test_postgres_away_and_back(pg_fresh_dsn: str) -> None:
    parts = urllib.parse.urlsplit(pg_fresh_dsn)
    async with TcpProxy(f"{parts.hostname}:{parts.port or 5432}") as proxy:
        store = PgStore(_via(proxy, pg_fresh_dsn), max_size=2)
        await store.open()
        try:
            await store.create_consumer(ConsumerRecord("acme", "d", "x.>"))
            await proxy.down()
            with pytest.raises(Unavailable) as read:
                await store.get_key("k1")
            assert read.value.reason == "STORE_UNAVAILABLE"
            assert read.value.message.startswith("the PostgreSQL store failed to read a key")
            with pytest.raises(Unavailable):
                await store.put_key(_key("k1"))
            with pytest.raises(Unavailable):  # a write-behind change hears it too
                await store.change_consumer("acme", "d", delivered=[1])
            proxy.up()

            async def written() -> bool:
                try:
                    await store.put_key(_key("k2"))
                except Unavailable:
                    return False
                return True

            await eventually(written)  # the writer carried on; the pool reconnects
            assert await store.get_key("k2") == _key("k2")
            assert await store.get_key("k1") is None  # the failed write did not happen
            await store.change_consumer("acme", "d", delivered=[2])
            (rec,) = await store.load_consumers()
            assert rec.pending == {2: 1}
        finally:
            await store.close()


async def test_unreachable_at_open(pg_fresh_dsn: str) -> None:
    parts = urllib.parse.urlsplit(pg_fresh_dsn)
    async with TcpProxy(f"{parts.hostname}:{parts.port or 5432}") as proxy:
        await proxy.down()
        with pytest.raises(Unavailable) as info:
            await PgStore(_via(proxy, pg_fresh_dsn)).open()
    assert info.value.reason == "STORE_UNAVAILABLE"
    assert info.value.message.startswith("cannot connect to PostgreSQL at postgresql://")


async def test_a_newer_schema_is_refused_at_open(pg_fresh_dsn: str) -> None:
    store = PgStore(pg_fresh_dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(pg_fresh_dsn)
    try:
        await conn.execute("UPDATE lockgate_schema SET version = 99 WHERE component = 'metadata'")
    finally:
        await conn.close()
    with pytest.raises(FailedPrecondition) as info:
        await PgStore(pg_fresh_dsn).open()
    assert info.value.reason == "DATA_DIR_UNUSABLE"
    assert "metadata schema is version 99, newer than this Lockgate" in info.value.message


async def test_a_closed_store_refuses_writes(pg_fresh_dsn: str) -> None:
    store = PgStore(pg_fresh_dsn)
    await store.open()
    await store.put_key(_key("k1"))
    await store.close()
    with pytest.raises(Unavailable) as info:
        await store.put_key(_key("k2"))
    assert info.value.message == "the PostgreSQL store is closed"


async def test_a_shared_pool_stays_open(pg_fresh_dsn: str) -> None:
    from lockgate.broker.store.pg_engine import connect_pool

    pool = await connect_pool(pg_fresh_dsn, max_size=2)
    try:
        store = PgStore(pool=pool)
        await store.open()
        await store.put_key(_key("k1"))
        await store.close()
        assert await pool.fetchval("SELECT count(*) FROM api_keys") == 1
    finally:
        await pool.close()


async def test_a_silent_postgres_fails_writes_in_bounded_time(pg_fresh_dsn: str) -> None:
    parts = urllib.parse.urlsplit(pg_fresh_dsn)
    async with TcpProxy(f"{parts.hostname}:{parts.port or 5432}") as proxy:
        store = PgStore(_via(proxy, pg_fresh_dsn), max_size=2, command_timeout=0.5)
        await store.open()
        try:
            await store.put_key(_key("k1"))
            proxy.stall()  # connections stay open, nothing comes back
            with pytest.raises(Unavailable) as info:
                await store.put_key(_key("k2"))
            assert info.value.reason == "STORE_UNAVAILABLE"
            with pytest.raises(Unavailable):
                await store.get_key("k1")
            proxy.resume()
            await proxy.cut()  # the stalled connections go; new ones forward again

            async def written() -> bool:
                try:
                    await store.put_key(_key("k3"))
                except Unavailable:
                    return False
                return True

            await eventually(written)
            assert await store.get_key("k1") == _key("k1")
        finally:
            await store.close()
