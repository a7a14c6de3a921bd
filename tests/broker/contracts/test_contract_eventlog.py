"""The :class:`broker.store.EventLog` contract, for every store backend."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from lockgate.broker import wire
from lockgate.broker.ids import IdGenerator, id_for_time_ms
from lockgate.broker.store import Batch, EventLog, LogPosition, RetentionRule
from tests.broker.contracts.contract_stores import make_batch, open_store, store

__all__ = ["open_store", "store"]


def _same(got: list[Batch], want: list[Batch]) -> bool:
    return [dataclasses.replace(b, seq=0) for b in got] == want


async def test_append_gives_sequences_in_commit_order(store: EventLog) -> None:
    gen = IdGenerator(0)
    a, b, c = (make_batch(gen, "o", f"s.{n}", 2) for n in range(3))
    base = store.committed_seq()
    first = store.append([a, b])
    second = store.append([c])
    assert await first == [base + 1, base + 2]
    assert await second == [base + 3]
    assert store.committed_seq() == base + 3
    got = await store.read_log("o", LogPosition(0))
    assert [x.seq for x in got] == [base + 1, base + 2, base + 3]


async def test_log_follows_commit_order_not_id_order(store: EventLog) -> None:
    gen = IdGenerator(0)
    early = make_batch(gen, "o", "x", 2)  # smaller ids ...
    late = make_batch(gen, "o", "x", 2)
    (s_late,) = await store.append([late])
    (s_early,) = await store.append([early])  # ... committed later
    assert s_early > s_late
    got = await store.read_log("o", LogPosition(0))
    assert [b.first_id for b in got] == [late.first_id, early.first_id]
    # A reader that stood after the first commit still finds the second.
    assert [b.first_id for b in await store.read_log("o", LogPosition(s_late + 1))] == [
        early.first_id
    ]
    # History stays by id.
    assert _same(await store.read_batches("o", 0), [early, late])


async def test_read_log_pages_and_filters_by_org(store: EventLog) -> None:
    gen = IdGenerator(0)
    mine = [make_batch(gen, "acme", "a", 1) for _ in range(5)]
    theirs = make_batch(gen, "globex", "a", 1)
    await store.append([*mine[:2], theirs, *mine[2:]])
    page = await store.read_log("acme", LogPosition(0), limit=3)
    assert _same(page, mine[:3])
    rest = await store.read_log("acme", LogPosition(page[-1].seq + 1), limit=3)
    assert _same(rest, mine[3:])
    assert await store.read_log("acme", LogPosition(rest[-1].seq + 1)) == []


async def test_position_after_id(store: EventLog) -> None:
    gen = IdGenerator(0)
    a = make_batch(gen, "o", "x", 3)
    b = make_batch(gen, "o", "x", 3)
    sa, sb = await store.append([a, b])
    middle = a.first_id + 1
    assert await store.position_after_id(middle) == LogPosition(sa, middle)
    assert await store.position_after_id(a.last_id) == LogPosition(sb, a.last_id)
    after_all = await store.position_after_id(b.last_id)
    assert after_all.seq > sb
    assert await store.read_log("o", after_all) == []


async def test_history_reads(store: EventLog) -> None:
    gen = IdGenerator(0)
    a = make_batch(gen, "acme", "a.b", 3)
    b = make_batch(gen, "globex", "a.b", 2)
    c = make_batch(gen, "acme", "a.c", 4)
    await store.append([a, b])
    await store.append([c])
    assert await store.last_id() == c.last_id
    assert _same(await store.read_batches("acme", 0), [a, c])
    assert _same(await store.read_batches("acme", 0, subject="a.c"), [c])
    assert _same(await store.read_batches("acme", a.last_id), [c])
    middle = a.first_id + 1
    found = await store.batch_containing("acme", middle)
    assert found is not None and _same([found], [a])
    assert await store.batch_containing("globex", middle) is None  # another org's event
    assert [i for i, _ in wire.split_frames(a.body)] == list(range(a.first_id, a.last_id + 1))
    assert _same(await store.recent_batches(a.last_id), [b, c])


async def test_group_commit_of_concurrent_appends(store: EventLog) -> None:
    gen = IdGenerator(0)
    batches = [make_batch(gen, "o", f"s.{i}", 2) for i in range(50)]
    seqs = await asyncio.gather(*(store.append([b]) for b in batches))
    flat = [s for (s,) in seqs]
    assert flat == sorted(flat) and len(set(flat)) == 50
    assert len(await store.read_log("o", LogPosition(0), limit=1000)) == 50


async def test_sequences_survive_reopen(open_store: object) -> None:
    gen = IdGenerator(0)
    async with open_store() as s:  # type: ignore[operator]
        (first,) = await s.append([make_batch(gen, "o", "x", 1)])
    async with open_store() as s:  # type: ignore[operator]
        assert s.committed_seq() == first
        (second,) = await s.append([make_batch(gen, "o", "x", 1)])
        assert second > first


async def test_retention(store: EventLog) -> None:
    gen = IdGenerator(0)
    batches = [make_batch(gen, "o", "keep.few", 1) for _ in range(20)]
    batches += [make_batch(gen, "o", "other", 1) for _ in range(5)]
    await store.append(batches)
    removed = await store.trim([RetentionRule("keep.>", 0, 5)], now_ms=0)
    assert removed == 15
    assert len(await store.read_batches("o", 0, subject="keep.few")) == 5
    assert len(await store.read_batches("o", 0, subject="other")) == 5
    assert batches[-1].last_id > id_for_time_ms(0)
    # Max age: everything is older than "now + 1 hour" minus one minute.
    later = int(time.time() * 1000) + 3_600_000
    assert await store.trim([RetentionRule(">", 60_000, 0)], later) == 10
    assert await store.read_batches("o", 0) == []


async def test_filtered_scans_in_log_and_id_order(store: EventLog) -> None:
    gen = IdGenerator(0)
    batches = [
        make_batch(gen, "acme", f"{'hit' if n % 3 == 0 else 'miss'}.{n}", 2) for n in range(9)
    ]
    other = make_batch(gen, "globex", "hit.x", 1)
    await store.append([*batches[:5], other])
    await store.append(batches[5:])
    hits = [b for b in batches if b.subject.startswith("hit.")]

    def hit(subject: str) -> bool:
        return subject.startswith("hit.")

    step = await store.scan_log("acme", LogPosition(0), hit, limit=64, budget=4)
    assert _same(step.batches, hits[:2]) and not step.done  # 4 looked at: hits 0 and 3
    rest = await store.scan_log("acme", LogPosition(step.next), hit, limit=64, budget=100)
    assert _same(rest.batches, hits[2:]) and rest.done
    first = await store.scan_log("acme", LogPosition(0), hit, limit=1, budget=100)
    assert _same(first.batches, hits[:1]) and not first.done
    assert first.next == first.batches[0].seq + 1
    # By id: a cursor inside a batch still finds the rest of that batch.
    by_id = await store.scan_batches("acme", hits[1].first_id, hit, limit=64)
    assert _same(by_id.batches, hits[1:]) and by_id.done
    below = await store.scan_batches("acme", 0, hit, before_id=hits[2].first_id, limit=64)
    assert _same(below.batches, hits[:2]) and below.done
    capped = await store.scan_batches("acme", 0, hit, limit=64, budget=4)
    assert _same(capped.batches, hits[:2]) and capped.next == batches[3].last_id
