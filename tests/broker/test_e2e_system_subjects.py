"""The ``$`` rule end to end: a pattern starting with a wildcard never receives the broker's own
subjects (dead letters here); naming them (``$dlq.>``) does. Router, store queries and durable
patterns agree with the policies (policy.subjects holds the one rule)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2
from tests.broker.e2e_kit import Stubs, event, query_all, subscribe

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_wildcard_subscribers_do_not_get_dead_letters_named_ones_do() -> None:
    async with run_broker() as b, grpc.aio.insecure_channel(b.target) as ch:
        stubs = Stubs(ch)
        everything = await subscribe(stubs.broker, pattern=">")
        two_tokens = await subscribe(stubs.broker, pattern="*.*")
        dead = await subscribe(stubs.broker, pattern="$dlq.>")
        durable_all = await subscribe(stubs.broker, pattern=">", durable="all")
        doomed = await subscribe(
            stubs.broker,
            pattern="jobs.x",
            durable="doomed",
            ack_wait=duration_pb2.Duration(nanos=100_000_000),
            max_deliveries=1,
        )
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject="jobs.x", event=event("doomed")), timeout=10
        )
        [letter] = await dead.collect(1, 10)
        assert letter.subject == "$dlq.doomed"
        # Something published after the dead letter reaches the wildcard subscribers: they are
        # live and in order, so had the dead letter been routed to them it would be there.
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject="jobs.y", event=event("marker")), timeout=10
        )
        got = await everything.collect(2, 10)
        assert [d.subject for d in got] == ["jobs.x", "jobs.y"]
        got = await two_tokens.collect(2, 10)
        assert [d.subject for d in got] == ["jobs.x", "jobs.y"]
        got = await durable_all.collect(2, 10, ack=True)
        assert [d.subject for d in got] == ["jobs.x", "jobs.y"]

        stored = [e.subject for e in await query_all(stubs.broker, ">")]
        assert stored == ["jobs.x", "jobs.y"]
        assert [e.subject for e in await query_all(stubs.broker, "$dlq.>")] == ["$dlq.doomed"]
        assert [e.subject for e in await query_all(stubs.broker, "$dlq.doomed")] == ["$dlq.doomed"]
        for sub in (everything, two_tokens, dead, durable_all, doomed):
            await sub.close()
