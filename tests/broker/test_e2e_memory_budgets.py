"""Memory budgets and the redelivery storm against a real broker (issue 8, resource
exhaustion): a subscriber that never reads holds at most its byte budget of the broker's
memory (an ephemeral one is cut off with SLOW_CONSUMER, a durable one stops getting
deliveries), and one org's never-acking durable at the floor settings cannot make another
org's publishes fail."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import admin_pb2, broker_pb2
from tests.broker.e2e_kit import (
    CloudEvent,
    Metadata,
    Stubs,
    auth,
    error_info,
    event,
    lockgate_cli_in_process,
    open_call,
    publish_batches,
    publish_one,
    subscribe,
    unique,
)
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

BUDGET = 2 << 20
"""subscriber_max_bytes and max_in_flight_bytes of the broker under test."""
EVENT_BYTES = 60_000
BATCH = 16  # ~1 MB frames, under max_message_bytes
BATCHES = 40  # ~38 MB in all: many times the budget


@dataclass
class Budgeted:
    broker: RunningBroker
    evil: Metadata
    acme: Metadata
    acme_admin: Metadata


def _key(data_dir: str, org: str, *role: str) -> str:
    out = lockgate_cli_in_process(  # a fixture's keys: no interpreter start for each
        "keys", "create", "--org", org, "--agent", "a", *role, "--data-dir", data_dir
    )
    return out.strip().splitlines()[0]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def budgeted() -> AsyncIterator[Budgeted]:
    with tempfile.TemporaryDirectory(prefix="lockgate-budget-") as data_dir:
        evil = await asyncio.to_thread(_key, data_dir, "evil")
        acme = await asyncio.to_thread(_key, data_dir, "acme")
        admin = await asyncio.to_thread(_key, data_dir, "acme", "--role", "admin")
        conf = Path(data_dir) / "budgets.toml"
        conf.write_text(
            f"[broker]\nsubscriber_max_bytes = {BUDGET}\nmax_in_flight_bytes = {BUDGET}\n"
        )
        async with run_broker(data_dir=data_dir, extra_args=["--config", str(conf)]) as b:
            yield Budgeted(b, auth(evil), auth(acme), auth(admin))


def _rss(broker: RunningBroker) -> int:
    for line in Path(f"/proc/{broker.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _big_batches(n: int = BATCHES) -> list[list[CloudEvent]]:
    return [[event(b"x" * EVENT_BYTES) for _ in range(BATCH)] for _ in range(n)]


def _ms(ms: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(ms)
    return d


async def test_an_ephemeral_subscriber_that_never_reads_is_cut_off(budgeted: Budgeted) -> None:
    async with grpc.aio.insecure_channel(budgeted.broker.target) as ch:
        s = Stubs(ch)
        subject = unique("stall")
        # The subscriber opens its stream and then reads nothing.
        call, _ = await open_call(s.broker, budgeted.acme, pattern=subject, max_in_flight=100_000)
        responses = await publish_batches(s.broker, subject, _big_batches(), budgeted.acme)
        assert all(not r.errors for r in responses)  # the publisher is never held back
        # What the transport held arrives, then the broker's verdict: SLOW_CONSUMER.
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            while (msg := await asyncio.wait_for(call.read(), 30)) is not grpc.aio.EOF:
                received += len(msg.deliveries)
        code, reason, meta = error_info(exc.value)
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOW_CONSUMER")
        assert meta["max_bytes"] == str(BUDGET)
        assert received < BATCH * BATCHES


async def test_a_durable_stream_that_never_reads_holds_its_budget(budgeted: Budgeted) -> None:
    async with grpc.aio.insecure_channel(budgeted.broker.target) as ch:
        s = Stubs(ch)
        subject = unique("stall")
        name = f"stall-{subject.split('.')[1]}"
        call, _ = await open_call(
            s.broker, budgeted.acme, pattern=subject, durable=name, max_in_flight=100_000
        )
        responses = await publish_batches(s.broker, subject, _big_batches(), budgeted.acme)
        published = [i for r in responses for i in r.ids]

        async def pending() -> int:
            info = await s.admin.GetDurable(
                admin_pb2.GetDurableRequest(name=name), metadata=budgeted.acme_admin, timeout=10
            )
            return info.durable.pending_count

        await eventually(pending, timeout=10)
        # The budget, not max_in_flight, bounds what is handed out to a reader that reads
        # nothing: one frame past it at most.
        assert await pending() <= BUDGET // EVENT_BYTES + 1
        # Reading and acking gets everything, once each, in order.
        got: list[int] = []
        while len(got) < len(published):
            msg = await asyncio.wait_for(call.read(), 30)
            assert msg is not grpc.aio.EOF
            ids = [d.id for d in msg.deliveries]
            got.extend(ids)
            await call.write(broker_pb2.SubscribeRequest(ack=broker_pb2.Ack(ids=ids)))
            assert await pending() <= BUDGET // EVENT_BYTES + 1
        assert got == published
        call.cancel()


async def test_a_redelivery_storm_does_not_fail_another_orgs_publishes(
    budgeted: Budgeted,
) -> None:
    """evil's durable at the floor and caps (ack_wait 100 ms, max_deliveries 1000,
    max_in_flight 100,000) reads everything and acks nothing; acme publishes meanwhile."""
    async with grpc.aio.insecure_channel(budgeted.broker.target) as ch:
        s = Stubs(ch)
        storm = unique("storm")
        call, _ = await open_call(
            s.broker,
            budgeted.evil,
            pattern=storm,
            durable=f"storm-{storm.split('.')[1]}",
            max_in_flight=100_000,
            ack_wait=_ms(100),
            max_deliveries=1000,
        )
        stormed = [[event() for _ in range(100)] for _ in range(20)]
        await publish_batches(s.broker, storm, stormed, budgeted.evil)
        deliveries = 0

        async def read_all() -> None:
            nonlocal deliveries
            while (msg := await call.read()) is not grpc.aio.EOF:
                deliveries += len(msg.deliveries)

        reader = asyncio.create_task(read_all())
        await eventually(lambda: deliveries > 2000, timeout=30)  # redeliveries are flowing
        started, counted = time.monotonic(), deliveries
        victim = unique("victim")
        responses = await publish_batches(
            s.broker, victim, [[event() for _ in range(10)] for _ in range(200)], budgeted.acme
        )
        elapsed = time.monotonic() - started
        redelivered = deliveries - counted
        reader.cancel()
        call.cancel()
        # Every one of acme's 2,000 events was accepted and stored.
        assert len(responses) == 200 and all(not r.errors and len(r.ids) == 10 for r in responses)
        # The storm is bounded: each of evil's 2,000 pending events comes at most once per
        # ack_wait (and backs off from there).
        assert redelivered <= 2000 * (elapsed / 0.1 + 1)


async def test_a_replay_bigger_than_the_budget_is_refused_a_smaller_one_served(
    budgeted: Budgeted,
) -> None:
    """An ephemeral replay is queued whole before the subscriber reads: one that would pass
    ``subscriber_max_bytes`` is refused with SLOW_CONSUMER (not held in memory); one within
    it arrives whole and in order."""
    async with grpc.aio.insecure_channel(budgeted.broker.target) as ch:
        s = Stubs(ch)
        big = unique("bigreplay")
        responses = await publish_batches(s.broker, big, _big_batches(4), budgeted.acme)
        assert all(not r.errors for r in responses)  # ~3.8 MB stored: past the 2 MiB budget
        all_ = broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_ALL)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            call, _ = await open_call(s.broker, budgeted.acme, pattern=big, start=all_)
            await asyncio.wait_for(call.read(), 30)
        code, reason, meta = error_info(exc.value)
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOW_CONSUMER")
        assert meta["max_bytes"] == str(BUDGET)

        small = unique("smallreplay")
        ids = [await publish_one(s.broker, small, f"e{n}", budgeted.acme) for n in range(5)]
        sub = await subscribe(s.broker, budgeted.acme, pattern=small, start=all_)
        try:
            assert [d.id for d in await sub.collect(5, 10)] == ids
        finally:
            await sub.close()
