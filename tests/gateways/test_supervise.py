"""``supervise`` (gateways/_report.py) runs an ingest loop for ever, yet stops when cancelled,
even when a library turns the cancel into an error of its own."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.clients._backoff import Backoff
from lockgate.gateways._report import supervise


async def test_a_cancel_turned_into_a_library_error_still_stops_the_loop() -> None:
    started = asyncio.Event()

    async def run() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ConnectionError("Connection closed by server") from None  # as redis-py may

    task = asyncio.create_task(supervise("test", run, Backoff(initial=0.01, maximum=0.05)))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    # asyncio.wait: wait_for would cancel it again, and wait on a loop that ignores it.
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled(), "the loop went on after its cancel"


async def test_an_error_of_its_own_is_retried() -> None:
    calls = 0

    async def run() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("down")
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise("test", run, Backoff(initial=0.01, maximum=0.05)))
    try:
        for _ in range(500):
            if calls >= 3:
                break
            await asyncio.sleep(0.01)
        assert calls == 3
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
