"""The client against an in-process fake broker: coalescing, results, reconnect and resend."""

from __future__ import annotations

import asyncio

import pytest
from fake_broker import FakeBroker

import clients
from clients import Client


async def test_publish_returns_ids_and_sends_auth(fake: FakeBroker) -> None:
    async with Client(fake.target, api_key="k1") as c:
        first = await c.publish("a.b", {"n": 1})
        second = await c.publish("a.b", "text")
    assert second == first + 1
    assert fake.auth == ["Bearer k1"]
    assert [subject for _, subject, _ in fake.log] == ["a.b", "a.b"]


async def test_concurrent_publishes_coalesce(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        ids = await asyncio.gather(*(c.publish("a.b", i) for i in range(64)))
        assert sorted(ids) == list(range(1, 65))
        assert len(set(ids)) == 64
        assert c.frames_sent <= 2
    assert fake.frames <= 2


async def test_many_subjects_one_frame_each(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        await asyncio.gather(*(c.publish(f"s.{i % 4}", i) for i in range(100)))
        assert c.frames_sent == 4


async def test_rejected_event_raises_only_for_itself(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        results = await asyncio.gather(
            c.publish("a.b", 1),
            c.publish("a.b", 2, type="reject"),
            c.publish("a.b", 3),
            return_exceptions=True,
        )
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert isinstance(results[1], clients.PermissionDenied)
    assert results[1].reason == "POLICY_DENIED"


async def test_publish_batch_reports_each_event(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        dup = clients.to_cloudevent("d", source="me", id="same")
        await c.publish("a.b", dup)
        results = await c.publish_batch("a.b", ["x", dup, {"y": 1}])
    assert [r.ok for r in results] == [True, True, True]
    assert [r.duplicate for r in results] == [False, True, False]
    assert results[1].id == 1


async def test_oversized_event_is_refused_locally(fake: FakeBroker) -> None:
    async with Client(fake.target, max_message_bytes=100_000) as c:
        with pytest.raises(clients.InvalidEvent) as info:
            await c.publish("a.b", b"x" * 200_000)
        assert info.value.reason == "EVENT_TOO_LARGE"
        assert c.frames_sent == 0


async def test_unreachable_broker_is_one_clear_error() -> None:
    with pytest.raises(clients.Unavailable, match=r"cannot reach the broker at 127\.0\.0\.1:1"):
        async with Client("127.0.0.1:1", connect_timeout=0.3):
            pass


async def test_unanswered_publishes_are_resent_after_restart(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        fake.hold_responses = True  # the broker stores but never answers, then dies
        pending = [asyncio.ensure_future(c.publish("a.b", i)) for i in range(10)]
        while fake.frames == 0:
            await asyncio.sleep(0.01)
        await fake.stop()
        fake.hold_responses = False
        await fake.start()
        ids = await asyncio.wait_for(asyncio.gather(*pending), 10)
    assert sorted(ids) == list(range(1, 11))  # the resend was deduplicated
    assert len(fake.log) == 10


async def test_cancelled_publish_does_not_fail_its_batch(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        tasks = [asyncio.ensure_future(c.publish("a.b", i)) for i in range(5)]
        await asyncio.sleep(0)
        tasks[0].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError)
    assert all(isinstance(x, int) for x in done[1:])


async def test_subscribe_receives_and_acks(fake: FakeBroker) -> None:
    async with Client(fake.target) as c, c.subscribe("orders.>", durable="d1") as sub:
        assert sub.name == "d1"
        await c.publish("orders.eu", {"n": 1})
        msg = await asyncio.wait_for(anext(sub), 5)
        assert (msg.subject, msg.data, msg.attempt) == ("orders.eu", {"n": 1}, 1)
        await msg.ack()
        for _ in range(100):
            if fake.acks:
                break
            await asyncio.sleep(0.01)
    assert fake.acks == [msg.id]


async def test_subscription_error_is_raised_on_open(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        with pytest.raises(clients.InvalidSubject):
            await c.subscription("!bad")


async def test_subscription_reconnects_after_restart(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        sub = await c.subscription("x.>")
        await fake.stop()
        await fake.start()
        for _ in range(300):
            if fake.subs:
                break
            await asyncio.sleep(0.02)
        await c.publish("x.y", "again")
        msg = await asyncio.wait_for(anext(sub), 5)
        assert msg.data == "again" and sub.reconnects >= 1
        await sub.close()


async def test_no_responders(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        with pytest.raises(clients.NoResponders, match="nobody listens"):
            await c.request("x.y", {"q": 1})


async def test_bad_api_key_fails_publishes_without_retrying(fake: FakeBroker) -> None:
    fake.required_key = "good"
    async with Client(fake.target, api_key="bad") as c:
        results = await asyncio.gather(
            *(c.publish("a.b", i) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, clients.Unauthenticated) for r in results)
        assert "api_key" in str(results[0])
        assert len(fake.auth) == 1  # no reconnect storm on a permanent error


async def test_publish_gives_up_after_its_timeout_when_the_broker_is_gone(
    fake: FakeBroker,
) -> None:
    async with Client(fake.target, publish_timeout=0.5) as c:
        await c.publish("a.b", 1)
        await fake.stop()
        with pytest.raises(clients.Unavailable):
            await asyncio.wait_for(c.publish("a.b", 2), 10)


async def test_publish_timeout_argument(fake: FakeBroker) -> None:
    fake.hold_responses = True
    async with Client(fake.target, publish_timeout=0.5) as c:
        with pytest.raises(clients.RequestTimeout):
            await c.publish("a.b", 1, timeout=0.2)
        # Unanswered frames fail after publish_timeout instead of hanging forever.
        with pytest.raises(clients.Unavailable, match="did not answer"):
            await asyncio.wait_for(c.publish("a.b", 2), 5)


async def test_large_publish_batch_is_split_into_frames_that_fit(fake: FakeBroker) -> None:
    async with Client(fake.target, max_message_bytes=200_000) as c:
        items = [b"x" * 50_000 for _ in range(10)] + list(range(1500))
        results = await c.publish_batch("big.x", items)
        assert [r.id for r in results] == list(range(1, 1511))
        assert c.frames_sent >= 4


async def test_timed_out_publish_leaves_its_batch_to_the_others(fake: FakeBroker) -> None:
    async with Client(fake.target) as c:
        fake.hold_responses = True
        others = [asyncio.ensure_future(c.publish("a.b", i)) for i in range(3)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.publish("a.b", 99), 0.3)
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in others)
        fake.hold_responses = False
        await fake.stop()  # the unanswered frame is resent to the restarted broker
        await fake.start()
        ids = await asyncio.wait_for(asyncio.gather(*others), 10)
        assert sorted(ids) == [1, 2, 3]
