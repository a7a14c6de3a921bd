"""History on PostgreSQL answers as history on the embedded log: the same ``History`` (the
one query rule) over a SQLite store and over ``PgHistoryReader`` fed the same batches gives
the same events, for literal subjects, wildcards, time ranges, cursors and single events;
and the CloudEvents-id lookup finds every event with that id, in every partition."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker import wire
from lockgate.broker.errors import NotFound
from lockgate.broker.history import History
from lockgate.broker.historydb.reader import PgHistoryReader
from lockgate.broker.historydb.rows import event_rows
from lockgate.broker.historydb.writer import HistoryWriter
from lockgate.broker.ids import id_for_time_ms, time_ms_of
from lockgate.broker.store import Batch
from lockgate.broker.store.pg_engine import connect_pool
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2
from tests.broker.historydb.conftest import event

DAY = 86_400_000
T0 = int(dt.datetime(2026, 3, 1, 20, tzinfo=dt.UTC).timestamp() * 1000)
SUBJECTS = ["orders.eu", "orders.us", "billing.eu", "orders.eu.late", "$dlq.d1"]


def corpus() -> list[Batch]:
    """60 batches of 1..7 events over three days, two orgs, five subjects; CloudEvents ids
    repeat across sources (as seed systems' UUIDs may)."""
    out: list[Batch] = []
    n = itertools.count()
    for k in range(60):
        t = T0 + k * (3 * DAY // 60)
        size = 1 + k % 7
        ids = [id_for_time_ms(t) + i for i in range(size)]
        subject = SUBJECTS[k % len(SUBJECTS)]
        org = "acme" if k % 4 else "evil"
        data = json.dumps({"k": k})
        events = [event(f"ce-{next(n) % 50}", data).SerializeToString() for _ in ids]
        body = b"".join(wire.delivery_frames(ids, wire.subject_field(subject), events))
        out.append(Batch(ids[0], ids[-1], org, subject, size, f"v{k % 3}", body))
    return out


@pytest_asyncio.fixture
async def both(
    tmp_path: Path, pg_fresh_dsn: str
) -> AsyncIterator[tuple[History, History, PgHistoryReader]]:
    batches = corpus()
    sqlite = SqliteStore(tmp_path, fsync="never")
    await sqlite.open()
    seqs = await sqlite.append(batches)
    pool = await connect_pool(pg_fresh_dsn, min_size=1, max_size=2)
    writer = HistoryWriter(pool)
    await writer.prepare()
    rows = [r for b, s in zip(batches, seqs, strict=True) for r in event_rows(replace(b, seq=s))]
    await writer.write(rows)
    reader = PgHistoryReader(pool)
    yield History(sqlite), History(reader), reader
    await pool.close()
    await sqlite.close()


async def all_pages(
    h: History,
    org: str,
    pattern: str,
    *,
    start_ms: int = 0,
    end_ms: int = 0,
    limit: int = 5,
    cloudevent_id: str = "",
) -> list[bytes]:
    out: list[bytes] = []
    after = 0
    for _ in range(500):
        events, after = await h.query(
            org,
            pattern,
            after_id=after,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
            cloudevent_id=cloudevent_id,
        )
        assert len(events) <= limit
        out += [e.SerializeToString() for e in events]
        if not after:
            return out
    raise AssertionError("no last page")


async def test_the_same_events_as_the_embedded_log(
    both: tuple[History, History, PgHistoryReader],
) -> None:
    embedded, pg, _ = both
    for org in ("acme", "evil", "nobody"):
        for pattern in ("orders.eu", "orders.>", "*.eu", ">", "$dlq.>", "none"):
            expected = await all_pages(embedded, org, pattern)
            assert await all_pages(pg, org, pattern) == expected, (org, pattern)
            if org == "acme" and pattern in (">", "orders.eu"):
                assert expected  # the corpus does reach these


async def test_time_ranges_across_partitions(
    both: tuple[History, History, PgHistoryReader],
) -> None:
    embedded, pg, _ = both
    for start, end in [(T0 + DAY // 2, T0 + 2 * DAY), (T0 + DAY, 0), (0, T0 + DAY // 3)]:
        for pattern in (">", "orders.us"):
            expected = await all_pages(embedded, "acme", pattern, start_ms=start, end_ms=end)
            got = await all_pages(pg, "acme", pattern, start_ms=start, end_ms=end, limit=3)
            assert got == expected and expected


async def test_one_event_by_broker_id(both: tuple[History, History, PgHistoryReader]) -> None:
    embedded, pg, _ = both
    b = corpus()[5]  # of acme
    for event_id in (b.first_id, b.last_id):
        assert await pg.get_event("acme", event_id) == await embedded.get_event("acme", event_id)
        assert await pg.fetch_frame("acme", event_id) == await embedded.fetch_frame(
            "acme", event_id
        )
    with pytest.raises(NotFound):
        await pg.get_event("evil", b.first_id)  # another org's: not found
    assert await pg.fetch_frame("acme", b.last_id + 1) is None


async def test_by_cloudevents_id_in_every_partition(
    both: tuple[History, History, PgHistoryReader],
) -> None:
    _, _, reader = both
    found = await reader.batches_by_cloudevent_id("acme", "ce-7", 0)
    expected = [
        i
        for b in corpus()
        if b.org == "acme"
        for i, f in wire.split_frames(b.body)
        if broker_pb2.Delivery.FromString(wire.frame_body(f)).event.id == "ce-7"
    ]
    assert [b.first_id for b in found] == expected and len(expected) >= 2
    days = {time_ms_of(b.first_id) // DAY for b in found}
    assert len(days) >= 2
    assert await reader.batches_by_cloudevent_id("acme", "ce-7", found[0].first_id) == found[1:]
    assert await reader.batches_by_cloudevent_id("acme", "nope", 0) == []


async def test_query_by_cloudevents_id_as_on_the_embedded_log(
    both: tuple[History, History, PgHistoryReader],
) -> None:
    """The embedded log looks at every event's id as it scans; PostgreSQL uses its index;
    the pattern, the time range and the cursor apply alike."""
    embedded, pg, _ = both
    for ce in ("ce-7", "ce-0", "nope"):
        for pattern in (">", "orders.*", "billing.eu"):
            for start, end in [(0, 0), (T0 + DAY, 0), (0, T0 + 2 * DAY)]:
                expected = await all_pages(
                    embedded, "acme", pattern, start_ms=start, end_ms=end, cloudevent_id=ce
                )
                got = await all_pages(
                    pg, "acme", pattern, start_ms=start, end_ms=end, limit=1, cloudevent_id=ce
                )
                assert got == expected, (ce, pattern, start, end)
    assert await all_pages(pg, "acme", ">", cloudevent_id="ce-7")
