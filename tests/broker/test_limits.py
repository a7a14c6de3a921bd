"""Token buckets: the in-process one with a fake clock, the Redis one against the real server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from broker.limits import BucketRequest, LocalLimiter, RedisLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_local_bucket_refills_continuously() -> None:
    clock = Clock()
    lim = LocalLimiter(clock)
    (g,) = await lim.take([BucketRequest("k", 2.0, 5, 7)])
    assert g.granted == 5 and g.retry_after == pytest.approx(0.5)
    clock.t += 1.0  # two tokens back
    (g,) = await lim.take([BucketRequest("k", 2.0, 5, 3)])
    assert g.granted == 2
    clock.t += 100
    (g,) = await lim.take([BucketRequest("k", 2.0, 5, 100)])
    assert g.granted == 5  # never more than the burst


async def test_local_hourly_allowance() -> None:
    clock = Clock()
    lim = LocalLimiter(clock)
    req = BucketRequest("h", 3600 / 3600, 3600, 3600)
    assert (await lim.take([req]))[0].granted == 3600
    clock.t += 10
    assert (await lim.take([req]))[0].granted == 10  # allowance/3600 per second


async def test_local_seen_window() -> None:
    clock = Clock()
    lim = LocalLimiter(clock)
    assert await lim.seen([("a", 10), ("b", 10)]) == [False, False]
    assert await lim.seen([("a", 10)]) == [True]
    clock.t += 11
    assert await lim.seen([("a", 10)]) == [False]


@pytest.mark.redis
async def test_redis_bucket_is_shared_and_atomic(redis_url: str) -> None:
    prefix = f"lockgate-test:{uuid.uuid4().hex}:"
    a = RedisLimiter(redis_url, prefix=prefix)
    b = RedisLimiter(redis_url, prefix=prefix)
    try:
        req = BucketRequest("agent-1", 0.001, 100, 7)
        # Two "brokers" take concurrently from one bucket of 100: exactly 100 granted.
        grants = await asyncio.gather(*[(a if i % 2 else b).take([req]) for i in range(40)])
        assert sum(g[0].granted for g in grants) == 100
        (last,) = await a.take([req])
        assert last.granted == 0 and last.retry_after > 0
        assert await a.seen([("x", 5.0)]) == [False]
        assert await b.seen([("x", 5.0)]) == [True]
    finally:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_url)
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_redis_refill(redis_url: str) -> None:
    lim = RedisLimiter(redis_url, prefix=f"lockgate-test:{uuid.uuid4().hex}:")
    try:
        req = BucketRequest("fast", 50.0, 5, 5)
        assert (await lim.take([req]))[0].granted == 5
        await asyncio.sleep(0.1)  # 5 tokens at 50/s: the passing time is what is under test
        got = (await lim.take([req]))[0].granted
        assert 3 <= got <= 5
    finally:
        await lim.close()


async def test_local_buckets_expire_by_last_use_not_all_at_once() -> None:
    clock = Clock()
    lim = LocalLimiter(clock, max_keys=2000)
    # A busy sender empties its bucket (refills at 1 token/s, burst 10).
    (g,) = await lim.take([BucketRequest("busy", 1.0, 10, 10)])
    assert g.granted == 10
    # Thousands of one-off senders come and go; each bucket refills within 1 s, so about
    # 1000 of them are refilling at any time.
    for n in range(3000):
        clock.t += 0.001
        await lim.take([BucketRequest(f"once-{n}", 1.0, 1, 1)])
        assert len(lim) <= 2000  # bounded
    # The busy sender kept its (nearly) empty bucket: no fresh burst for it.
    (g,) = await lim.take([BucketRequest("busy", 1.0, 10, 10)])
    assert 2 <= g.granted <= 3  # what refilled in those 3 s, not a fresh 10
    # Once everything refilled, idle buckets are gone: memory is given back.
    clock.t += 60
    await lim.take([BucketRequest("busy", 1.0, 10, 1)])
    assert len(lim) == 1


async def test_local_bucket_that_never_refills_is_kept() -> None:
    clock = Clock()
    lim = LocalLimiter(clock)
    (g,) = await lim.take([BucketRequest("k", 0.0, 2, 2)])
    assert g.granted == 2
    clock.t += 3600
    await lim.take([BucketRequest("other", 1.0, 1, 1)])
    (g,) = await lim.take([BucketRequest("k", 0.0, 2, 1)])
    assert g.granted == 0
