"""The one way Lockgate's Redis parts (limiter, dedup window, leases) connect to Redis and
report that it failed.

Every Redis-backed part fails closed with the same error: ``UNAVAILABLE`` with the reason
``LIMITER_UNAVAILABLE`` (Redis is "the limiter's server" to an operator) and a sentence that
names the part, so a Redis outage reads the same whichever part met it first.

Example::

    client = connect(url, "the Redis dedup window")
    try:
        await client.ping()
    except REDIS_ERRORS as exc:
        raise redis_failed("the Redis dedup window", exc) from exc
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lockgate.broker.errors import Unavailable
from lockgate.broker.extras import missing_extra

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["REDIS_ERRORS", "connect", "redis_failed"]


def _errors() -> tuple[type[BaseException], ...]:
    try:
        import redis.exceptions
    except ImportError:  # without the extra nothing can raise them
        return (OSError,)
    return (redis.exceptions.RedisError, OSError)


REDIS_ERRORS = _errors()
"""What a call on a Redis client raises when the server is down or answers an error."""


def connect(url: str, what: str) -> redis.asyncio.Redis:
    """A client of the server at ``url`` (``redis://HOST:6379/0``); connects on first use.
    ``what`` names the part for the missing-extra error."""
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:  # the optional extra
        raise missing_extra(what, exc) from None
    client: redis.asyncio.Redis = aioredis.Redis.from_url(url)
    return client


def redis_failed(what: str, exc: BaseException) -> Unavailable:
    """The error for a failed Redis call of ``what`` (e.g. "the Redis limiter")."""
    return Unavailable(
        f"{what} failed: {exc}",
        reason="LIMITER_UNAVAILABLE",
        hint="check the Redis server; limits fail closed while it is down",
    )
