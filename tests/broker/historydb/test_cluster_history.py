"""The cluster store serves History from the message logger's table: the lookup by
CloudEvents id goes through its index, and the lag it reports drains to 0."""

from __future__ import annotations

import uuid
from pathlib import Path

from lockgate.broker import wire
from lockgate.broker.config import Config
from lockgate.broker.history import CloudEventIndex, History, HistoryLagSource
from lockgate.broker.ids import IdGenerator
from lockgate.broker.node import Broker
from lockgate.broker.store import Batch
from lockgate.broker.store.cluster import ClusterStore
from lockgate.broker.store.jetstream import JetStreamLog
from tests.broker.historydb.conftest import event
from tests.support.waiting import eventually


async def test_history_by_cloudevent_id_and_the_lag(
    nats_url: str, pg_fresh_dsn: str, tmp_path: Path
) -> None:
    name = "LGH_" + uuid.uuid4().hex[:12]
    store = ClusterStore(pg_fresh_dsn, JetStreamLog(nats_url, stream=name, root=name.lower()))
    await store.open()
    try:
        assert isinstance(store, CloudEventIndex) and isinstance(store, HistoryLagSource)
        gen = IdGenerator(3)
        batches = []
        for subject, ces in [("orders.eu", ["u-1", "u-2"]), ("billing.eu", ["u-1"])]:
            ids = gen.next_block(len(ces))
            raw = [event(ce).SerializeToString() for ce in ces]
            body = b"".join(wire.delivery_frames(ids, wire.subject_field(subject), raw))
            batches.append(Batch(ids[0], ids[-1], "acme", subject, len(ids), "v1", body))
        await store.append(batches)
        history = History(store)

        async def by_id() -> list[int] | None:
            events, cursor = await history.query("acme", ">", cloudevent_id="u-1")
            assert cursor == 0
            return [e.id for e in events] if len(events) == 2 else None

        found = await eventually(by_id, what="both events logged")
        assert found == [batches[0].first_id, batches[1].first_id]
        await eventually(lambda: store.history_lag() == 0, what="the lag at 0")
        node = Broker(Config(data_dir=str(tmp_path)), store)  # what GetStatus reads
        assert node.history_lag() == 0
        events, _ = await history.query("acme", "orders.*", cloudevent_id="u-1")
        assert [e.id for e in events] == [batches[0].first_id]
        events, _ = await history.query("globex", ">", cloudevent_id="u-1")
        assert events == []  # another org's events are not found by their id
    finally:
        await store.log._api(f"STREAM.DELETE.{name}")
        await store.close()
