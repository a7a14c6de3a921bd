"""The client's own behaviour against a real ``lockgate serve`` process: coalescing, per-event
results, local refusals, timeouts, resend and reconnect, auth errors.

A broker that stops answering or goes away is a real one behind ``TcpProxy`` (stalled or cut),
or a broker of the test's own that is killed and restarted on the same port and data dir.
"""

from __future__ import annotations

import asyncio
import math
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate import clients
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.clients import Client, Message, Subscription
from tests.support import TcpProxy, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

# Events of type "reject" on rej.> are denied one by one; everything else is allowed.
POLICY = """\
policy rejects on "rej.>" {
  allow publish, subscribe, request
  deny publish when event.type == "reject" because "the test policy rejects this type"
}
"""


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningBroker]:
    """One open (dev mode) broker with a policy, shared by the tests that do not disturb it."""
    policies = tmp_path_factory.mktemp("policies")
    (policies / "rejects.policy").write_text(POLICY)
    async with run_broker(extra_args=("--policy-dir", str(policies))) as b:
        yield b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def keyed(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[RunningBroker, str]]:
    """A broker whose data dir holds an API key (so it refuses callers without a valid one),
    and that key."""
    data_dir = tmp_path_factory.mktemp("keyed")
    key = await lockgate("keys", "create", "--org", "o", "--agent", "a", "--data-dir", data_dir)
    async with run_broker(data_dir=str(data_dir)) as b:
        yield b, key


@pytest_asyncio.fixture(loop_scope="module")
async def own_broker() -> AsyncIterator[RunningBroker]:
    """A broker for one test alone, to kill or restart."""
    async with run_broker() as b:
        yield b


