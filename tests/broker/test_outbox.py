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


async def test_an_ephemeral_subscription_is_cut_off_past_its_buffer() -> None:
    sub = EphemeralSubscription("o", "a.>", "", buffer=3, max_message_bytes=1024)
    slow: list[EphemeralSubscription] = []
    sub.on_slow = slow.append
    assert sub.offer(b"12", 2, None)
    assert not sub.offer(b"34", 2, None)  # 4 > 3 events behind
    assert slow == [sub] and sub.outbox.closed
    assert sub.outbox.error is not None and sub.outbox.error.reason == "SLOW_CONSUMER"
    assert not sub.offer(b"5", 1, None)  # closed: refuses without reporting again
    assert slow == [sub]
