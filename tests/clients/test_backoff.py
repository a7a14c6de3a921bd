"""The one backoff rule: doubling from ``initial`` to ``maximum``, with bounded jitter."""

from __future__ import annotations

import pytest

from lockgate.clients import Backoff
from lockgate.clients._backoff import backoff_delay


def test_doubles_up_to_the_maximum_without_jitter() -> None:
    b = Backoff(initial=0.1, maximum=1.0, jitter=0.0)
    assert [round(b.next_delay(), 6) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.failures == 6
    b.reset()
    assert b.failures == 0 and b.next_delay() == pytest.approx(0.1)


def test_jitter_stays_within_its_bounds() -> None:
    delays = [backoff_delay(3, initial=0.1, maximum=2.0, jitter=0.5) for _ in range(500)]
    assert all(0.2 <= d <= 0.6 for d in delays)
    assert max(delays) - min(delays) > 0.1  # it does spread clients out


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert backoff_delay(10_000, jitter=0.0) == 2.0


async def test_sleep_counts_and_waits() -> None:
    b = Backoff(initial=0.001, maximum=0.002, jitter=0.0)
    assert await b.sleep() == pytest.approx(0.001)
    assert await b.sleep() == pytest.approx(0.002)
    assert b.failures == 2
