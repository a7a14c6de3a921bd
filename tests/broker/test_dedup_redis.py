"""The Redis dedup window between nodes: a key claimed by one node's lookup makes another
node's lookup wait for the outcome (the id, or the claim's release when the append failed),
so a publish retried through another node is stored once and a failed append never marks an
event as seen; Redis down fails closed like the limiter."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio

from lockgate.broker import dedup_redis, dedup_redis_claims
from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.config import Config
from lockgate.broker.dedup_redis import RedisDedupWindow
from lockgate.broker.errors import BrokerError, Unavailable
from lockgate.broker.frameturn import FrameTurn
from lockgate.broker.node import Broker
from lockgate.broker.store import Batch, OnStored, Store
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2
from tests.support import eventually


async def _pair(
    redis_url: str, claim: float, b_claim: float | None = None
) -> AsyncIterator[tuple[RedisDedupWindow, RedisDedupWindow]]:
    prefix = f"lockgate-test:{uuid.uuid4().hex}:"
    a = RedisDedupWindow(redis_url, 60.0, prefix=prefix, claim=claim)
    b = RedisDedupWindow(
        redis_url, 60.0, prefix=prefix, claim=claim if b_claim is None else b_claim
    )
    yield a, b
    await a.close()
    await b.close()


@pytest_asyncio.fixture
async def two(redis_url: str) -> AsyncIterator[tuple[RedisDedupWindow, RedisDedupWindow]]:
    # A claim that outlives the test's steps on a loaded machine: with 0.5 s it ran out
    # before a remembered the id, and b claimed the event itself.
    async for pair in _pair(redis_url, claim=30.0):
        yield pair


@pytest_asyncio.fixture
async def two_short(redis_url: str) -> AsyncIterator[tuple[RedisDedupWindow, RedisDedupWindow]]:
    """a's claims run out soon (for the dead node's claim); b's lookups wait for them up to
    its own claim plus a second, which is long here: with 0.5 s, b gave up within 1.5 s of
    starting to wait, short of a loaded machine's stalls."""
    async for pair in _pair(redis_url, claim=0.5, b_claim=5.0):
        yield pair


@pytest_asyncio.fixture
async def two_default(redis_url: str) -> AsyncIterator[tuple[RedisDedupWindow, RedisDedupWindow]]:
    """The default claim (a stall of the test's process longer than a claim lets it lapse,
    as for any node: 0.5 s did on a loaded machine)."""
    async for pair in _pair(redis_url, claim=dedup_redis.DEFAULT_CLAIM, b_claim=5.0):
        yield pair


K = ("acme", "/src", "e1")


async def test_a_claim_makes_the_other_node_wait_for_the_stored_id(
    two: tuple[RedisDedupWindow, RedisDedupWindow],
) -> None:
    a, b = two
    assert await a.lookup([K]) == [0]  # a appends it
    waiting = asyncio.create_task(b.lookup([K, ("acme", "/src", "e2")]))
    await eventually(lambda: b.waits > 0, what="b meets a's claim")
    await a.remember([(K, 42)])  # staged, not committed: still no duplicate to answer
    waits = b.waits
    await eventually(lambda: b.waits > waits + 2, what="b meets a's pending id")
    assert not waiting.done()
    a.stored([K])  # a's append committed
    assert await asyncio.wait_for(waiting, 5) == [42, 0]


async def test_a_node_killed_before_its_commit_leaves_no_id_behind(
    two_short: tuple[RedisDedupWindow, RedisDedupWindow],
) -> None:
    a, b = two_short
    assert await a.lookup([K]) == [0]
    await a.remember([(K, 42)])
    await a.close()  # killed before its append committed: event 42 is not in the log
    # The retry through b stores the event rather than answer it as a duplicate of 42.
    assert await asyncio.wait_for(b.lookup([K]), 10) == [0]


async def test_a_forgotten_claim_goes_to_the_other_node(
    two: tuple[RedisDedupWindow, RedisDedupWindow],
) -> None:
    a, b = two
    assert await a.lookup([K]) == [0]
    waiting = asyncio.create_task(b.lookup([K]))
    await eventually(lambda: b.waits > 0, what="b meets a's claim")
    await a.forget([K])  # a's append failed
    assert await asyncio.wait_for(waiting, 5) == [0]  # b claimed it: b appends it
    await b.remember([(K, 43)])
    b.stored([K])
    assert await a.lookup([K]) == [43]


