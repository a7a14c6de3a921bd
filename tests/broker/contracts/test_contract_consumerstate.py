"""The :class:`broker.store.ConsumerStateStore` contract, for every metadata backend: a
position plus a sparse pending table, changed incrementally, surviving a reopen."""

from __future__ import annotations

from lockgate.broker.store import ConsumerRecord, ConsumerStateStore, LogPosition, MetadataStore
from tests.broker.contracts.contract_stores import OpenMetadata, metadata, open_metadata

__all__ = ["metadata", "open_metadata"]


def _rec(name: str = "d1", **kw: object) -> ConsumerRecord:
    return ConsumerRecord("o", name, "x.>", ack_wait_ms=1500, max_deliveries=3, **kw)  # type: ignore[arg-type]


async def _reload(s: ConsumerStateStore, name: str = "d1") -> ConsumerRecord:
    (rec,) = [r for r in await s.load_consumers() if r.name == name]
    return rec


async def test_create_and_load(metadata: ConsumerStateStore) -> None:
    await metadata.create_consumer(
        _rec(position=LogPosition(4, 99), pending={7: 2}, endpoint_url="https://e/x")
    )
    rec = await _reload(metadata)
    assert rec.position == (4, 99) and rec.pending == {7: 2}
    assert (rec.ack_wait_ms, rec.max_deliveries, rec.endpoint_url) == (1500, 3, "https://e/x")


async def test_changes_are_incremental(metadata: ConsumerStateStore) -> None:
    await metadata.create_consumer(_rec())
    await metadata.change_consumer(
        "o", "d1", delivered=[1, 2, 3], position=LogPosition(2), delivered_id=3
    )
    rec = await _reload(metadata)
    assert rec.pending == {1: 1, 2: 1, 3: 1}
    assert rec.position == (2, 0) and rec.delivered_id == 3
    await metadata.change_consumer("o", "d1", drop=[2])  # an ack
    await metadata.change_consumer("o", "d1", put={3: 2})  # a redelivery
    assert (await _reload(metadata)).pending == {1: 1, 3: 2}


async def test_a_delivery_acked_before_it_was_written(metadata: ConsumerStateStore) -> None:
    await metadata.create_consumer(_rec())
    first = metadata.change_consumer("o", "d1", delivered=[10, 11])
    second = metadata.change_consumer("o", "d1", drop=[10])
    await first
    await second
    assert (await _reload(metadata)).pending == {11: 1}


async def test_redrive_after_drop(metadata: ConsumerStateStore) -> None:
    await metadata.create_consumer(_rec())
    await metadata.change_consumer("o", "d1", delivered=[5])
    drop = metadata.change_consumer("o", "d1", drop=[5])  # dead-lettered ...
    back = metadata.change_consumer("o", "d1", put={5: 0})  # ... and redriven at once
    await drop
    await back
    assert (await _reload(metadata)).pending == {5: 0}


async def test_state_survives_reopen(open_metadata: OpenMetadata) -> None:
    async with open_metadata() as s:
        await s.create_consumer(_rec())
        await s.change_consumer("o", "d1", delivered=[1, 2], position=LogPosition(9, 2))
        await s.change_consumer("o", "d1", drop=[1])
    async with open_metadata() as s:
        rec = await _reload(s)
        assert rec.pending == {2: 1} and rec.position == (9, 2)


async def test_delete(metadata: MetadataStore) -> None:
    await metadata.create_consumer(_rec())
    await metadata.change_consumer("o", "d1", delivered=[1])
    assert await metadata.delete_consumer("o", "d1")
    assert not await metadata.delete_consumer("o", "d1")
    assert await metadata.load_consumers() == []
    # Recreated under the same name it starts clean.
    await metadata.create_consumer(_rec())
    assert (await _reload(metadata)).pending == {}


async def test_consumers_are_apart(metadata: ConsumerStateStore) -> None:
    await metadata.create_consumer(_rec("a"))
    await metadata.create_consumer(_rec("b"))
    await metadata.change_consumer("o", "a", delivered=[1])
    await metadata.change_consumer("o", "b", delivered=[2])
    await metadata.change_consumer("o", "a", drop=[2])  # not a's: nothing happens to b
    assert (await _reload(metadata, "a")).pending == {1: 1}
    assert (await _reload(metadata, "b")).pending == {2: 1}
