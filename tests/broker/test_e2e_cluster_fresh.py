"""Fresh frames across real cluster nodes (three ``lockgate serve`` processes, NATS, PostgreSQL,
Redis): the Python client's frames of generated ids make no lookup in the Redis dedup window
(Redis MONITOR on the cluster's key prefix), frames with a caller's id still do, and another
node's lookup of a fresh frame's events answers them as duplicates (stored once)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

import pytest
import redis.asyncio as aredis

from lockgate.clients import Client
from tests.broker.test_e2e_cluster import _client, _cluster
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


async def _watch(redis_url: str, prefix: str, into: list[str]) -> None:
    """Keeps the window's claims of keys under ``prefix`` that Redis runs (its scripts' too),
    as MONITOR's raw lines (redis-py's parse of them misreads an argument ending in a
    backslash, which a key's digest may)."""
    async with aredis.Redis.from_url(redis_url).monitor() as monitor:
        while True:
            raw = await monitor.connection.read_response()
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            if f'"SET" "{prefix}' in line and '"NX"' in line:
                into.append(line)


async def test_fresh_frames_claim_without_a_lookup_and_stay_exact(
    nats_url: str, pg_fresh_dsn: str, redis_url: str
) -> None:
    async with _cluster(nats_url, pg_fresh_dsn, redis_url) as cluster:
        prefix = f"lgt:{cluster.prefix[1:]}:dd2:"
        sets: list[str] = []
        watcher = asyncio.create_task(_watch(redis_url, prefix, sets))
        first: Client = await _client(cluster.nodes[0], cluster.keys["acme"])
        second: Client = await _client(cluster.nodes[1], cluster.keys["acme"])
        try:

            async def monitored() -> bool:  # the MONITOR connection is up
                await first.publish("warm.up", 0)
                return bool(sets)

            await eventually(monitored)
            before = len(sets)
            results = await first.publish_batch("fresh.a", ["x"] * 20)
            assert all(r.ok and not r.duplicate for r in results)
            # A caller's id: looked up (SET ... NX PX ... GET), on either node. MONITOR
            # lists commands in the order Redis ran them: the fresh frame's come first.
            own = await first.publish("fresh.b", 1, id="mine", source="/s")
            again = await second.publish("fresh.b", 1, id="mine", source="/s")
            assert own == again
            await asyncio.wait_for(_until(sets, lambda got: _looked_up(got) == 2), 10)
            fresh = list(itertools.takewhile(lambda line: not line.endswith('"GET"'), sets))
            assert len(fresh) - before >= 20  # the fresh frame's (and any late warm-up's)

            # The retry through another node of a fresh frame's events: duplicates.
            await eventually(lambda: _logged(first, "fresh.a", 20))  # the message logger's
            stored = [e async for e in first.query_events("fresh.a")]
            assert [e.id for e in stored] == [r.id for r in results]
            for event in stored[:3]:
                retry = await second.publish(
                    "fresh.a", "x", id=event.event.id, source=event.event.source
                )
                assert retry == event.id
            # Anything the retries stored would be logged before this later event.
            assert await second.publish("fresh.done", 0)
            await eventually(lambda: _logged(first, "fresh.done", 1))
            assert len([e async for e in first.query_events("fresh.a")]) == 20
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await first.close()
            await second.close()


async def _logged(client: Client, subject: str, n: int) -> bool:
    return len([e async for e in client.query_events(subject)]) == n


def _looked_up(lines: list[str]) -> int:
    return sum(line.endswith('"GET"') for line in lines)


async def _until(into: list[str], done: Callable[[list[str]], bool]) -> None:
    while not done(into):
        await asyncio.sleep(0.01)
