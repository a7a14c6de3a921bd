"""Delivery semantics against a real broker: ordering, queue groups, dedup, durable acks,
redelivery and dead letters, start positions, slow consumers, retention."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import admin_pb2, broker_pb2
from tests.broker.e2e_kit import (
    Stubs,
    Sub,
    assert_no_more,
    error_info,
    event,
    open_call,
    pending_count,
    publish_batches,
    publish_one,
    query_all,
    subscribe,
    unique,
)
from tests.support import eventually

T = TypeVar("T")

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def _durable_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _publish_one(stubs: Stubs, subject: str, data: str = "x") -> int:
    return await publish_one(stubs.broker, subject, data)


async def _pending(stubs: Stubs, name: str, count: int) -> bool:
    return await pending_count(stubs, name) == count


async def _at_most(n: int, items: Awaitable[list[T]]) -> list[T] | None:
    got = await items
    return got if len(got) <= n else None


# -- ordering and queue groups -------------------------------------------------------------


async def test_publish_order_reaches_subscriber_in_order(stubs: Stubs) -> None:
    subject = unique("order")
    call = await subscribe(stubs.broker, pattern=subject)
    batches = [[event(f"{b}:{i}") for i in range(100)] for b in range(50)]
    responses = await publish_batches(stubs.broker, subject, batches)
    assert [r.batch_id for r in responses] == list(range(1, 51))
    ids = [i for r in responses for i in r.ids]
    assert all(ids) and ids == sorted(ids) and len(set(ids)) == 5000
    got = await call.collect(5000, 20)
    assert [d.id for d in got] == ids
    assert [d.event.text_data for d in got] == [f"{b}:{i}" for b in range(50) for i in range(100)]
    assert {d.attempt for d in got} == {1}
    await call.close()


class _Member:
    """A queue-group member reading in the background."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call
        self.ids: list[int] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            while (msg := await self.call.read()) is not grpc.aio.EOF:
                self.ids.extend(d.id for d in msg.deliveries)

    async def leave(self) -> None:
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def _received(members: list[_Member], ids: list[int], timeout: float = 10) -> None:
    """Waits until every one of ``ids`` reached one of the members."""
    await eventually(lambda: set(ids) <= {i for m in members for i in m.ids}, timeout=timeout)


def _events(member: _Member, markers: set[int]) -> list[int]:
    return [i for i in member.ids if i not in markers]


async def _settle(stubs: Stubs, subject: str, members: list[_Member], markers: set[int]) -> None:
    """Proves that nothing more is on its way to ``members`` (a duplicate, or an event routed
    to a member that left): publishes markers on ``subject`` until every member received one
    and more than ``len(members)`` in a row arrived. Whatever the broker sent a member before
    a marker arrives before it; and a member that left but is still taking turns would have
    swallowed a marker. The markers' ids go into ``markers``."""
    in_a_row = 0
    for _ in range(30):
        marker = await _publish_one(stubs, subject, "marker")
        markers.add(marker)
        try:
            await _received(members, [marker], timeout=2)
        except AssertionError:
            in_a_row = 0  # lost to a member that left: the server has not noticed yet
            continue
        in_a_row += 1
        if in_a_row > len(members) and all(markers & set(m.ids) for m in members):
            return
    pytest.fail(f"the members did not settle: {[len(m.ids) for m in members]}")


async def test_queue_group_each_event_to_exactly_one_member(stubs: Stubs) -> None:
    subject = unique("qg")
    members = [
        _Member((await open_call(stubs.broker, pattern=subject, queue_group="g"))[0])
        for _ in range(3)
    ]
    responses = await publish_batches(
        stubs.broker, subject, [[event(), event()] for _ in range(60)]
    )
    first = [i for r in responses for i in r.ids]
    markers: set[int] = set()
    await _received(members, first)
    await _settle(stubs, subject, members, markers)
    union = [i for m in members for i in _events(m, markers)]
    assert sorted(union) == sorted(first)  # all delivered, none twice
    assert all(_events(m, markers) for m in members), [len(m.ids) for m in members]

    gone = members.pop(0)
    await gone.leave()
    await _settle(stubs, subject, members, markers)  # the server noticed and rebalanced
    before = [len(m.ids) for m in members]
    responses = await publish_batches(
        stubs.broker, subject, [[event(), event()] for _ in range(60)]
    )
    second = [i for r in responses for i in r.ids]
    await _received(members, second)
    await _settle(stubs, subject, members, markers)
    after = [
        [i for i in m.ids[b:] if i not in markers] for m, b in zip(members, before, strict=True)
    ]
    assert sorted(i for a in after for i in a) == sorted(second)
    assert all(after), [len(a) for a in after]
    for m in members:
        await m.leave()


