"""The contract of :class:`broker.leases.Leases`, for every implementation.

A shared implementation (Redis, NATS KV) joins by adding its factory to ``LEASES``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lockgate.broker.leases import Leases, LocalLeases


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


LeasesFactory = Callable[[Clock], Leases]

LEASES: dict[str, LeasesFactory] = {
    "local": lambda clock: LocalLeases(clock=clock),
}


@pytest.fixture(params=sorted(LEASES))
def make(request: pytest.FixtureRequest) -> LeasesFactory:
    return LEASES[request.param]


async def test_one_holder_at_a_time(make: LeasesFactory) -> None:
    leases = make(Clock())
    assert await leases.acquire("retention", "node-a", 10.0)
    assert not await leases.acquire("retention", "node-b", 10.0)
    assert await leases.acquire("retention", "node-a", 10.0)  # renewing is fine
    assert await leases.acquire("other", "node-b", 10.0)  # names are independent
    await leases.close()


async def test_release_hands_it_over(make: LeasesFactory) -> None:
    leases = make(Clock())
    assert await leases.acquire("w", "node-a", 10.0)
    await leases.release("w", "node-b")  # not the holder: nothing happens
    assert not await leases.acquire("w", "node-b", 10.0)
    await leases.release("w", "node-a")
    assert await leases.acquire("w", "node-b", 10.0)
    await leases.close()


async def test_an_unrenewed_lease_runs_out(make: LeasesFactory) -> None:
    clock = Clock()
    leases = make(clock)
    assert await leases.acquire("w", "node-a", 10.0)
    clock.now += 9
    assert not await leases.acquire("w", "node-b", 10.0)
    assert await leases.acquire("w", "node-a", 10.0)  # renewed at 9: runs to 19
    clock.now += 9
    assert not await leases.acquire("w", "node-b", 10.0)
    clock.now += 2
    assert await leases.acquire("w", "node-b", 10.0)
    await leases.close()
