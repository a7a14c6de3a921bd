"""The :class:`broker.event_log.EventLog` contract, for every store backend and the cluster's
JetStream log. The JetStream log is the tailing part only: its history reads by id
(``read_batches``, ``scan_batches``, ``batch_containing``) are the message logger's, in
PostgreSQL, so the tests of those (``history_log``) skip it."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from lockgate.broker import wire
from lockgate.broker.ids import IdGenerator, id_for_time_ms
from lockgate.broker.store import Batch, EventLog, LogPosition, RetentionRule
from tests.broker.contracts.contract_stores import (
    event_log,
    history_log,
    make_batch,
    open_log,
)

__all__ = ["event_log", "history_log", "open_log"]


def _same(got: list[Batch], want: list[Batch]) -> bool:
    return [dataclasses.replace(b, seq=0) for b in got] == want


async def test_append_gives_sequences_in_commit_order(event_log: EventLog) -> None:
    gen = IdGenerator(0)
    a, b, c = (make_batch(gen, "o", f"s.{n}", 2) for n in range(3))
    base = event_log.committed_seq()
    first = event_log.append([a, b])
    second = event_log.append([c])
    assert await first == [base + 1, base + 2]
    assert await second == [base + 3]
    assert event_log.committed_seq() == base + 3
    got = await event_log.read_log("o", LogPosition(0))
    assert [x.seq for x in got] == [base + 1, base + 2, base + 3]


async def test_log_follows_commit_order_not_id_order(event_log: EventLog) -> None:
    gen = IdGenerator(0)
    early = make_batch(gen, "o", "x", 2)  # smaller ids ...
    late = make_batch(gen, "o", "x", 2)
    (s_late,) = await event_log.append([late])
    (s_early,) = await event_log.append([early])  # ... committed later
    assert s_early > s_late
    got = await event_log.read_log("o", LogPosition(0))
    assert [b.first_id for b in got] == [late.first_id, early.first_id]
    # A reader that stood after the first commit still finds the second.
    assert [b.first_id for b in await event_log.read_log("o", LogPosition(s_late + 1))] == [
        early.first_id
    ]


async def test_read_log_pages_and_filters_by_org(event_log: EventLog) -> None:
    gen = IdGenerator(0)
    mine = [make_batch(gen, "acme", "a", 1) for _ in range(5)]
    theirs = make_batch(gen, "globex", "a", 1)
    await event_log.append([*mine[:2], theirs, *mine[2:]])
    page = await event_log.read_log("acme", LogPosition(0), limit=3)
    assert _same(page, mine[:3])
    rest = await event_log.read_log("acme", LogPosition(page[-1].seq + 1), limit=3)
    assert _same(rest, mine[3:])
    assert await event_log.read_log("acme", LogPosition(rest[-1].seq + 1)) == []


async def test_position_after_id(event_log: EventLog) -> None:
    gen = IdGenerator(0)
    a = make_batch(gen, "o", "x", 3)
    b = make_batch(gen, "o", "x", 3)
    sa, sb = await event_log.append([a, b])
    middle = a.first_id + 1
    assert await event_log.position_after_id(middle) == LogPosition(sa, middle)
    assert await event_log.position_after_id(a.last_id) == LogPosition(sb, a.last_id)
    after_all = await event_log.position_after_id(b.last_id)
    assert after_all.seq > sb
    assert await event_log.read_log("o", after_all) == []


async def test_recent_batches_by_id_across_orgs(event_log: EventLog) -> None:
    """The dedup window's rebuild (JetStream serves it from the log, not the history)."""
    gen = IdGenerator(0)
    a = make_batch(gen, "acme", "a.b", 3)
    b = make_batch(gen, "globex", "a.b", 2)
    c = make_batch(gen, "acme", "a.c", 1)
    await event_log.append([c])
    await event_log.append([a, b])
    assert _same(await event_log.recent_batches(0), [a, b, c])
    assert _same(await event_log.recent_batches(a.last_id), [b, c])
    assert await event_log.recent_batches(c.last_id) == []


async def test_history_stays_by_id(history_log: EventLog) -> None:
    gen = IdGenerator(0)
    early = make_batch(gen, "o", "x", 2)
    late = make_batch(gen, "o", "x", 2)
    await history_log.append([late])
    await history_log.append([early])
    assert _same(await history_log.read_batches("o", 0), [early, late])


async def test_history_reads(history_log: EventLog) -> None:
    gen = IdGenerator(0)
    a = make_batch(gen, "acme", "a.b", 3)
    b = make_batch(gen, "globex", "a.b", 2)
    c = make_batch(gen, "acme", "a.c", 4)
    await history_log.append([a, b])
    await history_log.append([c])
    assert await history_log.last_id() == c.last_id
    assert _same(await history_log.read_batches("acme", 0), [a, c])
    assert _same(await history_log.read_batches("acme", 0, subject="a.c"), [c])
    assert _same(await history_log.read_batches("acme", a.last_id), [c])
    middle = a.first_id + 1
    found = await history_log.batch_containing("acme", middle)
    assert found is not None and _same([found], [a])
    assert await history_log.batch_containing("globex", middle) is None  # another org's event
    assert [i for i, _ in wire.split_frames(a.body)] == list(range(a.first_id, a.last_id + 1))
    assert _same(await history_log.recent_batches(a.last_id), [b, c])


