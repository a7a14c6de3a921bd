"""``eventually``: returns as soon as the condition holds, and fails with what it last saw."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support import eventually, eventually_sync


async def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert await eventually(lambda: next(calls) >= 3 and "ready", interval=0) == "ready"
    assert next(calls) == 4  # polled exactly three times


async def test_awaits_an_async_predicate() -> None:
    state = {"n": 0}

    async def grown() -> int:
        state["n"] += 1
        return state["n"] if state["n"] >= 2 else 0

    assert await eventually(grown, interval=0) == 2


async def test_an_assertion_means_not_yet_and_is_reported_at_the_deadline() -> None:
    def check() -> bool:
        assert 1 + 1 == 3, "arithmetic still broken"
        return True

    with pytest.raises(AssertionError, match=r"(?s)within 0.05s.*arithmetic still broken"):
        await eventually(check, timeout=0.05)


async def test_the_timeout_names_the_predicate_and_its_last_value() -> None:
    received: list[int] = []
    with pytest.raises(AssertionError, match=r"len\(received\) == 3.*last value: False"):
        await eventually(lambda: len(received) == 3, timeout=0.05)
    with pytest.raises(AssertionError, match="the three deliveries"):
        await eventually(lambda: received, timeout=0.01, what="the three deliveries")


async def test_other_exceptions_propagate_at_once() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ZeroDivisionError):
        await eventually(lambda: 1 // 0, timeout=5)
    assert loop.time() - start < 1


def test_sync_variant() -> None:
    calls = itertools.count(1)
    assert eventually_sync(lambda: next(calls) == 2, interval=0) is True
    with pytest.raises(AssertionError, match="last value: \\[\\]"):
        eventually_sync(lambda: [], timeout=0.02)
