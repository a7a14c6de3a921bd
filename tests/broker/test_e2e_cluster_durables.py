"""A durable's owner killed with kill -9 under load (three ``lockgate serve`` processes on one
NATS JetStream, PostgreSQL and Redis): the streams on the surviving nodes carry on, a
survivor takes the durable on once the lease runs out, and every event the publisher was
told stored is delivered and acked, the ones in flight when the owner died again."""

from __future__ import annotations

import asyncio
import collections
import contextlib

import pytest

from lockgate.clients import Client, LockgateError, Message
from tests.broker.test_e2e_cluster import _client, _cluster
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


async def test_kill_9_of_a_durables_owner_under_load(
    nats_url: str, pg_fresh_dsn: str, redis_url: str
) -> None:
    async with _cluster(nats_url, pg_fresh_dsn, redis_url) as cluster:
        n0, n1, n2 = cluster.nodes
        key = cluster.keys["acme"]
        # n0 binds first: it takes the durable on (its lease), then its stream goes away.
        first = await _client(n0, key)
        await (await first.subscription("work.>", durable="w", ack_wait=30)).close()
        workers = [await _client(n, key) for n in (n1, n2)]  # relays to n0
        pub = await Client(n1.target, key).connect()
        got: list[Message] = []
        held: list[Message] = []
        published: list[int] = []
        stop = asyncio.Event()

        async def work(client: Client) -> None:
            async for msg in await client.subscription("work.>", durable="w"):
                got.append(msg)
                if msg.data["n"] % 5 == 0 and msg.id not in {m.id for m in held}:
                    held.append(msg)  # in progress when the owner dies: never acked
                else:
                    await msg.ack()

        async def publish() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                with contextlib.suppress(LockgateError):  # not acknowledged: not owed
                    published.append(await pub.publish("work.x", {"n": n}))
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(work(c)) for c in workers]
        tasks.append(asyncio.create_task(publish()))
        try:
            await eventually(lambda: len(held) >= 5 and len(got) >= 50, timeout=20)
            await n0.kill()  # kill -9 of the owner
            before = len(published)
            await eventually(lambda: len(published) >= before + 50, timeout=20)
            stop.set()
            # A survivor took the durable on: the held ones come again, and every event
            # the publisher was told stored is delivered.
            held_ids = {m.id for m in held}

            def done() -> bool:
                # Delivered again: from the stored pending (attempt 2), or, held for less
                # than a second (not written yet), from the log once more (attempt 1).
                times = collections.Counter(m.id for m in got)
                again = {i for i in held_ids if times[i] < 2}
                missing = set(published) - {m.id for m in got}
                assert not again and not missing, (
                    f"{len(again)} of {len(held_ids)} held not redelivered, {len(missing)} "
                    f"of {len(published)} published not delivered ({len(got)} deliveries)"
                )
                return True

            await eventually(done, timeout=30)
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in (first, pub, *workers):
                with contextlib.suppress(Exception):
                    await c.close()
