"""The contract of :class:`broker.leases.Leases`, for every implementation.

An implementation joins by adding its :class:`Subject` factory to ``LEASES``. Time is counted
in units: the local leases run on a fake clock (one unit a second, the waits exact, so the
expiry is checked to the unit); a lease kept by a server runs on the server's own clock, so
its entry waits real time with short TTLs and checks "still held" half a TTL before the end
(``slack``), which a loaded machine cannot overrun.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from lockgate.broker.errors import Unavailable
from lockgate.broker.leases import Leases, LocalLeases, RedisLeases


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Subject:
    leases: Leases
    unit: float
    """Seconds in one unit of the tests' time (a lease of 10 units has ttl ``10 * unit``)."""
    wait: Callable[[float], Awaitable[None]]
    """Lets this many units pass."""
    slack: float
    """How many units before its end a lease is checked to be still held."""

    def ttl(self, units: float) -> float:
        return units * self.unit


def _local(_: pytest.FixtureRequest) -> Subject:
    clock = Clock()

    async def wait(units: float) -> None:
        clock.now += units

    return Subject(LocalLeases(clock=clock), 1.0, wait, 1.0)


def _redis(request: pytest.FixtureRequest) -> Subject:
    url = request.getfixturevalue("redis_url")
    # A stall of the test process longer than the margin a test leaves (4-5 units) lets a lease
    # run out early: 0.1 s units left 0.4 s, short of a loaded machine's stalls.
    unit = 0.25

    async def wait(units: float) -> None:
        await asyncio.sleep(units * unit)  # the server's clock is the one under test

    leases = RedisLeases(url, prefix=f"lockgate-test:{uuid.uuid4().hex}:")
    return Subject(leases, unit, wait, 5.0)


LEASES: dict[str, Callable[[pytest.FixtureRequest], Subject]] = {
    "local": _local,
    "redis": _redis,
}


@pytest_asyncio.fixture(
    params=[pytest.param(n, marks=[pytest.mark.redis] if n == "redis" else []) for n in LEASES]
)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    s = LEASES[request.param](request)
    yield s
    await s.leases.close()


async def test_one_holder_at_a_time(subject: Subject) -> None:
    leases, ttl = subject.leases, subject.ttl(100)
    assert await leases.acquire("retention", "node-a", ttl)
    assert not await leases.acquire("retention", "node-b", ttl)
    assert await leases.acquire("retention", "node-a", ttl)  # renewing is fine
    assert await leases.acquire("other", "node-b", ttl)  # names are independent


async def test_release_hands_it_over(subject: Subject) -> None:
    leases, ttl = subject.leases, subject.ttl(100)
    assert await leases.holder("w") is None
    assert await leases.acquire("w", "node-a", ttl)
    assert await leases.holder("w") == "node-a"
    await leases.release("w", "node-b")  # not the holder: nothing happens
    assert not await leases.acquire("w", "node-b", ttl)
    await leases.release("w", "node-a")
    assert await leases.holder("w") is None
    assert await leases.acquire("w", "node-b", ttl)
    assert await leases.holder("w") == "node-b"
    await leases.release("nobody-holds-this", "node-a")


async def test_an_unrenewed_lease_runs_out(subject: Subject) -> None:
    leases, ttl, slack = subject.leases, subject.ttl(10), subject.slack
    assert await leases.acquire("w", "node-a", ttl)
    await subject.wait(10 - slack)
    assert not await leases.acquire("w", "node-b", ttl)
    assert await leases.acquire("w", "node-a", ttl)  # renewed: runs to 10 - slack + 10
    await subject.wait(10 - slack)
    assert not await leases.acquire("w", "node-b", ttl)
    assert await leases.holder("w") == "node-a"
    await subject.wait(slack + 1)
    assert await leases.holder("w") is None
    assert await leases.acquire("w", "node-b", ttl)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_leases_fail_closed_when_redis_is_down() -> None:
    leases = RedisLeases(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        with pytest.raises(Unavailable) as exc:
            await leases.acquire("w", "node-a", 1.0)
        assert exc.value.reason == "LIMITER_UNAVAILABLE"
        assert exc.value.message.startswith("the Redis leases failed: ")
        with pytest.raises(Unavailable):
            await leases.release("w", "node-a")
    finally:
        await leases.close()
