from __future__ import annotations

from pathlib import Path

import pytest

from broker import wire
from broker.ids import IdGenerator, id_for_time_ms
from broker.store import ApiKeyRecord, Batch, ConsumerRecord, DeadLetterRecord, RetentionRule
from broker.store.sqlite import SqliteStore


def make_batch(gen: IdGenerator, org: str, subject: str, n: int) -> Batch:
    ids = gen.next_block(n)
    sf = wire.subject_field(subject)
    body = b"".join(wire.delivery_frame(i, sf, b"\x0a\x01x") for i in ids)
    return Batch(ids[0], ids[-1], org, subject, n, "v1", body)


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path, fsync="os")
    await s.open()
    yield s  # type: ignore[misc]
    await s.close()


async def test_append_and_read(store: SqliteStore) -> None:
    gen = IdGenerator(0)
    a = make_batch(gen, "acme", "a.b", 3)
    b = make_batch(gen, "globex", "a.b", 2)
    c = make_batch(gen, "acme", "a.c", 4)
    await store.append([a, b])
    await store.append([c])
    assert await store.last_id() == c.last_id
    got = await store.read_batches("acme", 0)
    assert [x.first_id for x in got] == [a.first_id, c.first_id]
    assert await store.read_batches("acme", 0, subject="a.c") == [c]
    assert await store.read_batches("acme", a.last_id) == [c]
    middle = a.first_id + 1
    assert await store.batch_containing("acme", middle) == a
    assert await store.batch_containing("globex", middle) is None  # another org's event
    assert [i for i, _ in wire.split_frames(a.body)] == list(range(a.first_id, a.last_id + 1))


async def test_group_commit_of_concurrent_appends(store: SqliteStore) -> None:
    import asyncio

    gen = IdGenerator(0)
    batches = [make_batch(gen, "o", f"s.{i}", 2) for i in range(50)]
    await asyncio.gather(*(store.append([b]) for b in batches))
    assert len(await store.read_batches("o", 0, limit=1000)) == 50


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open()
    gen = IdGenerator(0)
    b = make_batch(gen, "o", "x", 2)
    await s.append([b])
    rec = ConsumerRecord("o", "d1", "x.>", cursor=b.first_id, pending={b.last_id: 2})
    await s.save_consumer(rec)
    await s.close()
    s2 = SqliteStore(tmp_path)
    await s2.open()
    assert await s2.last_id() == b.last_id
    (loaded,) = await s2.load_consumers()
    assert loaded.pending == {b.last_id: 2} and loaded.cursor == b.first_id
    assert await s2.delete_consumer("o", "d1")
    assert not await s2.delete_consumer("o", "d1")
    await s2.close()


async def test_dead_letters(store: SqliteStore) -> None:
    recs = [DeadLetterRecord("o", "d", i, 5, 1000 + i) for i in range(1, 6)]
    await store.add_dead_letters(recs)
    page = await store.list_dead_letters("o", "d", (0, 0), 3)
    assert [r.id for r in page] == [1, 2, 3]
    rest = await store.list_dead_letters("o", "", (page[-1].dead_ms, page[-1].id), 10)
    assert [r.id for r in rest] == [4, 5]
    assert await store.remove_dead_letters("o", "d", [2, 99]) == [2]
    assert sorted(await store.remove_dead_letters("o", "d", None)) == [1, 3, 4, 5]


async def test_keys(store: SqliteStore) -> None:
    rec = ApiKeyRecord("k1", "hash", "acme", "a1", ("admin",), 1)
    await store.put_key(rec)
    assert await store.get_key("k1") == rec
    assert await store.revoke_key("k1")
    assert (await store.get_key("k1")).revoked  # type: ignore[union-attr]
    assert not await store.revoke_key("nope")
    assert await store.get_key("nope") is None


async def test_retention(store: SqliteStore) -> None:
    gen = IdGenerator(0)
    batches = [make_batch(gen, "o", "keep.few", 1) for _ in range(20)]
    batches += [make_batch(gen, "o", "other", 1) for _ in range(5)]
    await store.append(batches)
    removed = await store.trim([RetentionRule("keep.>", 0, 5)], now_ms=0)
    assert removed == 15
    assert len(await store.read_batches("o", 0, subject="keep.few")) == 5
    assert len(await store.read_batches("o", 0, subject="other")) == 5
    # Max age: everything is older than "now + 1 hour" minus one minute.
    future = batches[-1].last_id
    assert future > id_for_time_ms(0)
    import time

    removed = await store.trim([RetentionRule(">", 60_000, 0)], int(time.time() * 1000) + 3_600_000)
    assert removed == 10
    assert await store.read_batches("o", 0) == []


async def test_policy_versions(store: SqliteStore) -> None:
    from broker.store import PolicyVersionRecord

    v1 = PolicyVersionRecord("aaa", 1, "dir", {"a.policy": "x"})
    v2 = PolicyVersionRecord("bbb", 2, "rpc", {"a.policy": "y"})
    await store.save_policy_version(v1, activate=True)
    await store.save_policy_version(v2, activate=True)
    await store.save_policy_version(v1, activate=True)  # a rollback re-activates, no new row
    versions = await store.list_policy_versions()
    assert [(v.version, v.active) for v in versions] == [("bbb", False), ("aaa", True)]
    assert versions[1].files == {"a.policy": "x"}
