"""A failed store write acknowledges nothing and forgets the batch's dedup keys, so the
publisher's retry of the same (source, id) is accepted and stored once; no subscriber,
durable or ephemeral, ever sees the events of the failed write (deliver after commit)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.config import Config
from lockgate.broker.errors import BrokerError, Unavailable
from lockgate.broker.node import Broker
from lockgate.broker.store import Batch, OnStored, Store
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2


class FailingStore:
    """A real store whose batch writes fail while ``failing`` is set."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def append(
        self, batches: Sequence[Batch], on_stored: OnStored | None = None
    ) -> Awaitable[list[int]]:
        if not self.failing:
            return self.inner.append(batches, on_stored)
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        fut.set_exception(Unavailable("the disk is full", reason="STORE_UNAVAILABLE"))
        return fut


def event(eid: str) -> cloudevent_pb2.CloudEvent:
    return cloudevent_pb2.CloudEvent(id=eid, source="/src", spec_version="1.0", type="t")


async def test_failed_write_acks_nothing_and_a_retry_is_accepted(tmp_path: Path) -> None:
    store = FailingStore(SqliteStore(tmp_path, fsync="never"))
    broker = Broker(Config(data_dir=str(tmp_path)), cast(Store, store))
    await broker.start()
    try:
        session = await broker.subscribe_durable(DEV_PRINCIPAL, "w", "sw.>")
        live = await broker.subscribe_ephemeral(DEV_PRINCIPAL, "sw.>", "")
        store.failing = True
        committed = store.committed_seq()
        with pytest.raises(BrokerError) as exc:
            await broker.publish(DEV_PRINCIPAL, "sw.a", [event("e1"), event("e2")])
        assert exc.value.reason == "STORE_UNAVAILABLE"
        assert store.committed_seq() == committed  # the failed write took no log position

        store.failing = False
        retry = await broker.publish(DEV_PRINCIPAL, "sw.a", [event("e1"), event("e2")])
        assert retry.duplicates == [] and retry.errors == [] and all(retry.ids)
        again = await broker.publish(DEV_PRINCIPAL, "sw.a", [event("e1")])
        assert (again.ids, again.duplicates) == ([retry.ids[0]], [0])

        stored, _ = await broker.query(DEV_PRINCIPAL, "sw.>")
        assert [(e.id, e.event.id) for e in stored] == list(
            zip(retry.ids, ["e1", "e2"], strict=True)
        )
        # The durable gets the stored events only: the failed batch never reaches it.
        body = await asyncio.wait_for(session.outbox.take(), 5)
        assert body is not None
        got = [d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
        assert got == retry.ids
        # Nor does an ephemeral subscriber (deliver after commit): its first delivery is
        # the retry, never the events whose publish failed.
        body = await asyncio.wait_for(live.outbox.take(), 5)
        assert body is not None
        first = [d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries]
        assert first == retry.ids
        broker.unsubscribe(live)
    finally:
        await broker.stop()
