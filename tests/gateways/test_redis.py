"""Redis ingest against the real Redis server: lists, streams, dead letters, recovery."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from lockgate.gateways.redis import RedisIngest, RedisSettings, _xack_command
from tests.gateways.gw_kit import Local, count_events, unique
from tests.support import eventually

pytestmark = pytest.mark.redis


@pytest_asyncio.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


def ce(i: int, **extra: object) -> str:
    return json.dumps({"specversion": "1.0", "id": f"r{i}", "source": "/r", "type": "t", **extra})


async def test_list_ingest_and_dead_letters(
    local: Local, r: aioredis.Redis, redis_url: str
) -> None:
    prefix = unique("lg:")
    key, dlq, subject = f"{prefix}:in", f"{prefix}:dlq", unique("rl.")
    ingest = RedisIngest(
        local.api,
        RedisSettings(url=redis_url, lists={key: subject}, dead_letter=dlq, block=0.2),
    )
    await ingest.start()
    try:
        await r.lpush(
            key,
            ce(1, data={"a": 1}),
            json.dumps({"data": [1, 2], "type": "job.created"}),
            "{oops",
            json.dumps({"foo": 1}),
            json.dumps({"specversion": "1.0", "id": "x", "source": "/r"}),  # no type
        )
        await eventually(lambda: _llen(r, dlq, 3))
        assert await count_events(local.api, subject) == 2
    finally:
        await ingest.stop()
    events, _ = await local.api.query(None, subject)
    assert [e.event.type for e in events] == ["t", "job.created"]
    reasons = sorted(json.loads(x)["reason"] for x in await r.lrange(dlq, 0, -1))
    assert reasons == ["INVALID_EVENT", "MALFORMED_JSON", "MISSING_ATTRIBUTE"]
    record = json.loads((await r.lrange(dlq, 0, -1))[-1])
    assert record["origin"] == f"list:{key}" and record["entry"] and record["hint"]
    assert await count_events(local.api) == 2  # nothing else reached the log
    await r.delete(key, dlq)


async def _llen(r: aioredis.Redis, key: str, n: int) -> bool:
    return int(await r.llen(key)) >= n


async def test_stream_ingest_acks_after_store(
    local: Local, r: aioredis.Redis, redis_url: str
) -> None:
    prefix = unique("lg:")
    stream, dlq, subject = f"{prefix}:s", f"{prefix}:dlq", unique("rs.")
    for i in range(50):
        await r.xadd(stream, {"event": ce(i, data=i)})
    await r.xadd(stream, {"data": json.dumps({"k": "v"})})
    await r.xadd(stream, {"event": "[1, 2"})
    await r.xadd(stream, {"other": "x"})
    settings = RedisSettings(
        url=redis_url, streams={stream: subject}, dead_letter=dlq, block=0.2, batch=20
    )
    ingest = RedisIngest(local.api, settings)
    await ingest.start()
    try:
        await eventually(lambda: _count(local, subject, 51))
        await eventually(lambda: _llen(r, dlq, 2))
        await eventually(lambda: _no_pending(r, stream, settings.group))
    finally:
        await ingest.stop()
    assert ingest.metrics["xacked"] == 53 and ingest.metrics["xack_short"] == 0
    reasons = sorted(json.loads(x)["reason"] for x in await r.lrange(dlq, 0, -1))
    assert reasons == ["INVALID_EVENT", "MALFORMED_JSON"]
    events, _ = await local.api.query(None, subject, limit=1000)
    assert events[-1].event.id.startswith(f"{stream}/")
    await r.delete(stream, dlq)


async def _count(local: Local, subject: str, n: int) -> bool:
    return await count_events(local.api, subject) >= n


async def _no_pending(r: aioredis.Redis, stream: str, group: str) -> bool:
    info = await r.xpending(stream, group)
    return int(info["pending"]) == 0


async def test_stream_pending_entries_are_recovered_once(
    local: Local, r: aioredis.Redis, redis_url: str
) -> None:
    """A previous run read entries and died before XACK: the next run publishes them, and
    an entry that had already reached the broker is deduplicated, not stored twice."""
    prefix = unique("lg:")
    stream, subject = f"{prefix}:s", unique("rr.")
    settings = RedisSettings(
        url=redis_url,
        streams={stream: subject},
        dead_letter=f"{prefix}:dlq",
        block=0.2,
        consumer="c1",
    )
    await r.xgroup_create(stream, settings.group, id="0", mkstream=True)
    for i in range(10):
        await r.xadd(stream, {"data": json.dumps(i)})
    # The "crashed" run: read everything, stored the first three, acked nothing.
    got = await r.xreadgroup(settings.group, "c1", {stream: ">"}, count=100)
    first = got[0][1][:3]
    from lockgate.gateways._ingest import parse_entry

    events = [
        parse_entry(
            b'{"data":' + f[b"data"] + b"}",
            f"{stream}/{eid.decode()}",
            f"redis://stream:{stream}",
            "t",
        )
        for eid, f in first
    ]
    await local.api.publish(None, subject, events)
    ingest = RedisIngest(local.api, settings)
    await ingest.start()
    try:
        await eventually(lambda: _no_pending(r, stream, settings.group))
    finally:
        await ingest.stop()
    stored, _ = await local.api.query(None, subject)
    assert sorted(e.event.text_data for e in stored) == sorted(str(i) for i in range(10))
    await r.delete(stream)


async def test_default_consumer_recovers_its_own_pending_after_a_restart(
    local: Local, r: aioredis.Redis, redis_url: str
) -> None:
    """With default settings, entries a crashed gateway had read (and not acked) are
    published by the next gateway: the default consumer name is stable."""
    prefix = unique("lg:")
    stream, subject = f"{prefix}:s", unique("rd.")
    settings = RedisSettings(url=redis_url, streams={stream: subject}, block=0.2)
    await r.xgroup_create(stream, settings.group, id="0", mkstream=True)
    for i in range(5):
        await r.xadd(stream, {"data": json.dumps(i)})
    # The crashed run (same host, same default name) read everything and acked nothing.
    await r.xreadgroup(settings.group, RedisSettings().consumer, {stream: ">"}, count=100)
    ingest = RedisIngest(local.api, settings)
    await ingest.start()
    try:
        await eventually(lambda: _no_pending(r, stream, settings.group))
    finally:
        await ingest.stop()
    assert await count_events(local.api, subject) == 5
    await r.delete(stream)


async def test_entries_pending_at_a_vanished_consumer_are_claimed(
    local: Local, r: aioredis.Redis, redis_url: str
) -> None:
    """A gateway that crashed under another name (an old host-pid default, another
    container) never comes back: its pending entries are claimed after claim_idle."""
    prefix = unique("lg:")
    stream, subject = f"{prefix}:s", unique("rc.")
    settings = RedisSettings(
        url=redis_url, streams={stream: subject}, block=0.1, claim_idle=0.3, consumer="new"
    )
    await r.xgroup_create(stream, settings.group, id="0", mkstream=True)
    for i in range(4):
        await r.xadd(stream, {"data": json.dumps(i)})
    await r.xreadgroup(settings.group, "gone-host-1234", {stream: ">"}, count=100)
    ingest = RedisIngest(local.api, settings)
    await ingest.start()
    try:
        await eventually(lambda: _no_pending(r, stream, settings.group))
    finally:
        await ingest.stop()
    stored, _ = await local.api.query(None, subject)
    assert sorted(e.event.text_data for e in stored) == ["0", "1", "2", "3"]
    assert ingest.metrics["claimed"] == 4
    await r.delete(stream)


async def test_list_ingest_survives_redis_errors(
    local: Local, r: aioredis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real Redis error (the dead-letter key holds a string: WRONGTYPE) is reported and
    retried; the popped entries are not lost, and the loop goes on once Redis agrees."""
    prefix = unique("lg:")
    key, dlq, subject = f"{prefix}:in", f"{prefix}:dlq", unique("re.")
    await r.set(dlq, "not a list")
    ingest = RedisIngest(
        local.api,
        RedisSettings(url=redis_url, lists={key: subject}, dead_letter=dlq, block=0.1, retry=0.1),
    )
    await ingest.start()
    try:
        await r.lpush(key, "{oops", ce(1, data=1))
        await eventually(lambda: "gateway.ingest.error source=list:" in caplog.text)
        await r.delete(dlq)
        await eventually(lambda: _llen(r, dlq, 1))
        await eventually(lambda: _count(local, subject, 1))
        await r.lpush(key, ce(2, data=2))
        await eventually(lambda: _count(local, subject, 2))
    finally:
        await ingest.stop()
    assert "WRONGTYPE" in caplog.text
    await r.delete(key, dlq)


