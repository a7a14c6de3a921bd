"""Failover between several targets (issue 9), against two real ``lockgate serve`` processes
on ephemeral ports: the first is killed (SIGKILL) and the client carries on through the
second. The two embedded brokers share nothing (no cluster): this tests the client, which
moves its unary calls, publishes and subscriptions to the next target."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

from lockgate.broker.testing import run_broker
from lockgate.clients import Client, Message, Subscription, Unavailable
from lockgate.clients._targets import parse_targets

pytestmark = pytest.mark.e2e

DEADLINE = 5.0
"""What the client promises: it carries on through the next target within 5 s."""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_targets_are_a_list_or_comma_separated() -> None:
    assert parse_targets("a:1") == ["a:1"]
    assert parse_targets(" a:1, grpcs://b:2 ,") == ["a:1", "grpcs://b:2"]
    assert parse_targets(["a:1", "b:2"]) == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="no broker address"):
        parse_targets(" , ")


async def receive_a_marker(c: Client, sub: Subscription, subject: str) -> Message:
    """Publishes markers until ``sub`` gets one: a subscription re-opened on the second
    broker sees only what is published there after it re-opened."""
    while True:
        await c.publish(subject, "marker")
        try:
            return await asyncio.wait_for(anext(sub), 0.2)
        except TimeoutError:
            continue


async def test_a_killed_broker_is_replaced_by_the_next_target() -> None:
    async with (
        run_broker() as first,
        run_broker() as second,
        Client(f"{first.target},{second.target}", connect_timeout=10) as c,
    ):
        assert c.targets == [first.target, second.target] and c.target == first.target
        durable = await c.subscription("jobs.>", durable="worker")
        ephemeral = await c.subscription("jobs.>")
        before = await c.publish("jobs.a", 1)
        for sub in (durable, ephemeral):
            msg = await asyncio.wait_for(anext(sub), 10)
            assert msg.id == before
            await msg.ack()

        await first.kill()
        loop = asyncio.get_running_loop()
        started = loop.time()
        # A unary call, a publish and both subscriptions carry on within the deadline.
        await asyncio.wait_for(c.admin.list_durables(), DEADLINE)
        after = await asyncio.wait_for(c.publish("jobs.b", 2), DEADLINE)
        got = await asyncio.wait_for(
            asyncio.gather(
                receive_a_marker(c, durable, "jobs.m"),
                receive_a_marker(c, ephemeral, "jobs.m"),
            ),
            DEADLINE - (loop.time() - started),
        )
        assert c.target == second.target and c.failovers >= 1
        assert durable.reconnects >= 1 and ephemeral.reconnects >= 1
        assert all(m.data in (2, "marker") for m in got)  # published after the kill
        for m in got:
            await m.ack()
        # The durable re-bound on the second broker by its name (from new events there).
        assert "worker" in [d.name for d in await c.admin.list_durables()]
        # The publish went to the second broker once, with its event id.
        stored = [e async for e in c.query_events("jobs.b")]
        assert [e.id for e in stored] == [after]
        await durable.close()
        await ephemeral.close()


async def test_connect_skips_a_dead_first_target_and_fails_when_all_are_dead() -> None:
    dead = f"127.0.0.1:{closed_port()}"
    async with run_broker() as alive:
        async with Client([dead, alive.target], connect_timeout=10) as c:
            assert c.target == alive.target
            assert await c.publish("x.y", 1)
        # The CLI takes the same list in --server (and LOCKGATE_SERVER).
        proc = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "lockgate.broker.cli",
                "pub",
                "x.cli",
                "1",
                "--server",
                f"{dead},{alive.target}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
    with pytest.raises(Unavailable, match="cannot reach any broker"):
        async with Client([dead, f"127.0.0.1:{closed_port()}"], connect_timeout=1.5):
            pass


async def test_two_reports_of_one_broken_connection_move_the_client_once() -> None:
    """A publish stream and a subscription that break together fail over once, not back."""
    from lockgate.clients._channel import Connection
    from lockgate.clients._targets import Targets

    targets = Targets(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], Connection)
    try:
        first = targets.current
        targets.broken(first)
        targets.broken(first)
        assert (targets.target, targets.failovers) == ("127.0.0.1:2", 1)
        targets.broken(targets.current)
        targets.broken(targets.current)
        assert targets.target == "127.0.0.1:1"  # round the list, and on
        single = Targets(["127.0.0.1:1"], Connection)
        single.broken(single.current)
        assert single.failovers == 0
        await single.close()
    finally:
        await targets.close()
