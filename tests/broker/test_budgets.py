"""Byte budgets of the delivery queues (issue 8, resource exhaustion): an ephemeral
subscriber's outbox and a durable's unacknowledged deliveries are bounded in bytes, not only
in events, so a subscriber that never reads holds at most its budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.config import Config, ConfigError
from lockgate.broker.config_load import load_config
from lockgate.broker.delivery import EphemeralSubscription, Outbox
from lockgate.broker.delivery.pending import PendingTable
from lockgate.broker.durables import DurableOptions
from lockgate.broker.errors import ResourceExhausted
from lockgate.broker.node import Broker
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from tests.support import eventually


class _Holder:
    in_flight = 0


async def test_the_outbox_counts_bytes_and_frees_them_on_an_error() -> None:
    box = Outbox(max_message_bytes=1024)
    box.put(b"a" * 10, 1)
    box.put(b"b" * 5, 2)
    assert box.bytes == 15
    assert await box.take() == b"a" * 10 + b"b" * 5
    assert box.bytes == 0
    box.put(b"c" * 7, 1)
    box.close(ResourceExhausted("cut", reason="SLOW_CONSUMER"))
    assert (box.bytes, box.buffered) == (0, 0)  # dropped at once, not when the stream ends


def test_an_ephemeral_subscription_is_cut_off_past_its_byte_budget() -> None:
    sub = EphemeralSubscription("o", "a.>", "", 1024, max_bytes=10)
    slow: list[EphemeralSubscription] = []
    sub.on_slow = slow.append
    assert sub.offer(b"x" * 6, 1, None)
    assert not sub.offer(b"y" * 6, 1, None)  # 12 bytes > 10
    assert slow == [sub]
    err = sub.outbox.error
    assert err is not None and err.reason == "SLOW_CONSUMER"
    assert "10 bytes" in err.message and err.metadata["max_bytes"] == "10"


def test_the_pending_table_counts_the_bytes_it_holds() -> None:
    table = PendingTable({7: 2})  # after a restart: no frame held
    holder = _Holder()
    assert table.hand_out(1, b"x" * 100, holder, 0.0)
    assert not table.hand_out(1, b"x" * 100, holder, 0.0)
    assert table.hand_out(2, b"y" * 50, holder, 0.0)
    assert table.bytes == 150
    nxt = table.next_due()
    assert nxt is not None and nxt[0] == 7
    table.redeliver(nxt[1], b"z" * 30, holder, 0.0, 1.0)  # fetched from the store
    assert table.bytes == 180
    table.settle([1, 7])
    assert table.bytes == 50
    table.settle([2])
    assert table.bytes == 0


@pytest.mark.parametrize("name", ["subscriber_max_bytes", "max_in_flight_bytes"])
def test_a_budget_below_one_message_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config(env={f"LOCKGATE_{name.upper()}": "1000"})


def _events(n: int, size: int, tag: str) -> list[cloudevent_pb2.CloudEvent]:
    return [
        cloudevent_pb2.CloudEvent(
            id=f"{tag}-{i}", source="t", spec_version="1.0", type="t", binary_data=b"x" * size
        )
        for i in range(n)
    ]


async def test_a_durable_holds_at_most_its_bytes_in_flight(tmp_path: Path) -> None:
    cfg = Config(
        data_dir=str(tmp_path), fsync="never", max_message_bytes=4096, max_in_flight_bytes=4096
    )
    broker = Broker(cfg, SqliteStore(tmp_path, fsync="never"))
    await broker.start()
    try:
        options = DurableOptions(max_in_flight=100_000)
        session = await broker.subscribe_durable(DEV_PRINCIPAL, "big", "t.>", options)
        consumer = session.consumer
        # 40 events of about 1 KiB: far fewer than max_in_flight, four times the budget.
        for k in range(4):
            await broker.publish(DEV_PRINCIPAL, "t.x", _events(10, 1000, f"b{k}"))
        await eventually(lambda: len(consumer.pending) > 0, timeout=5)
        # Nothing is read from the session: dispatch stops at the budget (4 KiB = 3 frames
        # below it, the 4th passes it), whatever the order of commits and dispatches.
        await consumer.pump()
        assert 0 < len(consumer.pending) <= 4
        assert consumer.table.bytes < cfg.max_in_flight_bytes + 1100
        # Acks make room: everything arrives, in order, once each.
        got: list[int] = []
        async with asyncio.timeout(10):
            while len(got) < 40:
                body = await session.outbox.take()
                assert body is not None
                ids = [d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
                got.extend(ids)
                consumer.ack(ids)
                assert consumer.table.bytes < cfg.max_in_flight_bytes + 1100
        assert len(got) == len(set(got)) == 40 and got == sorted(got)
    finally:
        await broker.stop()


async def test_a_round_of_redeliveries_yields_to_other_tasks(tmp_path: Path) -> None:
    """Fairness: 3,000 events due at once go out in steps, with the event loop free between
    them, so another org's publish is not held for the whole round."""
    cfg = Config(data_dir=str(tmp_path), fsync="never")
    broker = Broker(cfg, SqliteStore(tmp_path, fsync="never"))
    await broker.start()
    try:
        options = DurableOptions(max_in_flight=5000)
        session = await broker.subscribe_durable(DEV_PRINCIPAL, "round", "r.>", options)
        consumer = session.consumer
        for k in range(6):
            await broker.publish(DEV_PRINCIPAL, "r.x", _events(500, 10, f"r{k}"))
        ids: list[int] = []
        async with asyncio.timeout(10):
            while len(ids) < 3000:
                body = await session.outbox.take()
                assert body is not None
                ids += [d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        seen: list[int] = []
        put = session.outbox.put

        def counting_put(frames: bytes, count: int = 1) -> None:
            seen.append(ticks)
            put(frames, count)

        session.outbox.put = counting_put  # type: ignore[method-assign]
        task = asyncio.create_task(ticker())
        consumer.nack(ids, 0.0)  # all 3,000 due at once
        await eventually(lambda: len(seen) == 3000, timeout=10)
        task.cancel()
        # The ticker ran between steps of the round: one run of 3,000 would see one value.
        assert len(set(seen)) >= 3000 // 256
    finally:
        await broker.stop()
