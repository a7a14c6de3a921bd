"""The cluster store: the log on JetStream, the metadata and the history in PostgreSQL (the
message logger it runs fills the history), and the policy sets followed from it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from lockgate.broker.ids import IdGenerator
from lockgate.broker.policies import PolicyManager
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.store import ApiKeyRecord, LogPosition
from lockgate.broker.store.cluster import ClusterStore
from lockgate.broker.store.jetstream import JetStreamLog
from lockgate.broker.store.postgres import PgStore
from tests.broker.contracts.contract_stores import make_batch
from tests.support.waiting import eventually

POLICY = 'policy open on "a.>" { allow publish }\n'
POLICY_B = 'policy shut on "x.>" { deny publish }\n'


@contextlib.asynccontextmanager
async def _cluster_store(nats_url: str, dsn: str, name: str) -> AsyncIterator[ClusterStore]:
    store = ClusterStore(dsn, JetStreamLog(nats_url, stream=name, root=name.lower()), max_size=4)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_log_metadata_and_history(nats_url: str, pg_fresh_dsn: str) -> None:
    name = "LGT_" + uuid.uuid4().hex[:12]
    async with _cluster_store(nats_url, pg_fresh_dsn, name) as store:
        try:
            gen = IdGenerator(1)
            a = make_batch(gen, "acme", "orders.eu", 3)
            b = make_batch(gen, "globex", "orders.eu", 2)
            sa, _ = await store.append([a, b])
            assert store.committed_seq() == sa + 1
            assert [x.first_id for x in await store.read_log("acme", LogPosition(0))] == [
                a.first_id
            ]
            assert await store.last_id() == b.last_id
            # The message logger copies the log into PostgreSQL: history reads by id.
            found = await eventually(lambda: store.batch_containing("acme", a.first_id + 1))
            assert found is not None and found.subject == "orders.eu"
            assert await store.batch_containing("globex", a.first_id + 1) is None
            # batch_containing also finds batches in the JetStream log (a new durable owner
            # must see what the logger has not written yet): wait for the history itself.
            got = await eventually(lambda: store.read_batches("acme", 0))
            assert [x.first_id for x in got] == [a.first_id]
            # The metadata roles are PostgreSQL's.
            await store.put_key(ApiKeyRecord("k1", "h", "acme", "bot", ("admin",), 1))
            key = await store.get_key("k1")
            assert key is not None and key.org == "acme"
        finally:
            await store.log._api(f"STREAM.DELETE.{name}")


async def test_a_policy_set_put_on_one_node_runs_on_the_others(pg_fresh_dsn: str) -> None:
    """Two nodes' policy managers on one shared store: what one puts, the other loads on
    a notice (nudge) or, without one, by its poll."""
    one, two = PgStore(pg_fresh_dsn, max_size=2), PgStore(pg_fresh_dsn, max_size=2)
    await one.open()
    await two.open()
    gate_one, gate_two = PolicyGate(), PolicyGate()
    here = PolicyManager(gate_one, one)  # type: ignore[arg-type]
    there = PolicyManager(gate_two, two)  # type: ignore[arg-type]
    try:
        await here.start()
        await there.start()
        there.follow_store(interval=0.2)
        first = await here.apply({"a.policy": POLICY}, "rpc")
        there.nudge()  # the policy_swapped notice
        await eventually(lambda: gate_two.version == first.version)
        second = await here.apply({"a.policy": POLICY_B}, "rpc")  # no notice: the poll
        await eventually(lambda: gate_two.version == second.version)
        mine = await here.apply({"o.policy": POLICY_B}, "rpc", org="acme")
        await eventually(lambda: gate_two.version_of("acme") == gate_one.version_of("acme"))
        assert gate_two.org_policies["acme"].version == mine.version
    finally:
        await there.stop()
        await here.stop()
        await one.close()
        await two.close()