async def test_group_commit_of_concurrent_appends(event_log: EventLog) -> None:
    gen = IdGenerator(0)
    batches = [make_batch(gen, "o", f"s.{i}", 2) for i in range(50)]
    seqs = await asyncio.gather(*(event_log.append([b]) for b in batches))
    flat = [s for (s,) in seqs]
    assert flat == sorted(flat) and len(set(flat)) == 50
    assert len(await event_log.read_log("o", LogPosition(0), limit=1000)) == 50


async def test_sequences_survive_reopen(open_log: object) -> None:
    gen = IdGenerator(0)
    async with open_log() as s:  # type: ignore[operator]
        (first,) = await s.append([make_batch(gen, "o", "x", 1)])
    async with open_log() as s:  # type: ignore[operator]
        assert s.committed_seq() == first
        (second,) = await s.append([make_batch(gen, "o", "x", 1)])
        assert second > first


async def _subjects(log: EventLog, org: str) -> list[str]:
    return [b.subject for b in await log.read_log(org, LogPosition(0), limit=1000)]


async def test_retention(event_log: EventLog) -> None:
    gen = IdGenerator(0)
    batches = [make_batch(gen, "o", "keep.few", 1) for _ in range(20)]
    batches += [make_batch(gen, "o", "other", 1) for _ in range(5)]
    await event_log.append(batches)
    removed = await event_log.trim([RetentionRule("keep.>", 0, 5)], now_ms=0)
    assert removed == 15
    left = await _subjects(event_log, "o")
    assert left.count("keep.few") == 5 and left.count("other") == 5
    assert batches[-1].last_id > id_for_time_ms(0)
    # Max age: everything is older than "now + 1 hour" minus one minute.
    later = int(time.time() * 1000) + 3_600_000
    assert await event_log.trim([RetentionRule(">", 60_000, 0)], later) == 10
    assert await _subjects(event_log, "o") == []


async def test_filtered_scans_in_log_and_id_order(event_log: EventLog) -> None:
    gen = IdGenerator(0)
    batches = [
        make_batch(gen, "acme", f"{'hit' if n % 3 == 0 else 'miss'}.{n}", 2) for n in range(9)
    ]
    other = make_batch(gen, "globex", "hit.x", 1)
    await event_log.append([*batches[:5], other])
    await event_log.append(batches[5:])
    hits = [b for b in batches if b.subject.startswith("hit.")]

    def hit(subject: str) -> bool:
        return subject.startswith("hit.")

    step = await event_log.scan_log("acme", LogPosition(0), hit, limit=64, budget=4)
    assert _same(step.batches, hits[:2]) and not step.done  # 4 looked at: hits 0 and 3
    rest = await event_log.scan_log("acme", LogPosition(step.next), hit, limit=64, budget=100)
    assert _same(rest.batches, hits[2:]) and rest.done
    first = await event_log.scan_log("acme", LogPosition(0), hit, limit=1, budget=100)
    assert _same(first.batches, hits[:1]) and not first.done
    assert first.next == first.batches[0].seq + 1
    # Named, the pattern may filter on the store's server: the same batches.
    named = await event_log.scan_log("acme", LogPosition(0), hit, limit=64, pattern="hit.>")
    assert _same(named.batches, hits) and named.done


async def test_filtered_scans_by_id(history_log: EventLog) -> None:
    gen = IdGenerator(0)
    batches = [
        make_batch(gen, "acme", f"{'hit' if n % 3 == 0 else 'miss'}.{n}", 2) for n in range(9)
    ]
    other = make_batch(gen, "globex", "hit.x", 1)
    await history_log.append([*batches[:5], other])
    await history_log.append(batches[5:])
    hits = [b for b in batches if b.subject.startswith("hit.")]

    def hit(subject: str) -> bool:
        return subject.startswith("hit.")

    # By id: a cursor inside a batch still finds the rest of that batch.
    by_id = await history_log.scan_batches("acme", hits[1].first_id, hit, limit=64)
    assert _same(by_id.batches, hits[1:]) and by_id.done
    below = await history_log.scan_batches("acme", 0, hit, before_id=hits[2].first_id, limit=64)
    assert _same(below.batches, hits[:2]) and below.done
    capped = await history_log.scan_batches("acme", 0, hit, limit=64, budget=4)
    assert _same(capped.batches, hits[:2]) and capped.next == batches[3].last_id