async def test_queue_group_beside_a_plain_subscriber(stubs: Stubs) -> None:
    subject = unique("qg")
    group = [
        _Member((await open_call(stubs.broker, pattern=subject, queue_group="g"))[0])
        for _ in range(2)
    ]
    plain = _Member((await open_call(stubs.broker, pattern=f"{subject.split('.')[0]}.*"))[0])
    responses = await publish_batches(stubs.broker, subject, [[event()] for _ in range(20)])
    ids = [i for r in responses for i in r.ids]
    markers: set[int] = set()
    await _received([plain], ids)
    await _received(group, ids)
    await _settle(stubs, subject, [*group, plain], markers)
    assert _events(plain, markers) == ids  # the plain subscriber gets everything, in order
    assert sorted(i for m in group for i in _events(m, markers)) == ids  # the group shares it
    for m in [*group, plain]:
        await m.leave()


async def test_queue_group_spreads_one_batch_over_its_members(stubs: Stubs) -> None:
    subject = unique("qg")
    group = [
        _Member((await open_call(stubs.broker, pattern=subject, queue_group="g"))[0])
        for _ in range(2)
    ]
    (resp,) = await publish_batches(stubs.broker, subject, [[event() for _ in range(10)]])
    ids = list(resp.ids)
    await _received(group, ids)
    markers: set[int] = set()
    await _settle(stubs, subject, group, markers)
    shares = [[i for i in _events(m, markers) if i in ids] for m in group]
    assert sorted(i for share in shares for i in share) == ids  # each event to exactly one
    assert all(shares), [len(share) for share in shares]  # both got some
    assert all(share == sorted(share) for share in shares)  # each share in publish order
    for m in group:
        await m.leave()


async def test_durable_queue_spreads_one_batch_over_its_streams(stubs: Stubs) -> None:
    subject = unique("dq")
    name = _durable_name("dq")
    group = [
        _Member((await open_call(stubs.broker, pattern=subject, durable=name))[0]) for _ in range(2)
    ]
    (resp,) = await publish_batches(stubs.broker, subject, [[event() for _ in range(10)]])
    ids = list(resp.ids)
    await _received(group, ids)
    assert sorted(i for m in group for i in m.ids) == ids  # unacked: nothing comes twice
    assert all(m.ids for m in group), [len(m.ids) for m in group]
    for m in group:
        await m.leave()


# -- dedup --------------------------------------------------------------------------------


async def test_dedup_publish_one(stubs: Stubs) -> None:
    subject = unique("dedup")
    ev = event("once", id="fixed-id-1", source=f"src-{uuid.uuid4().hex}")
    first = await stubs.broker.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=ev), timeout=10
    )
    again = await stubs.broker.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=ev), timeout=10
    )
    assert not first.duplicate and again.duplicate
    assert again.id == first.id
    # Same id from another source is another event.
    other = event("other", id="fixed-id-1", source=f"src-{uuid.uuid4().hex}")
    third = await stubs.broker.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=other), timeout=10
    )
    assert not third.duplicate and third.id != first.id
    stored = await query_all(stubs.broker, subject)
    assert [s.id for s in stored] == [first.id, third.id]


async def test_dedup_within_and_across_batches(stubs: Stubs) -> None:
    subject = unique("dedup")
    src = f"src-{uuid.uuid4().hex}"
    a = event("a", id="a", source=src)
    b = event("b", id="b", source=src)
    [r1, r2] = await publish_batches(stubs.broker, subject, [[a, b, a], [b, event("c")]])
    assert list(r1.duplicate_indexes) == [2]
    assert r1.ids[2] == r1.ids[0] and r1.ids[0] != r1.ids[1]
    assert list(r2.duplicate_indexes) == [0]
    assert r2.ids[0] == r1.ids[1]
    assert not r1.errors and not r2.errors
    # Published again on another stream, on PublishOne: still the first id.
    one = await stubs.broker.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=a), timeout=10
    )
    assert one.duplicate and one.id == r1.ids[0]
    stored = await query_all(stubs.broker, subject)
    assert [s.id for s in stored] == [r1.ids[0], r1.ids[1], r2.ids[1]]


