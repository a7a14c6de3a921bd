"""The outbox a subscriber stream drains, and the ephemeral subscription's buffer bound."""

from __future__ import annotations

import asyncio

from lockgate.broker.delivery import EphemeralSubscription, Outbox
from lockgate.broker.errors import ResourceExhausted


async def test_take_joins_chunks_up_to_the_message_size() -> None:
    box = Outbox(max_message_bytes=10)
    box.put(b"aaaa", 2)
    box.put(b"bbbb", 1)
    box.put(b"cccc", 3)  # would make 12 bytes: the next body
    assert await box.take() == b"aaaabbbb"
    assert box.last_count == 3 and box.buffered == 3
    assert await box.take() == b"cccc"
    assert box.last_count == 3 and box.buffered == 0


async def test_a_chunk_larger_than_the_limit_still_goes_alone() -> None:
    box = Outbox(max_message_bytes=4)
    box.put(b"x" * 9)
    box.put(b"y")
    assert await box.take() == b"x" * 9
    assert await box.take() == b"y"


async def test_take_waits_for_a_put_and_ends_after_close() -> None:
    box = Outbox(1024)
    waiter = asyncio.create_task(box.take())
    await asyncio.sleep(0)
    assert not waiter.done()
    box.put(b"late")
    assert await asyncio.wait_for(waiter, 5) == b"late"
    box.put(b"left")
    box.close()  # a clean close drains what is left first
    assert await box.take() == b"left"
    assert await box.take() is None


async def test_close_with_an_error_drops_what_is_left() -> None:
    box = Outbox(1024)
    box.put(b"unsent")
    err = ResourceExhausted("too slow", reason="SLOW_CONSUMER")
    box.close(err)
    box.close()  # a second close keeps the first error
    assert box.error is err
    assert await box.take() is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_reading_subscriber_is_never_cut_for_how_many_events_wait() -> None:
    clock = FakeClock()
    sub = EphemeralSubscription("o", "a.>", "", 1024, max_bytes=1 << 30, clock=clock)
    for _ in range(100):  # a burst: 100,000 events queued at once, well inside the budget
        assert sub.offer(b"x" * 1000, 1000, None)
        clock.now += 0.01
    assert sub.outbox.buffered == 100_000
    for _ in range(20):  # it keeps taking, slower than the deadline apart in all, never cut
        clock.now += 5.0
        assert await sub.outbox.take()
        assert sub.offer(b"y" * 10, 1, None)
    assert not sub.outbox.closed


async def test_a_subscriber_that_takes_nothing_past_the_write_deadline_is_cut() -> None:
    clock = FakeClock()
    sub = EphemeralSubscription("o", "a.>", "", 1024, write_deadline=2.0, clock=clock)
    slow: list[EphemeralSubscription] = []
    sub.on_slow = slow.append
    assert sub.offer(b"12", 2, None)
    clock.now += 1.5
    assert sub.offer(b"34", 2, None)  # waiting 1.5 s: within the deadline
    clock.now += 1.0
    assert not sub.offer(b"5", 1, None)  # 2.5 s without a take
    assert slow == [sub] and sub.outbox.closed
    err = sub.outbox.error
    assert err is not None and err.reason == "SLOW_CONSUMER"
    assert "took nothing for 2.5 s" in err.message and err.metadata["write_deadline"] == "2"
    assert not sub.offer(b"6", 1, None)  # closed: refuses without reporting again
    assert slow == [sub]


async def test_an_idle_subscriber_is_not_stalled() -> None:
    clock = FakeClock()
    sub = EphemeralSubscription("o", "a.>", "", 1024, write_deadline=2.0, clock=clock)
    assert sub.offer(b"1", 1, None)
    assert await sub.outbox.take() == b"1"
    clock.now += 3600  # nothing was waiting meanwhile
    assert sub.offer(b"2", 1, None)
    assert sub.outbox.stalled() == 0.0
