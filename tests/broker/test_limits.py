"""Token buckets: the in-process one with a fake clock, the Redis one against the real server,
and a broker whose Redis limiter is down (publishes fail closed)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from lockgate.broker.limits import BucketRequest, LocalLimiter, RedisLimiter
from lockgate.broker.testing import run_broker
from tests.broker.e2e_kit import Stubs, error_info, publish_one, query_all, unique
from tests.support import TcpProxy, eventually


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


# -- a shared limiter that is down: publishes fail closed ---------------------------------

_LIMITED = """\
policy limited on "lim.>" {
  allow publish
  allow subscribe
  limit publish 1000 per minute by principal.agent
}

policy deduped on "dd.>" {
  allow publish
  allow subscribe
  reject duplicates of event.id within 1 minute
}

policy open on "open.>" {
  allow publish
  allow subscribe
}
"""


@contextlib.asynccontextmanager
async def _broker_with_limiter(tmp: Path, limiter_url: str) -> AsyncIterator[Stubs]:
    pdir = tmp / "policies"
    pdir.mkdir()
    (pdir / "limited.policy").write_text(_LIMITED)
    args = ["--limiter", limiter_url, "--policy-dir", str(pdir)]
    async with run_broker(extra_args=args) as b, grpc.aio.insecure_channel(b.target) as ch:
        yield Stubs(ch)


async def _limiter_unavailable(stubs: Stubs, subject: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await publish_one(stubs.broker, subject)
    assert error_info(exc.value)[:2] == (grpc.StatusCode.UNAVAILABLE, "LIMITER_UNAVAILABLE")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.e2e
async def test_limiter_unreachable_fails_closed_and_stores_nothing(tmp_path: Path) -> None:
    async with _broker_with_limiter(tmp_path, f"redis://127.0.0.1:{_closed_port()}/0") as stubs:
        # A limit rule, a dedup rule, and a subject neither covers: with a Redis limiter
        # the dedup window of (source, id) is in Redis too, so every publish needs it.
        for subject in ("lim.a", "dd.a", "open.a"):
            await _limiter_unavailable(stubs, subject)
        assert await query_all(stubs.broker, ">") == []


@pytest.mark.e2e
@pytest.mark.redis
async def test_redis_cut_mid_run_fails_closed_then_recovers(tmp_path: Path, redis_url: str) -> None:
    parts = urllib.parse.urlsplit(redis_url)
    async with TcpProxy(f"{parts.hostname}:{parts.port or 6379}") as proxy:
        url = urllib.parse.urlunsplit(parts._replace(netloc=proxy.target))
        async with _broker_with_limiter(tmp_path, url) as stubs:
            subject, dd = unique("lim"), unique("dd")
            stored = [await publish_one(stubs.broker, subject)]
            stored_dd = [await publish_one(stubs.broker, dd)]
            await proxy.down()  # Redis is gone: open connections reset, new ones refused
            await _limiter_unavailable(stubs, subject)
            await _limiter_unavailable(stubs, dd)
            assert [e.id for e in await query_all(stubs.broker, subject)] == stored
            assert [e.id for e in await query_all(stubs.broker, dd)] == stored_dd
            proxy.up()

            async def publishes_again() -> bool:
                try:
                    stored.append(await publish_one(stubs.broker, subject))
                except grpc.aio.AioRpcError as err:
                    assert error_info(err)[1] == "LIMITER_UNAVAILABLE", err
                    return False
                return True

            await eventually(publishes_again, what="publishing works once Redis is back")
            assert [e.id for e in await query_all(stubs.broker, subject)] == stored