# -- durable: nack, ack_wait, dead letters ------------------------------------------------


async def test_nack_with_delay_redelivers_after_the_delay(stubs: Stubs) -> None:
    subject = unique("nack")
    name = _durable_name("nack")
    call = await subscribe(stubs.broker, pattern=subject, durable=name)
    event_id = await _publish_one(stubs, subject)
    [d] = await call.collect(1, 5)
    assert (d.id, d.attempt) == (event_id, 1)
    nacked = time.monotonic()
    await call.nack([event_id], delay=0.5)
    [d2] = await call.collect(1, 5)
    waited = time.monotonic() - nacked
    assert (d2.id, d2.attempt) == (event_id, 2)
    assert waited >= 0.45, waited
    assert d2.event == d.event
    await call.ack([event_id])
    await eventually(lambda: _pending(stubs, name, 0))
    await call.ack([await assert_no_more(call, stubs.broker, subject)])
    await call.close()


async def test_nack_without_delay_redelivers_at_once(stubs: Stubs) -> None:
    subject = unique("nack")
    name = _durable_name("nack")
    call = await subscribe(stubs.broker, pattern=subject, durable=name)
    event_id = await _publish_one(stubs, subject)
    [d] = await call.collect(1, 5)
    await call.nack([d.id])
    [d2] = await call.collect(1, 2)
    assert (d2.id, d2.attempt) == (event_id, 2)
    await call.close()


async def test_ack_wait_expiry_redelivers(stubs: Stubs) -> None:
    subject = unique("ackwait")
    name = _durable_name("ackwait")
    call = await subscribe(
        stubs.broker,
        pattern=subject,
        durable=name,
        ack_wait=duration_pb2.Duration(nanos=300_000_000),
        max_deliveries=10,
    )
    event_id = await _publish_one(stubs, subject)
    [d1] = await call.collect(1, 5)
    t1 = time.monotonic()
    [d2] = await call.collect(1, 5)
    t2 = time.monotonic()
    [d3] = await call.collect(1, 5)
    assert [(d.id, d.attempt) for d in (d1, d2, d3)] == [
        (event_id, 1),
        (event_id, 2),
        (event_id, 3),
    ]
    assert t2 - t1 >= 0.25, t2 - t1
    info = await stubs.admin.GetDurable(admin_pb2.GetDurableRequest(name=name), timeout=10)
    assert [(p.id, p.attempt) for p in info.pending] == [(event_id, 3)]
    await call.ack([event_id])
    await call.close()


async def test_max_deliveries_dead_letters_and_redrive(stubs: Stubs) -> None:
    subject = unique("dlq")
    name = _durable_name("dlq")
    dlq_sub = await subscribe(stubs.broker, pattern=f"$dlq.{name}")
    call = await subscribe(
        stubs.broker,
        pattern=subject,
        durable=name,
        ack_wait=duration_pb2.Duration(nanos=300_000_000),
        max_deliveries=2,
    )
    event_id = await _publish_one(stubs, subject, "doomed")
    got = await call.collect(2, 5)
    assert [(d.id, d.attempt) for d in got] == [(event_id, 1), (event_id, 2)]

    # After the second ack_wait (doubled by the backoff) it is dead.
    [dead] = await dlq_sub.collect(1, 5)
    assert dead.subject == f"$dlq.{name}"
    assert dead.event.text_data == "doomed"
    attrs = dead.event.attributes
    assert attrs["lockgateoriginalid"].ce_string == str(event_id)
    assert attrs["lockgatedlqdurable"].ce_string == name
    assert attrs["lockgateoriginalsubject"].ce_string == subject

    letters = await stubs.admin.ListDeadLetters(
        admin_pb2.ListDeadLettersRequest(durable=name), timeout=10
    )
    assert [(x.id, x.durable, x.attempts) for x in letters.dead_letters] == [(event_id, name, 2)]
    assert letters.dead_letters[0].event.id == event_id
    # Ephemeral delivery may precede the store's commit (DESIGN.md), so history may lag.
    history = await eventually(lambda: query_all(stubs.broker, f"$dlq.{name}"))
    assert [h.event.attributes["lockgateoriginalid"].ce_string for h in history] == [str(event_id)]
    info = await stubs.admin.GetDurable(admin_pb2.GetDurableRequest(name=name), timeout=10)
    assert info.durable.pending_count == 0
    await call.ack([await assert_no_more(call, stubs.broker, subject)])  # no third delivery

    redriven = await stubs.admin.RedriveDeadLetters(
        admin_pb2.RedriveDeadLettersRequest(durable=name), timeout=10
    )
    assert redriven.count == 1
    [again] = await call.collect(1, 5)
    assert again.id == event_id and again.event.text_data == "doomed"
    await call.ack([event_id])
    await eventually(lambda: _pending(stubs, name, 0))
    letters = await stubs.admin.ListDeadLetters(
        admin_pb2.ListDeadLettersRequest(durable=name), timeout=10
    )
    assert list(letters.dead_letters) == []
    await call.close()
    await dlq_sub.close()