def test_stream_entries_are_read_as_the_parser_gives_them() -> None:
    """Replies are used as hiredis parses them (no dict per entry): the event field first
    is the fast case, any other order or the data field still works, RESP3 maps too."""
    from lockgate.gateways.redis import _event_field, _stream_reply

    assert _event_field([b"event", b"{}"]) == b"{}"
    assert _event_field([b"trace", b"t", b"event", b"{}"]) == b"{}"
    assert _event_field([b"data", b"[1]"]) == b'{"data":[1]}'
    assert _event_field([b"other", b"x"]) is None
    entries = [(b"1-0", [b"event", b"{}"]), (b"2-0", None)]
    assert _stream_reply([[b"s", entries]]) == [[b"s", entries]]
    assert _stream_reply({b"s": entries}) == [(b"s", entries)]
    assert _stream_reply(None) == []


async def test_stop_during_a_blocking_read_returns(
    local: Local, r: aioredis.Redis, redis_url: str
) -> None:
    """stop() lets the loops finish their blocking reads instead of cancelling them:
    redis-py with hiredis could swallow that cancel and wait for ever (stop() hung)."""
    prefix = unique("lg:")
    stream, key = f"{prefix}:s", f"{prefix}:l"
    settings = RedisSettings(
        url=redis_url, streams={stream: unique("rs.")}, lists={key: unique("rl.")}, block=0.3
    )
    for _ in range(3):
        ingest = RedisIngest(local.api, settings)
        await ingest.start()
        await eventually(lambda: _reading(r, stream, settings.group))
        await asyncio.wait_for(ingest.stop(), 10)
        assert all(t.done() for t in ingest._tasks)
    await r.delete(stream)


async def _reading(r: aioredis.Redis, stream: str, group: str) -> bool:
    # the loop has reached its blocking read once its consumer exists in the group
    return any(c["name"] for c in await r.xinfo_consumers(stream, group))


def test_the_xack_command_is_packed_as_redis_py_packs_it() -> None:
    ids = [b"1733000000000-0", b"1733000000000-17"]
    conn = aioredis.Redis().connection_pool.make_connection()
    assert _xack_command("s:é", "g", ids) == b"".join(conn.pack_command("XACK", "s:é", "g", *ids))
