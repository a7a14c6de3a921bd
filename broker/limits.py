"""Step 4: token buckets and seen-before sets, in-process or shared through Redis.

A bucket holds up to ``burst`` tokens and refills continuously at ``rate`` tokens per
second; a policy's ``limit publish 1000 per hour`` is a bucket of 1000 refilled at
1000/3600 per second. ``take`` asks for several tokens of several buckets at once (one
publish batch is one call, one Redis round trip) and learns how many each bucket granted
and, for a refusal, how long until the next token.

``RedisLimiter`` keeps the same state in Redis and changes it in one Lua script run with
EVALSHA, so refill and take are atomic across every broker sharing the server; the time
is Redis's own (``TIME``), so brokers with skewed clocks agree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from broker.errors import FailedPrecondition, Unavailable

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["BucketRequest", "Grant", "Limiter", "LocalLimiter", "RedisLimiter"]


@dataclass(frozen=True, slots=True)
class BucketRequest:
    key: str
    rate: float
    """Tokens per second."""
    burst: float
    want: int


@dataclass(frozen=True, slots=True)
class Grant:
    granted: int
    retry_after: float
    """Seconds until the next token when ``granted < want``; 0 otherwise."""


class Limiter(Protocol):
    async def take(self, requests: Sequence[BucketRequest]) -> list[Grant]: ...

    async def seen(self, keys: Sequence[tuple[str, float]]) -> list[bool]:
        """For each ``(key, window seconds)``: True if seen within the window; marks it."""
        ...

    async def close(self) -> None: ...


def _refill_take(
    tokens: float, stamp: float, now: float, rate: float, burst: float, want: int
) -> tuple[float, Grant]:
    if now > stamp:
        tokens = min(burst, tokens + (now - stamp) * rate)
    granted = min(want, int(tokens))
    tokens -= granted
    retry = 0.0 if granted == want else (1.0 - (tokens - int(tokens))) / rate if rate else math.inf
    return tokens, Grant(granted, retry)


class LocalLimiter:
    """In-process buckets: the embedded default."""

    def __init__(self, clock: object = None) -> None:
        self._clock = clock if callable(clock) else time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._seen: dict[str, float] = {}

    async def take(self, requests: Sequence[BucketRequest]) -> list[Grant]:
        now = float(self._clock())
        out = []
        for r in requests:
            tokens, stamp = self._buckets.get(r.key, (r.burst, now))
            tokens, grant = _refill_take(tokens, stamp, now, r.rate, r.burst, r.want)
            self._buckets[r.key] = (tokens, now)
            out.append(grant)
        if len(self._buckets) > 100_000:
            self._buckets.clear()  # crude bound; full buckets are the default state anyway
        return out

    async def seen(self, keys: Sequence[tuple[str, float]]) -> list[bool]:
        now = float(self._clock())
        out = []
        for key, window in keys:
            until = self._seen.get(key)
            hit = until is not None and until > now
            if not hit:
                self._seen[key] = now + window
            out.append(hit)
        if len(self._seen) > 200_000:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
        return out

    async def close(self) -> None:
        return None


_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[i * 3 - 2]) / 1000
  local burst = tonumber(ARGV[i * 3 - 1])
  local want = tonumber(ARGV[i * 3])
  local b = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
  local granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
  redis.call('HSET', key, 't', tostring(tokens), 'ts', math.max(now, ts))
  redis.call('PEXPIRE', key, math.ceil(burst / rate) + 1000)
  local retry = 0
  if granted < want then retry = math.ceil((1 - (tokens - math.floor(tokens))) / rate) end
  out[#out + 1] = granted
  out[#out + 1] = retry
end
return out
"""

_SEEN = """
local out = {}
for i, key in ipairs(KEYS) do
  local ok = redis.call('SET', key, '1', 'NX', 'PX', ARGV[i])
  if ok then out[#out + 1] = 0 else out[#out + 1] = 1 end
end
return out
"""


class RedisLimiter:
    """Buckets in Redis under ``prefix``; ``url`` like ``redis://127.0.0.1:6379/0``."""

    def __init__(self, url: str, *, prefix: str = "lockgate:") -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # the optional extra
            raise FailedPrecondition(
                "the Redis limiter needs the redis package",
                reason="MISSING_EXTRA",
                hint="pip install 'lockgate[redis]'",
            ) from exc
        self._redis: redis.asyncio.Redis = aioredis.Redis.from_url(url)
        self._prefix = prefix
        self._take = self._redis.register_script(_TAKE)
        self._seen = self._redis.register_script(_SEEN)

    async def _call(self, script: object, keys: list[str], args: list[object]) -> list[int]:
        import redis.exceptions

        try:
            # register_script's Script runs EVALSHA and loads the script on NOSCRIPT.
            return [int(x) for x in await script(keys=keys, args=args)]  # type: ignore[operator]
        except (redis.exceptions.RedisError, OSError) as exc:
            raise Unavailable(
                f"the Redis limiter failed: {exc}",
                reason="LIMITER_UNAVAILABLE",
                hint="check the Redis server; limits fail closed while it is down",
            ) from exc

    async def take(self, requests: Sequence[BucketRequest]) -> list[Grant]:
        if not requests:
            return []
        keys = [self._prefix + "b:" + r.key for r in requests]
        args: list[object] = []
        for r in requests:
            args += [repr(float(r.rate)), repr(float(r.burst)), r.want]
        flat = await self._call(self._take, keys, args)
        return [Grant(flat[i], flat[i + 1] / 1000) for i in range(0, len(flat), 2)]

    async def seen(self, keys: Sequence[tuple[str, float]]) -> list[bool]:
        if not keys:
            return []
        flat = await self._call(
            self._seen,
            [self._prefix + "s:" + k for k, _ in keys],
            [max(1, int(w * 1000)) for _, w in keys],
        )
        return [bool(x) for x in flat]

    async def close(self) -> None:
        await self._redis.aclose()