# -- start positions ----------------------------------------------------------------------


async def _next_millisecond() -> None:
    """Waits for the wall clock to enter a new millisecond: stored times have millisecond
    precision, so a time mark between two events needs them in different milliseconds."""
    now = time.time_ns() // 1_000_000
    await eventually(lambda: time.time_ns() // 1_000_000 > now, interval=0.001)


async def _ten_events(stubs: Stubs, subject: str) -> tuple[list[int], timestamp_pb2.Timestamp]:
    """Publishes 10 events with a time mark between the 5th and the 6th."""
    ids = [await _publish_one(stubs, subject, str(i)) for i in range(5)]
    await _next_millisecond()
    mark = timestamp_pb2.Timestamp()
    mark.GetCurrentTime()
    await _next_millisecond()
    ids += [await _publish_one(stubs, subject, str(i)) for i in range(5, 10)]
    return ids, mark


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "ephemeral"])
async def test_start_positions(stubs: Stubs, durable: bool) -> None:
    subject = unique("start")
    ids, mark = await _ten_events(stubs, subject)
    cases = [
        (broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_ALL), ids),
        (
            broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_SINCE_TIME, since_time=mark),
            ids[5:],
        ),
        (
            broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_AFTER_ID, after_id=ids[6]),
            ids[7:],
        ),
        (broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_NEW), []),
        (broker_pb2.StartPosition(), []),
    ]
    calls = []
    for start, expected in cases:
        name = _durable_name("start") if durable else ""
        call = await subscribe(stubs.broker, pattern=subject, durable=name, start=start)
        assert call.subscribed.last_id >= ids[-1]
        got = await call.collect(len(expected), 5, ack=durable)
        assert [d.id for d in got] == expected, broker_pb2.StartPolicy.Name(start.policy)
        calls.append((call, expected))
    # Everyone gets what is published next, after its replay.
    later = await _publish_one(stubs, subject, "later")
    for call, _ in calls:
        got = await call.collect(1, 5, ack=durable)
        assert [d.id for d in got] == [later]
        await call.close()


async def test_durable_resumes_where_it_stopped_whatever_the_start(stubs: Stubs) -> None:
    subject = unique("resume")
    name = _durable_name("resume")
    all_ = broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_ALL)
    ids, _ = await _ten_events(stubs, subject)
    call = await subscribe(stubs.broker, pattern=subject, durable=name, start=all_)
    got = await call.collect(10, 5)
    await call.ack([d.id for d in got])
    await eventually(lambda: _pending(stubs, name, 0))
    await call.close()
    more = [await _publish_one(stubs, subject, "more") for _ in range(3)]
    # The existing durable continues; its start position is ignored.
    call = await subscribe(stubs.broker, pattern=subject, durable=name, start=all_)
    got = await call.collect(3, 5, ack=True)
    assert [d.id for d in got] == more
    await call.ack([await assert_no_more(call, stubs.broker, subject)])
    await call.close()
    assert ids


# -- slow consumer ------------------------------------------------------------------------