async def test_a_large_batch_answers_every_key_in_its_place(
    two: tuple[RedisDedupWindow, RedisDedupWindow],
) -> None:
    # The claim answers only the keys that were there, by index: stored ids must land on
    # their own events, whatever their mix with new keys.
    a, b = two
    keys = [("acme", f"/src/{i % 7}", f"e{i}") for i in range(1000)]
    stored = keys[::3]
    assert await a.lookup(stored) == [0] * len(stored)
    await a.remember([(k, 10_000 + n) for n, k in enumerate(stored)])
    a.stored(stored)  # their append committed: b's lookup gets the ids once written
    answers = await b.lookup(keys)
    assert answers == [10_000 + i // 3 if i % 3 == 0 else 0 for i in range(1000)]
    fresh = [k for i, k in enumerate(keys) if i % 3]
    await b.remember([(k, 20_000 + i) for i, k in enumerate(keys) if i % 3])
    b.stored(fresh)
    assert await a.lookup(keys) == [
        10_000 + i // 3 if i % 3 == 0 else 20_000 + i for i in range(1000)
    ]


async def test_a_claim_left_by_a_dead_node_runs_out(
    two_short: tuple[RedisDedupWindow, RedisDedupWindow],
) -> None:
    a, b = two_short
    assert await a.lookup([K]) == [0]
    # b meets a's claim while a lives (after a's death it could run out before b looks: on
    # a loaded machine it did, and b never waited).
    waiting = asyncio.create_task(b.lookup([K]))
    await eventually(lambda: b.waits > 0, what="b meets a's claim")
    await a.close()  # a dies before its append: nobody renews its claim
    assert await asyncio.wait_for(waiting, 10) == [0]  # it ran out: b claimed the event


async def test_a_live_nodes_claim_is_renewed_while_it_appends(
    two_default: tuple[RedisDedupWindow, RedisDedupWindow],
) -> None:
    a, b = two_default
    assert await a.lookup([K]) == [0]  # a's append takes longer than the claim lasts
    await eventually(lambda: a.renewals >= 6, what="a renews its claim past 1 s")
    waiting = asyncio.create_task(b.lookup([K]))
    await eventually(lambda: b.waits > 0, what="b meets a's claim, still there")
    await a.remember([(K, 42)])
    a.stored([K])
    assert await asyncio.wait_for(waiting, 5) == [42]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_down_fails_closed() -> None:
    window = RedisDedupWindow(f"redis://127.0.0.1:{closed_port()}/0", 60.0)
    try:
        # remember only notes the pending ids in the node (their keys stay claimed).
        for call in (window.lookup([K]), window.forget([K])):
            with pytest.raises(Unavailable) as exc:
                await call
            assert exc.value.reason == "LIMITER_UNAVAILABLE"
            assert exc.value.message.startswith("the Redis dedup window failed: ")
    finally:
        await window.close()


class FailingStore:
    """A real store whose batch writes fail while ``failing`` is set."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def append(self, batches: Sequence[Batch], on_stored: OnStored | None = None) -> Any:
        if not self.failing:
            return self.inner.append(batches, on_stored)
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        fut.set_exception(Unavailable("the disk is full", reason="STORE_UNAVAILABLE"))
        return fut


def event(eid: str) -> cloudevent_pb2.CloudEvent:
    return cloudevent_pb2.CloudEvent(id=eid, source="/src", spec_version="1.0", type="t")


async def test_a_publish_retried_on_another_node_is_stored_once(
    tmp_path: Path, redis_url: str
) -> None:
    prefix = f"lockgate-test:{uuid.uuid4().hex}:"
    nodes = []
    for n, worker in (("a", 1), ("b", 2)):
        (tmp_path / n).mkdir()
        store = FailingStore(SqliteStore(tmp_path / n, fsync="never"))
        window = RedisDedupWindow(redis_url, 60.0, prefix=prefix)
        config = Config(data_dir=str(tmp_path / n), worker_id=worker)
        nodes.append((Broker(config, cast(Store, store), dedup=window), store))
    (a, a_store), (b, _) = nodes
    await a.start()
    await b.start()
    try:
        a_store.failing = True  # a failed append never marks an event as seen
        with pytest.raises(BrokerError):
            await a.publish(DEV_PRINCIPAL, "dd.x", [event("e1")])
        first = await b.publish(DEV_PRINCIPAL, "dd.x", [event("e1"), event("e2")])
        assert first.duplicates == [] and all(first.ids)
        a_store.failing = False
        again = await a.publish(DEV_PRINCIPAL, "dd.x", [event("e2"), event("e3")])
        assert again.duplicates == [0]
        assert again.ids[0] == first.ids[1]
        stored_a, _ = await a.query(DEV_PRINCIPAL, "dd.>")
        stored_b, _ = await b.query(DEV_PRINCIPAL, "dd.>")
        assert [e.event.id for e in stored_b] == ["e1", "e2"]
        assert [e.event.id for e in stored_a] == ["e3"]
    finally:
        await b.stop()
        await a.stop()


async def test_an_event_in_frames_prepared_back_to_back_is_stored_once(
    tmp_path: Path, redis_url: str
) -> None:
    # The second frame is prepared while the first commits (the Publish stream does so):
    # its lookup meets the first frame's claim and waits for the id written behind it.
    window = RedisDedupWindow(redis_url, 60.0, prefix=f"lockgate-test:{uuid.uuid4().hex}:")
    broker = _one_node(tmp_path, window)
    await broker.start()
    try:
        first = await broker.prepare(DEV_PRINCIPAL, "dd.x", [event("e1")])
        committing = asyncio.create_task(broker.commit(first))
        second = await broker.prepare(DEV_PRINCIPAL, "dd.x", [event("e1"), event("e2")])
        one = await committing
        two = await broker.commit(second)
        assert one.duplicates == [] and two.duplicates == [0]
        assert two.ids[0] == one.ids[0] and two.ids[1] not in one.ids
        stored, _ = await broker.query(DEV_PRINCIPAL, "dd.>")
        assert [e.event.id for e in stored] == ["e1", "e2"]
    finally:
        await broker.stop()


async def test_a_claim_left_unresolved_by_a_live_node_runs_out_after_max_hold(
    two_short: tuple[RedisDedupWindow, RedisDedupWindow], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dedup_redis_claims, "MAX_HOLD", 0.2)
    a, b = two_short
    assert await a.lookup([K]) == [0]
    await a.remember([(K, 42)])  # and neither stored nor forgotten (a bug between the two)
    assert await asyncio.wait_for(b.lookup([K]), 10) == [0]  # a stopped renewing it
    a.stored([K])  # too late: nothing of it is pending at a any more
    await b.remember([(K, 43)])
    b.stored([K])
    assert await a.lookup([K]) == [43]  # (waiting while b's id is pending)


def _one_node(tmp_path: Path, window: RedisDedupWindow) -> Broker:
    return Broker(
        Config(data_dir=str(tmp_path), worker_id=1),
        SqliteStore(tmp_path, fsync="never"),
        dedup=window,
    )


def _frames(broker: Broker, frames: list[list[str]]) -> list[asyncio.Future[Any]]:
    """Prepares ``frames`` concurrently, chained as the Publish stream of a cluster node does."""
    turn: FrameTurn | None = None
    out = []
    for ids in frames:
        turn = FrameTurn(turn)
        turn.prepared = asyncio.ensure_future(
            broker.prepare(DEV_PRINCIPAL, "dd.x", [event(i) for i in ids], turn=turn)
        )
        out.append(turn.prepared)
    return out


async def test_frames_prepared_concurrently_keep_their_order_and_store_an_event_once(
    tmp_path: Path, redis_url: str
) -> None:
    # Each frame looks its keys up while the previous ones do and stages after them: ids and
    # store order are the stream's, and an event in two frames in flight at once is stored
    # once. The window claims in lookup order: a frame never waits for a later frame's claim
    # (which waits for its turn behind it: that stalled for claim + 1 s, then failed).
    window = RedisDedupWindow(redis_url, 60.0, prefix=f"lockgate-test:{uuid.uuid4().hex}:")
    broker = _one_node(tmp_path, window)
    await broker.start()
    try:
        assert broker.pipeline.concurrent
        for round_ in range(5):
            e = [f"r{round_}e{n}" for n in range(6)]
            tasks = _frames(broker, [[e[1], e[2]], [e[2], e[3]], [e[4]], [e[3], e[5]]])
            outcomes = [await broker.commit(await asyncio.wait_for(t, 5)) for t in tasks]
            assert [o.duplicates for o in outcomes] == [[], [0], [], [0]]
            (e1, e2), (e2_again, e3), (e4,), (e3_again, e5) = (o.ids for o in outcomes)
            assert e2_again == e2 and e3_again == e3
            assert e1 < e2 < e3 < e4 < e5  # ids follow the stream's order
        stored, _ = await broker.query(DEV_PRINCIPAL, "dd.>")
        assert [ev.event.id for ev in stored] == [
            f"r{r}e{n}" for r in range(5) for n in range(1, 6)
        ]
    finally:
        await broker.stop()


async def test_a_frame_after_a_failed_one_stages_nothing_and_lets_its_claims_go(
    tmp_path: Path, redis_url: str
) -> None:
    prefix = f"lockgate-test:{uuid.uuid4().hex}:"
    window = RedisDedupWindow(redis_url, 60.0, prefix=prefix, claim=30.0)
    other = RedisDedupWindow(redis_url, 60.0, prefix=prefix, claim=30.0)
    broker = _one_node(tmp_path, window)
    await broker.start()
    try:
        failed = FrameTurn(None)
        failed.prepared = asyncio.get_running_loop().create_future()
        failed.prepared.set_exception(Unavailable("the store failed"))
        failed.pass_on()
        with pytest.raises(Unavailable, match="an earlier frame of this publish stream"):
            await broker.prepare(DEV_PRINCIPAL, "dd.x", [event("e1")], turn=FrameTurn(failed))
        # Its claim is let go at once (a 30 s claim held would make this lookup wait).
        key = (DEV_PRINCIPAL.org, "/src", "e1")
        assert await asyncio.wait_for(other.lookup([key]), 5) == [0]
        await other.forget([key])
        assert (await broker.query(DEV_PRINCIPAL, "dd.>"))[0] == []
    finally:
        await broker.stop()
        await other.close()
