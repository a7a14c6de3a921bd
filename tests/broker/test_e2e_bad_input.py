"""Bad input against a real broker: each rejection has its status code, its ErrorInfo reason,
and leaves nothing behind (no stored event, no created or changed durable)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import admin_pb2, broker_pb2
from tests.broker.e2e_kit import (
    CloudEvent,
    Stubs,
    error_info,
    event,
    publish_batches,
    query_all,
    subscribe,
    unique,
)
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT

# (label, subject built from a unique prefix). The prefix lets a history query show that
# nothing was stored even though the invalid subject itself cannot be queried.
BAD_SUBJECTS = [
    ("empty-token", lambda p: f"{p}..b"),
    ("trailing-dot", lambda p: f"{p}.b."),
    ("space", lambda p: f"{p}.a b"),
    ("tab", lambda p: f"{p}.a\tb"),
    ("newline", lambda p: f"{p}.a\nb"),
    ("too-long", lambda p: f"{p}." + "x" * 300),
    ("too-many-tokens", lambda p: p + ".t" * 16),
    ("star", lambda p: f"{p}.*"),
    ("gt", lambda p: f"{p}.>"),
    ("star-in-token", lambda p: f"{p}.a*b"),
    ("ansi-escape", lambda p: f"{p}.\x1b[31mred"),
    ("del", lambda p: f"{p}.a\x7fb"),
    ("nbsp", lambda p: f"{p}.a\u00a0b"),
    ("line-separator", lambda p: f"{p}.a\u2028b"),
    ("nel", lambda p: f"{p}.a\x85b"),
    ("zero-width-space", lambda p: f"{p}.a\u200bb"),
    ("bidi-override", lambda p: f"{p}.\u202egpj"),
    ("private-use", lambda p: f"{p}.a\ue000"),
]


async def _nothing_under(stubs: Stubs, prefix: str) -> None:
    assert await query_all(stubs.broker, prefix + ".>") == []
    assert await query_all(stubs.broker, prefix) == []


# -- subjects -----------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "make"), BAD_SUBJECTS, ids=[b[0] for b in BAD_SUBJECTS])
async def test_publish_one_invalid_subject(stubs: Stubs, label: str, make: object) -> None:
    prefix = unique("badsubj")
    subject = make(prefix)  # type: ignore[operator]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject=subject, event=event()), timeout=10
        )
    code, reason, _ = error_info(exc.value)
    assert (code, reason) == (INVALID_ARGUMENT, "INVALID_SUBJECT")
    await _nothing_under(stubs, prefix)


@pytest.mark.parametrize(("label", "make"), BAD_SUBJECTS, ids=[b[0] for b in BAD_SUBJECTS])
async def test_publish_stream_invalid_subject(stubs: Stubs, label: str, make: object) -> None:
    prefix = unique("badsubj")
    subject = make(prefix)  # type: ignore[operator]
    [resp] = await publish_batches(stubs.broker, subject, [[event(), event(), event()]])
    assert list(resp.ids) == [0, 0, 0]
    assert [(e.index, e.reason) for e in resp.errors] == [
        (0, "INVALID_SUBJECT"),
        (1, "INVALID_SUBJECT"),
        (2, "INVALID_SUBJECT"),
    ]
    assert all(e.message for e in resp.errors)
    await _nothing_under(stubs, prefix)


@pytest.mark.parametrize("subject", ["", "$sys.x", "$dlq.x", "$presence.y"])
async def test_reserved_or_empty_subject_rejected(stubs: Stubs, subject: str) -> None:
    subject = subject and f"{subject}.{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject=subject, event=event()), timeout=10
        )
    assert error_info(exc.value)[:2] == (INVALID_ARGUMENT, "INVALID_SUBJECT")
    [resp] = await publish_batches(stubs.broker, subject, [[event()]])
    assert list(resp.ids) == [0]
    assert [e.reason for e in resp.errors] == ["INVALID_SUBJECT"]
    if subject:
        assert await query_all(stubs.broker, subject) == []


# -- events -------------------------------------------------------------------------------


async def _publish_one_error(
    stubs: Stubs, subject: str, ev: CloudEvent
) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject=subject, event=ev), timeout=10
        )
    return error_info(exc.value)


async def test_empty_event(stubs: Stubs) -> None:
    subject = unique("empty")
    assert (await _publish_one_error(stubs, subject, CloudEvent()))[:2] == (
        INVALID_ARGUMENT,
        "EMPTY_EVENT",
    )
    # A missing event field on the request is the same empty event.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.PublishOne(broker_pb2.PublishOneRequest(subject=subject), timeout=10)
    assert error_info(exc.value)[:2] == (INVALID_ARGUMENT, "EMPTY_EVENT")
    [resp] = await publish_batches(stubs.broker, subject, [[CloudEvent()]])
    assert list(resp.ids) == [0]
    assert [(e.index, e.reason) for e in resp.errors] == [(0, "EMPTY_EVENT")]
    assert await query_all(stubs.broker, subject) == []


@pytest.mark.parametrize(
    ("field", "name"),
    [("id", "id"), ("source", "source"), ("type", "type"), ("spec_version", "specversion")],
)
async def test_missing_attribute(stubs: Stubs, field: str, name: str) -> None:
    subject = unique("missing")
    ev = event("payload")
    ev.ClearField(field)  # type: ignore[arg-type]
    code, reason, meta = await _publish_one_error(stubs, subject, ev)
    assert (code, reason) == (INVALID_ARGUMENT, "MISSING_ATTRIBUTE")
    assert meta["missing"] == name
    assert meta.get("hint")
    [resp] = await publish_batches(stubs.broker, subject, [[ev]])
    assert list(resp.ids) == [0]
    assert [(e.index, e.reason) for e in resp.errors] == [(0, "MISSING_ATTRIBUTE")]
    assert await query_all(stubs.broker, subject) == []


async def test_missing_all_attributes_names_each(stubs: Stubs) -> None:
    subject = unique("missing")
    code, reason, meta = await _publish_one_error(stubs, subject, CloudEvent(text_data="only"))
    assert (code, reason) == (INVALID_ARGUMENT, "MISSING_ATTRIBUTE")
    assert set(meta["missing"].split(",")) == {"id", "source", "specversion", "type"}
    assert await query_all(stubs.broker, subject) == []


@pytest.mark.parametrize("version", ["0.3", "1", "2.0", " 1.0"])
async def test_wrong_spec_version(stubs: Stubs, version: str) -> None:
    subject = unique("specver")
    ev = event()
    ev.spec_version = version
    assert (await _publish_one_error(stubs, subject, ev))[:2] == (
        INVALID_ARGUMENT,
        "INVALID_EVENT",
    )
    assert await query_all(stubs.broker, subject) == []


async def test_mixed_batch_stores_only_the_good_events(stubs: Stubs) -> None:
    subject = unique("mixed")
    no_source = event("bad")
    no_source.ClearField("source")
    bad_version = event("bad")
    bad_version.spec_version = "0.3"
    batch = [
        event("good-0"),
        CloudEvent(),
        event("good-2"),
        no_source,
        bad_version,
        event("good-5"),
    ]
    [resp] = await publish_batches(stubs.broker, subject, [batch])
    assert [(e.index, e.reason) for e in resp.errors] == [
        (1, "EMPTY_EVENT"),
        (3, "MISSING_ATTRIBUTE"),
        (4, "INVALID_EVENT"),
    ]
    ids = list(resp.ids)
    assert [i for i, v in enumerate(ids) if v] == [0, 2, 5]
    assert ids[0] < ids[2] < ids[5]
    stored = await query_all(stubs.broker, subject)
    assert [(s.id, s.event.text_data) for s in stored] == [
        (ids[0], "good-0"),
        (ids[2], "good-2"),
        (ids[5], "good-5"),
    ]
    assert stored[0].event == batch[0]


async def test_oversize_event() -> None:
    async with (
        run_broker(extra_args=["--max-event-bytes", "1000"]) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        stubs = Stubs(ch)
        subject = unique("big")
        big = event(os.urandom(2000))
        code, reason, meta = await _publish_one_error(stubs, subject, big)
        assert (code, reason) == (INVALID_ARGUMENT, "EVENT_TOO_LARGE")
        assert meta["limit"] == "1000"
        assert int(meta["size"]) > 2000
        small = event(b"s" * 100)
        [resp] = await publish_batches(stubs.broker, subject, [[small, big]])
        assert resp.ids[0] != 0 and resp.ids[1] == 0
        assert [(e.index, e.reason) for e in resp.errors] == [(1, "EVENT_TOO_LARGE")]
        stored = await query_all(stubs.broker, subject)
        assert [s.id for s in stored] == [resp.ids[0]]


# -- start positions ----------------------------------------------------------------------


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def _bad_starts() -> list[tuple[str, broker_pb2.StartPosition]]:
    now = int(time.time())
    since = broker_pb2.START_POLICY_SINCE_TIME
    after = broker_pb2.START_POLICY_AFTER_ID
    far_id = id_for_time_ms((now + 86_400) * 1000)
    return [
        ("since-nanos-negative", broker_pb2.StartPosition(policy=since, since_time=_ts(now, -1))),
        (
            "since-nanos-too-big",
            broker_pb2.StartPosition(policy=since, since_time=_ts(now, 1_000_000_000)),
        ),
        (
            "since-future",
            broker_pb2.StartPosition(policy=since, since_time=_ts(now + 3600)),
        ),
        ("since-unset", broker_pb2.StartPosition(policy=since)),
        ("after-id-zero", broker_pb2.StartPosition(policy=after, after_id=0)),
        ("after-id-future", broker_pb2.StartPosition(policy=after, after_id=far_id)),
    ]


@pytest.mark.parametrize("durable", [False, True], ids=["ephemeral", "durable"])
@pytest.mark.parametrize("case", range(6), ids=[c[0] for c in _bad_starts()])
async def test_invalid_start(stubs: Stubs, case: int, durable: bool) -> None:
    _, start = _bad_starts()[case]
    name = f"badstart-{uuid.uuid4().hex[:8]}" if durable else ""
    call = stubs.broker.Subscribe()
    await call.write(
        broker_pb2.SubscribeRequest(
            open=broker_pb2.SubscribeOpen(pattern=unique("start"), durable=name, start=start)
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(call.read(), 10)
    assert error_info(exc.value)[:2] == (INVALID_ARGUMENT, "INVALID_START")
    if durable:
        # A refused open creates no durable.
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stubs.admin.GetDurable(admin_pb2.GetDurableRequest(name=name), timeout=10)
        assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_DURABLE")


# -- acks and durables --------------------------------------------------------------------


async def test_ack_on_ephemeral_subscription(stubs: Stubs) -> None:
    subject = unique("ephack")
    sub = await subscribe(stubs.broker, pattern=subject)
    resp = await stubs.broker.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=event()), timeout=10
    )
    got = await sub.collect(1, 5)
    assert [d.id for d in got] == [resp.id]
    await sub.ack([resp.id])
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await sub.collect(1, 5)
    assert error_info(exc.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "UNKNOWN_DURABLE")


async def _pending(stubs: Stubs, name: str) -> tuple[int, int, list[tuple[int, int]]]:
    resp = await stubs.admin.GetDurable(admin_pb2.GetDurableRequest(name=name), timeout=10)
    d = resp.durable
    return d.pending_count, d.ack_floor, [(p.id, p.attempt) for p in resp.pending]


async def _pending_when(stubs: Stubs, name: str, count: int) -> list[tuple[int, int]] | None:
    """The pending deliveries once there are ``count`` of them, else None."""
    pending_count, _, pending = await _pending(stubs, name)
    return pending if pending_count == count else None


async def test_ack_not_pending_leaves_durable_unchanged(stubs: Stubs) -> None:
    subject = unique("notpending")
    name = f"np-{uuid.uuid4().hex[:8]}"
    sub = await subscribe(stubs.broker, pattern=subject, durable=name)
    [resp] = await publish_batches(stubs.broker, subject, [[event(), event()]])
    ids = list(resp.ids)
    got = await sub.collect(2, 5)
    assert [d.id for d in got] == ids
    before = await _pending(stubs, name)
    assert before[0] == 2 and [i for i, _ in before[2]] == ids
    # Acknowledge by name: one pending id and one that never was refuses the whole call.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.Acknowledge(
            broker_pb2.AcknowledgeRequest(durable=name, ack_ids=[ids[0], ids[1] + 7]),
            timeout=10,
        )
    code, reason, meta = error_info(exc.value)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_PENDING")
    assert meta["ids"] == str(ids[1] + 7)
    assert await _pending(stubs, name) == before
    await sub.close()


async def test_stale_acks_on_a_stream_are_skipped(stubs: Stubs) -> None:
    """At-least-once makes late acks normal (redelivered and acked elsewhere): a stream
    skips ids that are no longer pending instead of failing, and acks the rest."""
    subject = unique("stale")
    name = f"st-{uuid.uuid4().hex[:8]}"
    sub = await subscribe(stubs.broker, pattern=subject, durable=name)
    [resp] = await publish_batches(stubs.broker, subject, [[event(), event()]])
    ids = list(resp.ids)
    assert [d.id for d in await sub.collect(2, 5)] == ids
    await sub.ack([ids[0], ids[1] + 7, 123])
    await sub.nack([456])
    pending = await eventually(lambda: _pending_when(stubs, name, 1))
    assert [i for i, _ in pending] == [ids[1]]
    [more] = await publish_batches(stubs.broker, subject, [[event()]])
    assert [d.id for d in await sub.collect(1, 5)] == list(more.ids)  # still open
    await sub.close()


async def test_nack_not_pending(stubs: Stubs) -> None:
    subject = unique("notpending")
    name = f"np-{uuid.uuid4().hex[:8]}"
    sub = await subscribe(stubs.broker, pattern=subject, durable=name)
    before = await _pending(stubs, name)
    assert before[0] == 0
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.Acknowledge(
            broker_pb2.AcknowledgeRequest(durable=name, nack_ids=[123]), timeout=10
        )
    assert error_info(exc.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_PENDING")
    assert await _pending(stubs, name) == before
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.Acknowledge(
            broker_pb2.AcknowledgeRequest(durable=f"nobody-{name}", ack_ids=[1]), timeout=10
        )
    assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_DURABLE")
    await sub.close()


async def test_unknown_durable_admin_calls(stubs: Stubs) -> None:
    name = f"nobody-{uuid.uuid4().hex[:8]}"
    admin = stubs.admin
    calls = [
        admin.GetDurable(admin_pb2.GetDurableRequest(name=name), timeout=10),
        admin.DeleteDurable(admin_pb2.DeleteDurableRequest(name=name), timeout=10),
        admin.ListDeadLetters(admin_pb2.ListDeadLettersRequest(durable=name), timeout=10),
        admin.RedriveDeadLetters(admin_pb2.RedriveDeadLettersRequest(durable=name), timeout=10),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_DURABLE")
    listed = await admin.ListDurables(admin_pb2.ListDurablesRequest(), timeout=10)
    assert name not in [d.name for d in listed.durables]


@pytest.mark.parametrize("first", ["ack", "nack", "none"])
async def test_first_subscribe_message_not_open(stubs: Stubs, first: str) -> None:
    call = stubs.broker.Subscribe()
    if first == "ack":
        req = broker_pb2.SubscribeRequest(ack=broker_pb2.Ack(ids=[1]))
    elif first == "nack":
        req = broker_pb2.SubscribeRequest(nack=broker_pb2.Nack(ids=[1]))
    else:
        req = broker_pb2.SubscribeRequest()
    await call.write(req)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(call.read(), 10)
    assert error_info(exc.value)[:2] == (INVALID_ARGUMENT, "NOT_OPEN")


@pytest.mark.parametrize("pattern", ["$sys.>", "$sys.x", "$presence.>"])
async def test_subscribe_to_broker_subjects_denied(stubs: Stubs, pattern: str) -> None:
    call = stubs.broker.Subscribe()
    await call.write(broker_pb2.SubscribeRequest(open=broker_pb2.SubscribeOpen(pattern=pattern)))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(call.read(), 10)
    assert error_info(exc.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


# -- request / reply ----------------------------------------------------------------------


async def test_request_without_responders(stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.Request(
            broker_pb2.RequestRequest(subject=unique("nobody"), event=event()), timeout=10
        )
    assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "NO_RESPONDERS")


async def test_request_with_responder(stubs: Stubs) -> None:
    subject = unique("rpc")
    sub = await subscribe(stubs.broker, pattern=subject)

    async def respond() -> broker_pb2.Delivery:
        [d] = await sub.collect(1, 10)
        reply = event(f"re: {d.event.text_data}", type="e2e.reply")
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject=d.reply_to, event=reply), timeout=10
        )
        return d

    responder = asyncio.create_task(respond())
    resp = await stubs.broker.Request(
        broker_pb2.RequestRequest(
            subject=subject, event=event("ping"), timeout=duration_pb2.Duration(seconds=5)
        ),
        timeout=10,
    )
    delivered = await responder
    assert delivered.reply_to.startswith("$inbox.")
    assert (resp.event.text_data, resp.event.type) == ("re: ping", "e2e.reply")
    await sub.close()


async def test_request_timeout(stubs: Stubs) -> None:
    subject = unique("rpc")
    sub = await subscribe(stubs.broker, pattern=subject)  # never replies
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.Request(
            broker_pb2.RequestRequest(
                subject=subject, event=event(), timeout=duration_pb2.Duration(nanos=300_000_000)
            ),
            timeout=10,
        )
    elapsed = time.monotonic() - start
    assert error_info(exc.value)[:2] == (grpc.StatusCode.DEADLINE_EXCEEDED, "REQUEST_TIMEOUT")
    assert 0.25 <= elapsed < 3.0
    got = await sub.collect(1, 2)
    assert len(got) == 1 and got[0].reply_to  # the request did reach the (silent) responder
    await sub.close()


async def test_reply_is_validated_like_any_event(stubs: Stubs) -> None:
    subject = unique("rpc")
    sub = await subscribe(stubs.broker, pattern=subject)
    refused: list[tuple[grpc.StatusCode, str, dict[str, str]]] = []

    async def respond_with_empty_event() -> None:
        [d] = await sub.collect(1, 10)
        try:
            await stubs.broker.PublishOne(
                broker_pb2.PublishOneRequest(subject=d.reply_to, event=CloudEvent()), timeout=10
            )
        except grpc.aio.AioRpcError as err:
            refused.append(error_info(err))

    responder = asyncio.create_task(respond_with_empty_event())
    with contextlib.suppress(grpc.aio.AioRpcError):
        await stubs.broker.Request(
            broker_pb2.RequestRequest(
                subject=subject, event=event(), timeout=duration_pb2.Duration(seconds=1)
            ),
            timeout=10,
        )
    await responder
    await sub.close()
    assert [r[:2] for r in refused] == [(INVALID_ARGUMENT, "EMPTY_EVENT")]


# -- the transport ------------------------------------------------------------------------


async def _send_raw(b: RunningBroker, payload: bytes) -> None:
    def go() -> None:
        with socket.create_connection((b.host, b.port), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(0.3)
            with contextlib.suppress(OSError):
                s.recv(4096)

    await asyncio.to_thread(go)


async def test_garbage_bytes_do_not_hurt_the_broker() -> None:
    async with run_broker() as b:
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        for payload in [
            os.urandom(4096),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            preface + os.urandom(2048),
            preface + b"\x00\xff\xff\xff\x00\x00\x00\x00\x01" + os.urandom(64),  # huge frame
            b"",
        ]:
            await _send_raw(b, payload)
        # The broker answered (or closed) every connection; a full round trip after them
        # and the exit code at the end show it survived.
        async with grpc.aio.insecure_channel(b.target) as ch:
            stubs = Stubs(ch)
            subject = unique("after-garbage")
            resp = await stubs.broker.PublishOne(
                broker_pb2.PublishOneRequest(subject=subject, event=event()), timeout=10
            )
            assert resp.id
            assert [s.id for s in await query_all(stubs.broker, subject)] == [resp.id]
        assert b.proc.returncode is None


# -- malformed protobuf --------------------------------------------------------------------

_GARBAGE = b"\x0a\xff\xff"  # field 1, length-delimited, with a truncated length varint


@pytest.mark.parametrize(
    "path",
    [
        "/broker.v1.BrokerService/PublishOne",
        "/broker.v1.BrokerService/GetEvent",
        "/broker.v1.AdminService/ListDurables",
        "/broker.v1.PolicyService/GetPolicies",
    ],
)
async def test_malformed_unary_request(stubs: Stubs, path: str) -> None:
    call = stubs.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(_GARBAGE, metadata=stubs.md)
    code, reason, _ = error_info(info.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_MESSAGE")
    assert "Wire format" not in (info.value.details() or "")


@pytest.mark.parametrize("method", ["Publish", "Subscribe"])
async def test_malformed_stream_request(stubs: Stubs, method: str) -> None:
    call = stubs.channel.stream_stream(
        f"/broker.v1.BrokerService/{method}", request_serializer=None, response_deserializer=None
    )
    stream = call(metadata=stubs.md)
    await stream.write(_GARBAGE)
    await stream.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream:
            pass
    code, reason, _ = error_info(info.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_MESSAGE")


@pytest.mark.parametrize("big", [(1 << 63) - 1, 1 << 63, (1 << 64) - 1])
async def test_ids_beyond_63_bits_read_as_nothing(stubs: Stubs, big: int) -> None:
    """Ids are 63 bits; a larger one (uint64 on the wire) used to overflow SQLite and answer
    UNKNOWN. GetEvent says NOT_FOUND; a query or page after it is an empty last page."""
    b = stubs.broker
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await b.GetEvent(broker_pb2.GetEventRequest(id=big), timeout=10)
    assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    for req in (
        broker_pb2.QueryEventsRequest(pattern=">", after_id=big),
        broker_pb2.QueryEventsRequest(pattern=">", page_token=str(big)),
    ):
        resp = await b.QueryEvents(req, timeout=10)
        assert (list(resp.events), resp.next_page_token) == ([], "")


@pytest.mark.parametrize("token", ["\u00b2", "\u0661\u0662", "9" * 5000, str(1 << 64), "-1"])
async def test_page_tokens_that_are_not_ours(stubs: Stubs, token: str) -> None:
    """ "²" is a digit to str.isdigit but not to int, and int refuses 5,000 digits: both
    answered UNKNOWN with a raw ValueError; now INVALID_PAGE_TOKEN, on every paged list."""
    from lockgate.broker.v1 import (
        audit_pb2,
        audit_pb2_grpc,
        conversation_pb2,
        conversation_pb2_grpc,
    )

    conversations = conversation_pb2_grpc.ConversationServiceStub(stubs.channel)
    calls = [
        stubs.broker.QueryEvents(
            broker_pb2.QueryEventsRequest(pattern=">", page_token=token), timeout=10
        ),
        audit_pb2_grpc.AuditServiceStub(stubs.channel).ListAuditRecords(
            audit_pb2.ListAuditRecordsRequest(page_token=token), timeout=10
        ),
        stubs.admin.ListDeadLetters(admin_pb2.ListDeadLettersRequest(page_token=token), timeout=10),
        conversations.ListConversations(
            conversation_pb2.ListConversationsRequest(page_token=token), timeout=10
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert error_info(exc.value)[:2] == (INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


@pytest.mark.parametrize("token", ["1:" + str(1 << 64), str(1 << 64) + ":1", "-1:5", "1:2:3", "7"])
async def test_dead_letter_page_tokens_that_are_not_ours(stubs: Stubs, token: str) -> None:
    """A ``dead_ms:id`` token whose parts int() took but a 64-bit column does not (the
    store's OverflowError answered UNKNOWN), or a sign, or the wrong shape."""
    req = admin_pb2.ListDeadLettersRequest(page_token=token)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.ListDeadLetters(req, timeout=10)
    assert error_info(exc.value)[:2] == (INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


async def test_audit_pages_out_of_range(stubs: Stubs) -> None:
    from lockgate.broker.v1 import audit_pb2, audit_pb2_grpc

    audit = audit_pb2_grpc.AuditServiceStub(stubs.channel)
    # A page size beyond the cap is the cap; a time far ahead is an empty last page.
    far = timestamp_pb2.Timestamp(seconds=253402300000)
    resp = await audit.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(page_size=(1 << 32) - 1, since_time=far), timeout=10
    )
    assert (list(resp.records), resp.next_page_token) == ([], "")
    for bad in (
        timestamp_pb2.Timestamp(seconds=-1),
        timestamp_pb2.Timestamp(seconds=1 << 62),
        timestamp_pb2.Timestamp(seconds=0, nanos=-1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await audit.ListAuditRecords(
                audit_pb2.ListAuditRecordsRequest(until_time=bad), timeout=10
            )
        assert error_info(exc.value)[0] == INVALID_ARGUMENT
