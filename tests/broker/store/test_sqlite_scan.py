"""Filtered reads of a large org are index-driven (issue 8: a wildcard history read was
quadratic, each 64-row page sorting all of the org's rows): on an org of 300,000 stored
batches a wildcard that matches nothing answers each page after a bounded number of index
entries, the plans use a covering index and no temporary sort, other orgs' reads are served
between the steps, and a durable catching up with ``start=all`` finds the few batches it
wants. Rows looked at are counted, not timed."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker import wire
from lockgate.broker.auth import Principal
from lockgate.broker.config import Config
from lockgate.broker.history import _STEPS, History
from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.node import Broker
from lockgate.broker.positions import StartSpec
from lockgate.broker.store import SCAN_BUDGET, Batch, LogPosition
from lockgate.broker.store.sqlite import (
    SCAN_HOLDING_SQL,
    SCAN_IDS_SQL,
    SCAN_LOG_SQL,
    SqliteStore,
)
from lockgate.broker.v1 import broker_pb2

pytestmark = pytest.mark.asyncio(loop_scope="module")

BIG = 300_000
RARE_EVERY = 60_000  # rare.<n> batches, spread over the log


def _batch(i: int, org: str, subject: str) -> Batch:
    body = wire.delivery_frame(i, wire.subject_field(subject), b"\x0a\x01x")
    return Batch(i, i, org, subject, 1, "v", body)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def big(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Path]:
    """A data dir with 300,000 batches of org ``big`` and a few of ``small``."""
    path = tmp_path_factory.mktemp("big")
    store = SqliteStore(path, fsync="never")
    await store.open()
    # Ids of a day ago: past the dedup window, which a broker start would otherwise load.
    ids = itertools.count(id_for_time_ms(int(time.time() * 1000) - 86_400_000))
    rows = []
    busy = _batch(1, "big", "busy").body  # never read back: one body serves them all
    for n in range(BIG):
        i = next(ids)
        if n % RARE_EVERY == RARE_EVERY - 1:
            rows.append(_batch(i, "big", f"rare.{n}"))
        else:
            rows.append(Batch(i, i, "big", f"busy.s{n % 50}", 1, "v", busy))
        if n % 1000 == 0:
            rows.append(_batch(next(ids), "small", "small.x"))
    await store.append(rows)  # one group commit
    await store.close()
    return path


class Counting:
    """A subject matcher that counts the index entries it is shown."""

    def __init__(self, match: Callable[[str], bool]) -> None:
        self.match = match
        self.seen = 0

    def __call__(self, subject: str) -> bool:
        self.seen += 1
        return self.match(subject)


def nothing(subject: str) -> bool:
    return subject.startswith("nothing.")


async def test_the_scan_plans_walk_a_covering_index_without_a_sort(big: Path) -> None:
    store = SqliteStore(big, fsync="never")
    await store.open()
    try:
        for sql, args in (
            (SCAN_LOG_SQL, ("big", 0, 10)),
            (SCAN_IDS_SQL, ("big", 0, 1 << 62, 10)),
            (SCAN_HOLDING_SQL, ("big", 1 << 62)),
        ):
            plan = await store._read(
                lambda c, sql=sql, args=args: [
                    r[-1] for r in c.execute("EXPLAIN QUERY PLAN " + sql, args)
                ]
            )
            text = " | ".join(plan)
            assert "COVERING INDEX batches_org_" in text, text
            assert "TEMP B-TREE" not in text, text
    finally:
        await store.close()


async def test_a_scan_step_looks_at_its_budget_and_says_where_to_go_on(big: Path) -> None:
    store = SqliteStore(big, fsync="never")
    await store.open()
    try:
        m = Counting(nothing)
        step = await store.scan_log("big", LogPosition(0), m)
        assert (step.batches, step.done, m.seen) == ([], False, SCAN_BUDGET)
        assert step.next > SCAN_BUDGET  # past the budget of big's rows (and small's between)
        m = Counting(nothing)
        by_id = await store.scan_batches("big", 0, m)
        assert (by_id.batches, by_id.done, m.seen) == ([], False, SCAN_BUDGET)
        # The rare subjects are found with their bodies, in order.
        found = await store.scan_log("big", LogPosition(0), lambda s: s.startswith("rare."))
        assert found.batches == [] and not found.done  # none within the first step
    finally:
        await store.close()


async def test_a_wildcard_history_page_is_bounded_and_other_orgs_go_between(big: Path) -> None:
    store = SqliteStore(big, fsync="never")
    await store.open()
    history = History(store)
    try:
        looked: list[int] = []
        real = store.scan_batches

        async def counted(*a: object, **kw: object) -> object:
            step = await real(*a, **kw)  # type: ignore[arg-type]
            looked.append(1)
            return step

        store.scan_batches = counted  # type: ignore[method-assign]
        page = asyncio.create_task(history.query("big", "nothing.*"))
        # Another org's query is served between the big page's index steps.
        small, _ = await history.query("small", "small.x", limit=5)
        assert len(small) == 5 and not page.done()
        events, cursor = await page
        # The page gave up after its steps with a cursor to go on from, not at the end.
        assert events == [] and cursor > 0 and len(looked) == _STEPS
        # Following the cursor to the end finds the rare subjects, page after page.
        store.scan_batches = real  # type: ignore[method-assign]
        found: list[str] = []
        after, pages = 0, 0
        while True:
            got, after = await history.query("big", "rare.*", after_id=after, limit=100)
            found += [e.subject for e in got]
            pages += 1
            if not after:
                break
        assert found == [f"rare.{n}" for n in range(RARE_EVERY - 1, BIG, RARE_EVERY)]
        assert pages <= BIG // (SCAN_BUDGET * _STEPS) + 2
    finally:
        await store.close()


async def test_a_durable_catches_up_on_a_large_org(big: Path) -> None:
    store = SqliteStore(big, fsync="never")
    broker = Broker(Config(data_dir=str(big)), store)
    await broker.start()
    try:
        who = Principal("big", "bot", frozenset())
        start = StartSpec(broker_pb2.START_POLICY_ALL)
        body = await broker.fetch(who, "catchup", 100, 30.0, pattern="rare.>", start=start)
        got = [d.subject for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
        # A poll returns what the first dispatch found; keep polling until all five came.
        while len(got) < BIG // RARE_EVERY:
            body = await broker.fetch(who, "catchup", 100, 30.0)
            more = [d.subject for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
            assert more, f"the durable stopped short after {got}"
            got += more
        assert got == [f"rare.{n}" for n in range(RARE_EVERY - 1, BIG, RARE_EVERY)]
    finally:
        await broker.stop()
