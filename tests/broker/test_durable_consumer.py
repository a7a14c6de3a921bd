"""The durable consumer's state machine, in-process on the real SQLite store: pending, due,
backoff, redelivery, dead letters, and what survives a restart (read back from the store,
which is what a restarted broker loads)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.config import Config
from lockgate.broker.delivery import DurableConsumer, DurableSession
from lockgate.broker.delivery.durable import WRITE_AFTER
from lockgate.broker.durables import DurableOptions
from lockgate.broker.errors import FailedPrecondition
from lockgate.broker.node import Broker, StartSpec
from lockgate.broker.store import ConsumerRecord, LogPosition
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from tests.support import eventually


def _events(n: int, tag: str = "e") -> list[cloudevent_pb2.CloudEvent]:
    return [
        cloudevent_pb2.CloudEvent(id=f"{tag}-{i}", source="t", spec_version="1.0", type="t")
        for i in range(n)
    ]


def _broker(where: Path) -> Broker:
    cfg = Config(data_dir=str(where), fsync="never", max_deliveries=3, ack_wait=30.0)
    return Broker(cfg, SqliteStore(where, fsync="never"))


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    b = _broker(tmp_path)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def _take(session: DurableSession, n: int) -> list[broker_pb2.Delivery]:
    """The next ``n`` deliveries of ``session`` (within a deadline)."""
    out: list[broker_pb2.Delivery] = []
    async with asyncio.timeout(5):
        while len(out) < n:
            body = await session.outbox.take()
            assert body is not None
            out.extend(broker_pb2.SubscribeResponse.FromString(body).deliveries)
    return out


async def _stored(broker: Broker, name: str) -> ConsumerRecord:
    (rec,) = [r for r in await broker.store.load_consumers() if r.name == name]
    return rec


async def _publish(broker: Broker, subject: str, n: int, tag: str = "e") -> list[int]:
    return (await broker.publish(DEV_PRINCIPAL, subject, _events(n, tag))).ids


async def test_delivery_is_pending_until_acked_and_the_ack_is_stored(broker: Broker) -> None:
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    ids = await _publish(broker, "a.x", 3)
    got = await _take(session, 3)
    assert [d.id for d in got] == ids and {d.attempt for d in got} == {1}
    consumer = session.consumer
    assert set(consumer.pending) == set(ids) and session.in_flight == 3
    await broker.acknowledge(DEV_PRINCIPAL, "d", ids[:2], [])
    # Stored when the ack returns: a broker loading now sees one pending id.
    rec = await _stored(broker, "d")
    assert set(rec.pending) == {ids[2]} and rec.delivered_id == ids[2]
    assert consumer.ack_floor == ids[2] - 1
    with pytest.raises(FailedPrecondition, match="not pending"):
        await broker.acknowledge(DEV_PRINCIPAL, "d", [ids[0], ids[2]], [])
    assert set(consumer.pending) == {ids[2]}  # all or nothing
    await consumer.ack([ids[2], ids[0]], strict=False)  # a stream skips the stale id
    assert consumer.pending == {} and consumer.ack_floor == ids[2]
    assert (await _stored(broker, "d")).pending == {}


async def test_nack_waits_then_redelivers_with_backoff(broker: Broker) -> None:
    session = await broker.subscribe_durable(
        DEV_PRINCIPAL, "d", "a.>", DurableOptions(ack_wait=10.0)
    )
    (event_id,) = await _publish(broker, "a.x", 1)
    await _take(session, 1)
    consumer = session.consumer
    consumer.nack([event_id], 60.0)  # waiting: no session, a deadline
    p = consumer.pending[event_id]
    assert p.session is None and p.deadline > time.monotonic() + 50
    consumer.expire(time.monotonic() + 61)  # the delay ran out: due
    (again,) = await _take(session, 1)
    assert (again.id, again.attempt) == (event_id, 2)
    # The second attempt waits twice the ack wait before it is due again.
    wait = consumer.pending[event_id].deadline - time.monotonic()
    assert 19 < wait <= 20
    # A redelivery's attempt is written with the next group commit.

    async def stored_attempt() -> bool:
        return (await _stored(broker, "d")).pending == {event_id: 2}

    await eventually(stored_attempt)


async def test_unacked_deliveries_dead_letter_after_max_deliveries(broker: Broker) -> None:
    dlq = await broker.subscribe_ephemeral(DEV_PRINCIPAL, "$dlq.d", "")
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    (event_id,) = await _publish(broker, "a.x", 1)
    consumer = session.consumer
    for attempt in (1, 2, 3):
        (d,) = await _take(session, 1)
        assert d.attempt == attempt
        consumer.expire(time.monotonic() + 10_000)  # the ack wait passed
    # The fourth would exceed max_deliveries=3: dead-lettered instead.
    body = await asyncio.wait_for(dlq.outbox.take(), 5)
    assert body is not None
    (dead,) = broker_pb2.SubscribeResponse.FromString(body).deliveries
    assert dead.event.attributes["lockgateoriginalid"].ce_string == str(event_id)
    assert dead.event.attributes["lockgatedlqattempts"].ce_integer == 3
    assert event_id not in consumer.pending
    assert (await _stored(broker, "d")).pending == {}
    (rec,) = await broker.store.list_dead_letters("default", "d", (0, 0), 10)
    assert (rec.id, rec.attempts) == (event_id, 3)
    # Redrive: pending and due again, from attempt 0.
    assert await broker.redrive("default", "d", None) == 1
    (back,) = await _take(session, 1)
    assert (back.id, back.attempt) == (event_id, 1)


async def test_terminate_dead_letters_at_once(broker: Broker) -> None:
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    ids = await _publish(broker, "a.x", 2)
    await _take(session, 2)
    await broker.terminate(DEV_PRINCIPAL, "d", [ids[0]])
    assert set(session.consumer.pending) == {ids[1]} and session.in_flight == 1
    (rec,) = await broker.store.list_dead_letters("default", "d", (0, 0), 10)
    assert (rec.id, rec.attempts) == (ids[0], 1)


async def test_a_session_that_goes_away_makes_its_deliveries_due(broker: Broker) -> None:
    first = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    ids = await _publish(broker, "a.x", 2)
    await _take(first, 2)
    consumer = first.consumer
    consumer.detach(first)
    second = consumer.attach(broker.config.max_message_bytes)
    got = await _take(second, 2)
    assert sorted((d.id, d.attempt) for d in got) == [(ids[0], 2), (ids[1], 2)]


async def test_queue_sessions_share_a_batch(broker: Broker) -> None:
    one = await broker.subscribe_durable(DEV_PRINCIPAL, "q", "a.>")
    two = one.consumer.attach(broker.config.max_message_bytes)
    ids = await _publish(broker, "a.x", 10)
    a, b = await asyncio.gather(_take(one, 5), _take(two, 5))
    assert a and b
    assert sorted(d.id for d in a + b) == ids
    # Each member sees its share in publish order.
    assert [d.id for d in a] == sorted(d.id for d in a)


async def test_restart_keeps_position_and_pending(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    await broker.start()
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    ids = await _publish(broker, "a.x", 4)
    await _take(session, 4)
    await broker.acknowledge(DEV_PRINCIPAL, "d", ids[:3], [])
    await _publish(broker, "b.other", 2)  # moves the log past what the durable matches
    await broker.stop()

    broker = _broker(tmp_path)
    await broker.start()
    try:
        consumer: DurableConsumer = broker.durable("default", "d")
        assert set(consumer.pending) == {ids[3]}
        later = await _publish(broker, "a.x", 2, tag="later")
        session = consumer.attach(broker.config.max_message_bytes)
        got = await _take(session, 3)
        # The unacked one comes again (attempt 2), then only the new ones: nothing that was
        # acked, nothing handed out twice as a first delivery.
        assert [(d.id, d.attempt) for d in got] == [(ids[3], 2), (later[0], 1), (later[1], 1)]
    finally:
        await broker.stop()


async def test_a_durable_created_after_a_position_skips_the_past(broker: Broker) -> None:
    old = await _publish(broker, "a.x", 3)
    start = StartSpec(broker_pb2.START_POLICY_AFTER_ID, after_id=old[1])
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>", DurableOptions(start=start))
    new = await _publish(broker, "a.x", 1, tag="new")
    got = await _take(session, 2)
    assert [d.id for d in got] == [old[2], new[0]]


async def test_a_forced_flush_writes_first_deliveries_and_the_position_past_them(
    broker: Broker,
) -> None:
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    ids = await _publish(broker, "a.x", 3)
    await _take(session, 3)
    consumer = session.consumer
    await consumer.flush(force=True)
    rec = await _stored(broker, "d")
    assert set(rec.pending) == set(ids) and rec.position == consumer.handed_out
    # Delivered and acked on a stream before any flush: whether or not the ticker wrote them
    # in between, they end up neither pending nor behind the stored position.
    more = await _publish(broker, "a.x", 2, tag="more")
    await _take(session, 2)
    await consumer.ack(more, strict=False)
    await consumer.flush(force=True)
    rec = await _stored(broker, "d")
    assert set(rec.pending) == set(ids) and rec.position == consumer.handed_out
    assert rec.delivered_id == more[-1]


async def test_young_first_deliveries_get_no_rows_and_hold_the_stored_position(
    broker: Broker,
) -> None:
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    ids = await _publish(broker, "a.x", 4)
    seq = broker.store.committed_seq()  # the batch holding them
    await _take(session, 4)
    consumer = session.consumer
    await consumer.flush()  # what the ticker does
    rec = await _stored(broker, "d")
    # Nothing written for them: the position stays before the oldest one unacked.
    assert rec.pending == {} and rec.position == LogPosition(seq, ids[0] - 1)
    # Stream acks of the first two: stored by the next flush, as the position moving on.
    await consumer.ack(ids[:2], strict=False)
    await consumer.flush()
    rec = await _stored(broker, "d")
    assert rec.pending == {} and rec.position == LogPosition(seq, ids[2] - 1)
    # Acking the last one first changes nothing stored; then the oldest: up to the last.
    await consumer.ack([ids[3]], strict=False)
    await consumer.flush()
    assert (await _stored(broker, "d")).position == LogPosition(seq, ids[2] - 1)
    await consumer.ack([ids[2]], strict=False)
    await consumer.flush()
    rec = await _stored(broker, "d")
    assert rec.pending == {} and rec.position == consumer.handed_out == LogPosition(seq + 1)


async def test_a_delivery_unacked_past_write_after_gets_its_row(broker: Broker) -> None:
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    ids = await _publish(broker, "a.x", 3)
    await _take(session, 3)
    consumer = session.consumer
    await consumer.ack([ids[1]], strict=False)
    started = time.monotonic()

    async def written() -> bool:
        rec = await _stored(broker, "d")
        assert set(rec.pending) == {ids[0], ids[2]}
        return rec.position == consumer.handed_out

    # The ticker writes them once they are WRITE_AFTER old, and not before.
    await eventually(written, timeout=WRITE_AFTER + 5)
    assert time.monotonic() - started >= WRITE_AFTER - 0.1
    await consumer.ack([ids[0], ids[2]], strict=False)  # rows: deleted by the next commit

    async def gone() -> bool:
        return (await _stored(broker, "d")).pending == {}

    await eventually(gone, timeout=5)


def _crash_copy(live: Path, to: Path) -> Path:
    """The data directory as a kill -9 at this moment leaves it: the database and its WAL
    as the operating system has them (every commit is written there before it is acked)."""
    to.mkdir()
    for name in ("lockgate.db", "lockgate.db-wal"):
        if (live / name).exists():
            shutil.copyfile(live / name, to / name)
    return to


async def test_a_crash_redelivers_only_what_was_delivered_within_write_after(
    tmp_path: Path,
) -> None:
    broker = _broker(tmp_path / "live")
    await broker.start()
    try:
        session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
        consumer = session.consumer
        old = await _publish(broker, "a.x", 4, tag="old")
        old_seq = broker.store.committed_seq()
        await _take(session, 4)
        await consumer.ack(old[:2], strict=False)  # two acked, two never
        old_acked_at = time.monotonic()

        async def old_settled() -> bool:
            # Older than WRITE_AFTER: the unacked ones have rows, the acked ones are behind
            # the stored position.
            rec = await _stored(broker, "d")
            assert set(rec.pending) == set(old[2:])
            return rec.position.includes(old_seq, old[-1])

        await eventually(old_settled, timeout=WRITE_AFTER + 5)
        assert time.monotonic() - old_acked_at <= WRITE_AFTER + 2
        young = await _publish(broker, "a.x", 4, tag="young")
        await _take(session, 4)
        await consumer.ack(young[:2], strict=False)
        await consumer.flush()  # a tick: the position moves up to young[2], no rows
        crashed = _crash_copy(tmp_path / "live", tmp_path / "crashed")
    finally:
        await broker.stop()

    broker = _broker(crashed)
    await broker.start()
    try:
        session = broker.durable("default", "d").attach(broker.config.max_message_bytes)
        got = await _take(session, 4)
        marker = await _publish(broker, "a.x", 1, tag="marker")
        got += await _take(session, 1)
        # Nothing acked more than WRITE_AFTER before the crash comes again, nothing unacked
        # is lost: the old unacked ones are redeliveries (attempt 2); the young ones come
        # again from the log as first deliveries, the acked ones among them included.
        assert [(d.id, d.attempt) for d in got] == [
            (old[2], 2),
            (old[3], 2),
            (young[2], 1),
            (young[3], 1),
            (marker[0], 1),
        ]
    finally:
        await broker.stop()


async def test_a_consumer_behind_reads_recent_commits_from_memory(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    await broker.start()
    reads: list[int] = []
    """Sequences of the batches read from the store."""
    store = broker.store
    scan_log = store.scan_log

    async def counted(*args: Any, **kwargs: Any) -> Any:
        scan = await scan_log(*args, **kwargs)
        reads.extend(b.seq for b in scan.batches)
        return scan

    store.scan_log = counted  # type: ignore[method-assign]
    try:
        session = await broker.subscribe_durable(
            DEV_PRINCIPAL, "d", "a.>", DurableOptions(max_in_flight=5)
        )
        consumer = session.consumer
        first = await _publish(broker, "a.x", 1, tag="first")
        assert [d.id for d in await _take(session, 1)] == first  # at the head
        await consumer.ack(first, strict=False)
        reads.clear()  # a new durable on an empty log may read it once
        # Far more than the consumer buffers (max_in_flight * 4 + 10,000): it stops taking
        # commits as they come and reads on from the node's recent commits.
        ids: list[int] = []
        for n in range(14):
            ids += await _publish(broker, "a.x", 1000, tag=f"b{n}")
        assert consumer.position.seq <= broker.store.committed_seq()
        got: list[int] = []
        async with asyncio.timeout(20):
            while len(got) < len(ids):
                body = await session.outbox.take()
                assert body is not None
                batch = [d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
                got += batch
                await consumer.ack(batch, strict=False)
        assert got == ids and reads == []
    finally:
        await broker.stop()


async def test_a_commit_never_handed_over_is_read_from_the_store(broker: Broker) -> None:
    session = await broker.subscribe_durable(DEV_PRINCIPAL, "d", "a.>")
    first = await _publish(broker, "a.x", 1, tag="first")
    assert [d.id for d in await _take(session, 1)] == first  # idle, at the head
    listener = broker.pipeline.listener

    class Deaf:
        """A publisher whose coroutine went away between the commit and the hand-over."""

        def wants_frames(self) -> bool:
            return False

        def on_commit(self, *args: object) -> None:
            raise AssertionError("not handed over")

    broker.pipeline.listener = Deaf()
    ids = await _publish(broker, "a.x", 2)
    broker.pipeline.listener = listener
    # No further commit wakes the consumer: the ticker notices the missing batch.
    got = await _take(session, 2)
    assert [d.id for d in got] == ids