async def test_slow_consumer_is_cut_off_and_publisher_completes() -> None:
    async with (
        run_broker(extra_args=["--subscriber-max-bytes", str(2 << 20)]) as b,
        grpc.aio.insecure_channel(b.target) as ch,
        grpc.aio.insecure_channel(b.target) as sub_ch,
    ):
        stubs = Stubs(ch)
        subject = unique("slow")
        stalled, _ = await open_call(Stubs(sub_ch).broker, pattern=subject)
        # Never read again. 20,000 events of ~1 KiB: far more than the HTTP/2 windows hold.
        payload = "p" * 1000
        batches = [[event(payload) for _ in range(100)] for _ in range(200)]
        started = time.monotonic()
        responses = await asyncio.wait_for(publish_batches(stubs.broker, subject, batches), 60)
        elapsed = time.monotonic() - started
        assert len(responses) == 200 and all(all(r.ids) for r in responses)
        assert elapsed < 30
        # Now drain what the transport held: the stream must end with the error.
        reader = Sub(stalled, broker_pb2.Subscribed())
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            received = len(await reader.collect(20_000, 20))
            pytest.fail(f"the stalled stream did not end with an error after {received} events")
        code, reason, _ = error_info(exc.value)
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SLOW_CONSUMER")
        assert b.proc.returncode is None


async def test_a_burst_does_not_cut_a_subscriber_that_reads(stubs: Stubs) -> None:
    """Slow consumers are judged by bytes and time, not by a count of events: 25,000 events (25 MB)
    queued at once (more than twice the 10,000 an event count once allowed) reach a
    subscriber that reads them all moments later."""
    subject = unique("burst")
    call, subscribed = await open_call(stubs.broker, pattern=subject)
    batches = [[event(b"x" * 1000) for _ in range(500)] for _ in range(50)]  # 25 MB
    responses = await publish_batches(stubs.broker, subject, batches)
    assert all(not r.errors for r in responses)
    got = await Sub(call, subscribed).collect(25_000, 30)
    assert len(got) == 25_000
    call.cancel()


# -- retention ----------------------------------------------------------------------------


async def test_retention_max_events_trims_whole_batches() -> None:
    async with (
        run_broker(extra_args=["--retention-max-events", "10"]) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        stubs = Stubs(ch)
        subject = unique("ret")
        other = unique("ret")
        responses = await publish_batches(stubs.broker, subject, [[event()] for _ in range(50)])
        ids = [r.ids[0] for r in responses]
        [kept] = await publish_batches(stubs.broker, other, [[event() for _ in range(5)]])
        assert len(await query_all(stubs.broker, subject)) == 50
        # The retention loop runs every 5 s.
        stored = await eventually(
            lambda: _at_most(10, query_all(stubs.broker, subject)), timeout=15, interval=0.5
        )
        assert [s.id for s in stored] == ids[-10:]
        assert [s.id for s in await query_all(stubs.broker, other)] == list(kept.ids)
        # A trimmed event is gone by id as well.
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stubs.broker.GetEvent(broker_pb2.GetEventRequest(id=ids[0]), timeout=10)
        assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


# -- history ------------------------------------------------------------------------------


@pytest.mark.parametrize("wildcard", [False, True], ids=["literal", "wildcard"])
async def test_query_pages_cover_history_exactly_once(stubs: Stubs, wildcard: bool) -> None:
    subject = unique("pages")
    responses = await publish_batches(
        stubs.broker, subject, [[event(f"{n}:{i}") for i in range(5)] for n in range(10)]
    )
    ids = [i for r in responses for i in r.ids]
    pattern = f"{subject.split('.')[0]}.*" if wildcard else subject
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await stubs.broker.QueryEvents(
            broker_pb2.QueryEventsRequest(pattern=pattern, page_size=7, page_token=token),
            timeout=10,
        )
        assert len(page.events) <= 7
        seen += [e.id for e in page.events if e.subject == subject]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    assert pages >= 8
    # after_id and a time window select the same events as their ids say.
    after = await query_all(stubs.broker, subject, after_id=ids[24])
    assert [e.id for e in after] == ids[25:]
    first = await stubs.broker.GetEvent(broker_pb2.GetEventRequest(id=ids[0]), timeout=10)
    window = await query_all(stubs.broker, subject, start_time=first.event.stored_time)
    assert [e.id for e in window] == ids
