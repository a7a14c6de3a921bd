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
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lockgate.broker.redisconn import REDIS_ERRORS, connect, redis_failed

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
    """In-process buckets: the embedded default.

    Memory stays bounded without resetting anyone: buckets are kept in order of last use,
    and a bucket idle long enough to have refilled completely is dropped (it equals a new
    one, so nobody gains a token). Only beyond ``max_keys`` buckets that are still
    refilling is the least recently used one dropped.
    """

    def __init__(self, clock: object = None, *, max_keys: int = 100_000) -> None:
        self._clock = clock if callable(clock) else time.monotonic
        # key -> (tokens, last use, when it is full again); oldest use first.
        self._buckets: OrderedDict[str, tuple[float, float, float]] = OrderedDict()
        self._seen: dict[str, float] = {}
        self._max_keys = max_keys

    def __len__(self) -> int:
        """Buckets held (idle full ones are dropped)."""
        return len(self._buckets)

    async def take(self, requests: Sequence[BucketRequest]) -> list[Grant]:
        now = float(self._clock())
        buckets = self._buckets
        out = []
        for r in requests:
            held = buckets.pop(r.key, None)
            tokens, stamp = (r.burst, now) if held is None else held[:2]
            tokens, grant = _refill_take(tokens, stamp, now, r.rate, r.burst, r.want)
            missing = r.burst - tokens
            # When it is full again, and so the same as a new one (never, at rate 0).
            refill = missing / r.rate if r.rate > 0 else math.inf
            full_at = now + refill if missing > 0 else now
            buckets[r.key] = (tokens, max(now, stamp), full_at)  # now the most recent
            out.append(grant)
        self._expire(now)
        return out

    def _expire(self, now: float) -> None:
        buckets = self._buckets
        # Idle buckets are at the front; a full one is the same as none.
        while buckets:
            key, (_, _, full_at) = next(iter(buckets.items()))
            if full_at > now:
                break
            del buckets[key]
        if len(buckets) <= self._max_keys:
            return
        # A slow-refilling bucket at the front hides full ones behind it: look at all of
        # them (amortised: afterwards at most 90% of the bound remain).
        for key in [k for k, (_, _, full_at) in buckets.items() if full_at <= now]:
            del buckets[key]
        while len(buckets) > self._max_keys * 9 // 10:
            buckets.popitem(last=False)  # still refilling: the least recently used goes

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
        self._redis: redis.asyncio.Redis = connect(url, "the Redis limiter")
        self._prefix = prefix
        self._take = self._redis.register_script(_TAKE)
        self._seen = self._redis.register_script(_SEEN)

    async def _call(self, script: object, keys: list[str], args: list[object]) -> list[int]:
        try:
            # register_script's Script runs EVALSHA and loads the script on NOSCRIPT.
            return [int(x) for x in await script(keys=keys, args=args)]  # type: ignore[operator]
        except REDIS_ERRORS as exc:
            raise redis_failed("the Redis limiter", exc) from exc

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