async def lockgate(*args: str | Path) -> str:
    """Runs the ``lockgate`` command line; returns its stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate.broker.cli",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def next_msg(sub: Subscription, timeout: float = 5.0) -> Message:
    return await asyncio.wait_for(anext(sub), timeout)


async def stored(c: Client, pattern: str) -> list[int]:
    return [e.id async for e in c.query_events(pattern, page_size=1000)]


# -- publishing ---------------------------------------------------------------------------------


async def test_publish_with_an_api_key_returns_ids_of_stored_events(
    keyed: tuple[RunningBroker, str],
) -> None:
    broker, key = keyed
    subject = unique("auth")
    async with Client(broker.target, api_key=key) as c:
        first = await c.publish(subject, {"n": 1})
        second = await c.publish(subject, "text")
        assert second > first
        # The broker, which refuses callers without a valid key, took the client's key.
        events = [(e.id, e.subject, e.data) async for e in c.query_events(subject)]
    assert events == [(first, subject, {"n": 1}), (second, subject, "text")]


async def test_many_subjects_one_frame_each(broker: RunningBroker) -> None:
    base = unique("many")
    async with Client(broker.target) as c:
        ids = await asyncio.gather(*(c.publish(f"{base}.{i % 4}", i) for i in range(100)))
        assert c.frames_sent == 4
        assert await stored(c, f"{base}.*") == sorted(ids)


async def test_rejected_event_raises_only_for_itself(broker: RunningBroker) -> None:
    subject = unique("rej")
    async with Client(broker.target) as c:
        results = await asyncio.gather(
            c.publish(subject, 1),
            c.publish(subject, 2, type="reject"),
            c.publish(subject, 3),
            return_exceptions=True,
        )
        assert c.frames_sent == 1  # the three shared a frame
        events = [(e.id, e.data) async for e in c.query_events(subject)]
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert isinstance(results[1], clients.PermissionDenied)
    assert results[1].reason == "POLICY_DENIED"
    assert events == [(results[0], 1), (results[2], 3)]


async def test_oversized_event_is_refused_locally(broker: RunningBroker) -> None:
    subject = unique("big")
    async with Client(broker.target, max_message_bytes=100_000) as c:
        with pytest.raises(clients.InvalidEvent) as info:
            await c.publish(subject, b"x" * 200_000)
        assert info.value.reason == "EVENT_TOO_LARGE"
        assert c.frames_sent == 0
        assert await stored(c, subject) == []


async def test_unreachable_broker_is_one_clear_error() -> None:
    with pytest.raises(clients.Unavailable, match=r"cannot reach the broker at 127\.0\.0\.1:1"):
        async with Client("127.0.0.1:1", connect_timeout=0.3):
            pass


async def test_cancelled_publish_does_not_fail_its_batch(broker: RunningBroker) -> None:
    subject = unique("cancel")
    async with Client(broker.target) as c:
        tasks = [asyncio.ensure_future(c.publish(subject, i)) for i in range(5)]
        await asyncio.sleep(0)  # one loop turn: the five join one batch, then one is cancelled
        tasks[0].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError)
        assert all(isinstance(x, int) for x in done[1:])
        assert set(done[1:]) <= set(await stored(c, subject))


async def test_large_publish_batch_is_split_into_frames_that_fit(broker: RunningBroker) -> None:
    subject = unique("bigbatch")
    async with Client(broker.target, max_message_bytes=200_000) as c:
        items = [b"x" * 50_000 for _ in range(10)] + list(range(1500))
        results = await c.publish_batch(subject, items)
        ids = [r.id for r in results]
        assert all(r.ok and not r.duplicate for r in results)
        assert len(set(ids)) == 1510 and ids == sorted(ids)
        assert c.frames_sent >= 4
        assert await stored(c, subject) == ids


# -- a broker that stops answering or goes away -------------------------------------------------


async def test_unanswered_publishes_are_resent_after_restart(own_broker: RunningBroker) -> None:
    subject = unique("resend")
    async with TcpProxy(own_broker.target) as proxy, Client(proxy.target) as c:
        proxy.stall(to_server=False)  # the broker stores the events; its answers are lost
        pending = [asyncio.ensure_future(c.publish(subject, i)) for i in range(10)]
        async with Client(own_broker.target) as direct:

            async def all_stored() -> bool:
                return len(await stored(direct, subject)) == 10

            await eventually(all_stored)
        assert not any(t.done() for t in pending)
        await own_broker.kill()  # ... then it dies without ever answering
        proxy.resume()
        await own_broker.restart()
        ids = await asyncio.wait_for(asyncio.gather(*pending), 20)
        assert c.frames_sent >= 2  # the frame went out again
        assert sorted(ids) == await stored(c, subject)  # the resend was deduplicated


async def test_timed_out_publish_leaves_its_batch_to_the_others(broker: RunningBroker) -> None:
    subject = unique("late")
    async with TcpProxy(broker.target) as proxy, Client(proxy.target) as c:
        proxy.stall(to_server=False)  # the broker stores, its answers never arrive
        others = [asyncio.ensure_future(c.publish(subject, i)) for i in range(3)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.publish(subject, 99), 0.3)
        async with Client(broker.target) as direct:

            async def all_stored() -> bool:
                return len(await stored(direct, subject)) == 4

            await eventually(all_stored)  # the frame went through; only its answer is lost
        assert not any(t.done() for t in others)
        assert c.frames_sent == 1  # the timed-out publish shared the others' frame
        proxy.resume()
        await proxy.cut()  # the unanswered frame is resent on a new connection
        ids = await asyncio.wait_for(asyncio.gather(*others), 10)
        events = [(e.id, e.data) async for e in c.query_events(subject)]
    assert sorted(data for _, data in events) == [0, 1, 2, 99]  # nothing stored twice
    assert sorted(ids) == [eid for eid, data in events if data != 99]


async def test_publish_gives_up_after_its_timeout_when_the_broker_is_gone(
    own_broker: RunningBroker,
) -> None:
    # 2 s, not less: on a loaded machine the first frame (the stream's opening) has taken
    # more than 0.5 s, failing the publish meant to succeed.
    async with Client(own_broker.target, publish_timeout=2.0) as c:
        await c.publish("a.b", 1)
        await own_broker.kill()
        with pytest.raises(clients.Unavailable):
            await asyncio.wait_for(c.publish("a.b", 2), 20)


async def test_publish_timeout_argument(broker: RunningBroker) -> None:
    subject = unique("silent")
    async with TcpProxy(broker.target) as proxy, Client(proxy.target, publish_timeout=0.5) as c:
        proxy.stall()  # connected, then the broker accepts but never answers
        with pytest.raises(clients.RequestTimeout):
            await c.publish(subject, 1, timeout=0.2)
        # Unanswered frames fail after publish_timeout instead of hanging forever.
        with pytest.raises(clients.Unavailable, match="did not answer"):
            await asyncio.wait_for(c.publish(subject, 2), 5)


# -- pipelined publishing ----------------------------------------------------------------------


async def test_pipelined_batches_keep_their_order_per_subject(broker: RunningBroker) -> None:
    subject = unique("pipe")
    async with Client(broker.target, publish_window=3) as c, c.subscribe(subject) as sub:
        futures = [
            await c.publish_batch_async(subject, list(range(i, i + 50))) for i in range(0, 1000, 50)
        ]
        await c.flush()
        assert all(f.done() for f in futures)
        ids = [r.id for f in futures for r in f.result()]
        assert ids == sorted(ids) and len(set(ids)) == 1000  # stored in call order
        got = [await next_msg(sub) for _ in range(1000)]
    assert [m.data for m in got] == list(range(1000))
    assert [m.id for m in got] == ids


async def test_publishes_around_batches_are_stored_in_call_order(broker: RunningBroker) -> None:
    subject = unique("around")
    async with Client(broker.target) as c:
        await c.publish(subject, "warm")
        calls: list[Awaitable[object]] = []
        for i in range(20):
            calls.append(asyncio.ensure_future(c.publish(subject, f"p{i}")))
            await asyncio.sleep(0)  # the publish joins (or opens) its subject's open frame
            calls.append(await c.publish_batch_async(subject, [f"b{i}", f"c{i}"]))
        await asyncio.wait_for(asyncio.gather(*calls), 10)
        events = [e.data async for e in c.query_events(subject)]
    assert events == ["warm", *[x for i in range(20) for x in (f"p{i}", f"b{i}", f"c{i}")]]


async def test_a_full_window_holds_the_next_batch_back(broker: RunningBroker) -> None:
    subject = unique("window")
    async with TcpProxy(broker.target) as proxy, Client(proxy.target, publish_window=2) as c:
        await c.publish(subject, "warm")  # the stream is open
        proxy.stall(to_server=False)  # the broker stores, its answers never arrive
        first = [await c.publish_batch_async(subject, [i]) for i in range(2)]
        single = asyncio.ensure_future(c.publish(subject, "single"))
        third = asyncio.ensure_future(c.publish_batch_async(subject, [2]))
        await eventually(lambda: c.frames_sent == 3)  # the warm-up frame and both batches
        for _ in range(5):  # loop turns for the flusher to send more, were it allowed to
            await asyncio.sleep(0)
        # Two frames are unanswered: the plain publish waits in its open batch, and the
        # batch call waits before queueing.
        assert c.frames_sent == 3 and not single.done() and not third.done()
        proxy.resume()
        await proxy.cut()  # the unanswered frames are resent on a new connection
        results = await asyncio.wait_for(asyncio.gather(*first, await third), 10)
        assert [len(r) for r in results] == [1, 1, 1] and all(r[0].ok for r in results)
        await asyncio.wait_for(single, 10)
        events = [e.data async for e in c.query_events(subject)]
    assert events == ["warm", 0, 1, "single", 2]  # in call order, nothing stored twice


async def test_a_rejection_in_a_pipelined_batch_reaches_its_own_caller(
    broker: RunningBroker,
) -> None:
    subject = unique("rej")
    async with Client(broker.target, publish_window=2) as c:
        good = await c.publish_batch_async(subject, ["a", "b"])
        bad_subject = await c.publish_batch_async("bad..subject", ["c"])
        mixed = await c.publish_batch_async(subject, ["d", "e"], type="reject")
        after = await c.publish_batch_async(subject, ["f"])
        await c.flush()
    assert [r.ok for r in good.result()] == [True, True]
    assert [r.ok for r in after.result()] == [True]
    (refused,) = bad_subject.result()
    assert isinstance(refused.error, clients.InvalidSubject)
    assert [type(r.error) for r in mixed.result()] == [clients.PermissionDenied] * 2


# -- subscriptions and requests -----------------------------------------------------------------


async def test_subscribe_receives_and_acks(broker: RunningBroker) -> None:
    subject, name = unique("orders"), unique("d").replace(".", "-")
    async with Client(broker.target) as c:
        try:
            async with c.subscribe(f"{subject}.>", durable=name) as sub:
                assert sub.name == name
                eid = await c.publish(f"{subject}.eu", {"n": 1})
                msg = await next_msg(sub)
                assert (msg.id, msg.subject, msg.data, msg.attempt) == (
                    eid,
                    f"{subject}.eu",
                    {"n": 1},
                    1,
                )
                assert (await c.admin.get_durable(name)).durable.pending_count == 1
                await msg.ack()

                async def acked() -> bool:
                    return (await c.admin.get_durable(name)).durable.pending_count == 0

                await eventually(acked, timeout=5)
        finally:
            await c.admin.delete_durable(name)


async def test_subscription_reconnects_after_restart(own_broker: RunningBroker) -> None:
    subject = unique("x")
    async with Client(own_broker.target) as c:
        sub = await c.subscription(f"{subject}.>")
        await own_broker.terminate()
        await own_broker.restart()
        # The ephemeral subscription resumes with new events once it is open again: publish
        # until one arrives.
        msg = None
        for i in range(100):
            await c.publish(f"{subject}.y", f"again-{i}")
            try:
                msg = await next_msg(sub, timeout=0.2)
                break
            except TimeoutError:
                continue
        assert msg is not None and str(msg.data).startswith("again-")
        assert sub.reconnects >= 1
        await sub.close()


async def test_no_responders_fails_at_once(broker: RunningBroker) -> None:
    loop = asyncio.get_running_loop()
    async with Client(broker.target) as c:
        start = loop.time()
        with pytest.raises(clients.NoResponders) as info:
            await c.request(unique("nobody"), {"q": 1}, timeout=5)
        assert loop.time() - start < 2  # the broker said so; the client did not wait it out
    assert info.value.reason == "NO_RESPONDERS"


async def test_concurrent_requests_share_one_stream_and_each_gets_its_own_answer(
    broker: RunningBroker,
) -> None:
    subject = unique("many")
    async with Client(broker.target) as c, Client(broker.target) as responder_client:
        sub = await responder_client.subscription(subject)
        replying: set[asyncio.Future[None]] = set()

        async def respond() -> None:
            async for msg in sub:
                n = msg.data
                assert isinstance(n, int)
                # Answer out of order: the later requests of a burst first.
                replying.add(asyncio.ensure_future(_later(msg.respond(n * 2), 0.01 * (n % 3))))

        task = asyncio.ensure_future(respond())
        try:
            nobody = unique("nobody")
            answers = await asyncio.gather(
                *(c.request(subject, n, timeout=10) for n in range(50)),
                c.request(nobody, "x", timeout=5),
                return_exceptions=True,
            )
        finally:
            task.cancel()
    *replies, refused = answers
    assert [r.data for r in replies] == [2 * n for n in range(50)]  # type: ignore[union-attr]
    assert isinstance(refused, clients.NoResponders)  # only the refused request fails


async def test_requests_ready_at_once_share_one_message(broker: RunningBroker) -> None:
    subject = unique("batched")
    async with Client(broker.target) as c, Client(broker.target) as responder_client:
        sub = await responder_client.subscription(subject)

        async def respond() -> None:
            async for msg in sub:
                await msg.respond(msg.data)

        task = asyncio.ensure_future(respond())
        try:
            # Answered, so the broker's announcement of batches (its initial metadata, sent
            # before any answer) has been read.
            assert (await c.request(subject, -1, timeout=10)).data == -1
            before = c.request_messages_sent
            # Queued in one loop turn, before the stream's writer runs: one message.
            replies = await asyncio.gather(*(c.request(subject, n, timeout=10) for n in range(50)))
        finally:
            task.cancel()
    assert [r.data for r in replies] == list(range(50))
    assert c.request_messages_sent - before == 1


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 0.0, -1.0])
async def test_a_request_timeout_that_is_not_a_positive_number_is_refused_before_sending(
    broker: RunningBroker, timeout: float
) -> None:
    async with Client(broker.target) as c:
        with pytest.raises(ValueError, match="positive number of seconds"):
            await c.request(unique("bad-timeout"), "x", timeout=timeout)
        assert c.request_messages_sent == 0
        # The client still works: the refusal left nothing behind.
        with pytest.raises(clients.NoResponders):
            await c.request(unique("nobody"), "x", timeout=5)


async def _later(coro: Awaitable[object], delay: float) -> None:
    await asyncio.sleep(delay)
    await coro


async def test_a_broken_request_stream_fails_its_requests_and_the_next_opens_another(
    broker: RunningBroker,
) -> None:
    subject = unique("cut")
    async with (
        TcpProxy(broker.target) as proxy,
        Client(proxy.target) as c,
        Client(broker.target) as responder_client,
        responder_client.subscribe(subject) as sub,  # listens, answers only later
    ):
        await sub.start()
        waiting = asyncio.ensure_future(c.request(subject, "lost", timeout=30))
        await anext(sub)  # the request reached the responder: it is in flight
        await proxy.cut()
        with pytest.raises(clients.Unavailable):
            await asyncio.wait_for(waiting, 10)

        async def answer() -> None:
            async for msg in sub:
                await msg.respond("back")

        task = asyncio.ensure_future(answer())
        try:
            reply = await asyncio.wait_for(c.request(subject, "again", timeout=10), 15)
        finally:
            task.cancel()
    assert reply.data == "back"


# -- auth ---------------------------------------------------------------------------------------


async def test_bad_api_key_fails_publishes_without_retrying(
    keyed: tuple[RunningBroker, str],
) -> None:
    broker, key = keyed
    key_id = key.split("_")[1]
    subject = unique("badkey")
    loop = asyncio.get_running_loop()
    async with Client(broker.target, api_key=f"lg_{key_id}_wrongsecret") as c:
        start = loop.time()
        results = await asyncio.gather(
            *(c.publish(subject, i) for i in range(3)), return_exceptions=True
        )
        # A retry loop would hold them until publish_timeout (30 s) and resend the frame.
        assert loop.time() - start < 5
        assert all(isinstance(r, clients.Unauthenticated) for r in results), results
        assert results[0].message == "the API key is not valid"  # the broker's own words
        frames = c.frames_sent
        assert frames <= 1
        # No event marks a retry that does not happen: wait longer than the first reconnect
        # backoff (at most 0.15 s), by which a retrying client would have resent the frame.
        await asyncio.sleep(0.5)
        assert c.frames_sent == frames  # no reconnect storm on a permanent error
    async with Client(broker.target, api_key=key) as good:
        assert await stored(good, subject) == []


async def test_bad_api_key_refuses_requests(keyed: tuple[RunningBroker, str]) -> None:
    broker, key = keyed
    key_id = key.split("_")[1]
    async with Client(broker.target, api_key=f"lg_{key_id}_wrongsecret") as c:
        with pytest.raises(clients.Unauthenticated):
            await asyncio.wait_for(c.request(unique("auth"), "hi", timeout=2), 10)


async def test_every_stream_refused_at_its_start_says_why(keyed: tuple[RunningBroker, str]) -> None:
    # The broker reads a refused stream's first message before it ends the stream: a write
    # cut short by the refusal made the client's grpc report its own "Internal error from
    # Core" instead of UNAUTHENTICATED (85 of 100 concurrent requests before the fix).
    broker, key = keyed
    bad = f"lg_{key.split('_')[1]}_wrongsecret"

    async def attempt(i: int) -> BaseException | None:
        async with Client(broker.target, api_key=bad) as c:
            try:
                if i % 3 == 0:
                    await c.request(unique("auth"), "hi", timeout=2)
                elif i % 3 == 1:
                    await c.publish(unique("auth"), "hi")
                else:
                    async with c.subscribe(unique("auth")) as sub:
                        await asyncio.wait_for(anext(sub), 5)
            except Exception as exc:  # the outcome is what the test checks
                return exc
        return None

    outcomes = await asyncio.wait_for(asyncio.gather(*(attempt(i) for i in range(45))), 60)
    assert all(isinstance(o, clients.Unauthenticated) for o in outcomes), outcomes
