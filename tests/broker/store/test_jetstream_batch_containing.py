"""The JetStream log finds the batch of one event id (what the cluster store falls back on
while the message logger has not written it to the history yet: a durable's new owner
redelivering its pending events must not take them for trimmed)."""

from __future__ import annotations

import uuid

from lockgate.broker.ids import IdGenerator
from lockgate.broker.store import Batch
from lockgate.broker.store.jetstream import JetStreamLog
from tests.broker.contracts.contract_stores import make_batch


async def test_the_batch_of_an_event_id_is_read_from_the_log(nats_url: str) -> None:
    name = "LGT_" + uuid.uuid4().hex[:12]
    log = JetStreamLog(nats_url, stream=name, root=name.lower())
    await log.open()
    try:
        one, two = IdGenerator(1), IdGenerator(2)  # two nodes' ids, interleaved
        batches = [
            make_batch(one, "acme", "orders.eu", 3),
            make_batch(two, "globex", "orders.eu", 2),
            make_batch(two, "acme", "orders.us", 4),
            make_batch(one, "acme", "orders.eu", 1),
        ]
        await log.append(batches)

        async def containing(org: str, event_id: int) -> Batch | None:
            # No retry: a pull the server's pending count made it wait on is answered at
            # its expiry (it was "no answer to a pull", UNAVAILABLE, once in a few reads).
            return await log.batch_containing(org, event_id)

        for b, offset in ((batches[0], 1), (batches[2], 3)):  # behind another node's batch
            found = await containing(b.org, b.first_id + offset)
            assert found is not None and found.first_id == b.first_id, b
        assert await containing("globex", batches[0].first_id) is None  # acme's
    finally:
        await log._api(f"STREAM.DELETE.{name}")
        await log.close()
