"""Floors and caps of the delivery settings and of an event's id and source, over gRPC
against a real broker: each out-of-range value is refused with INVALID_ARGUMENT and a reason
naming it, and nothing is created, changed or stored (issue 8, resource exhaustion)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2

from lockgate.broker.bounds import MAX_EVENT_ID, MAX_EVENT_SOURCE
from lockgate.broker.v1 import admin_pb2, broker_pb2
from tests.broker.e2e_kit import (
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


def _ms(ms: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(ms)
    return d


# (setting named in the error, CreateDurable / SubscribeOpen fields)
BAD_SETTINGS: list[tuple[str, str, dict[str, object]]] = [
    ("in-flight-huge", "max_in_flight", {"max_in_flight": 2**32 - 1}),
    ("in-flight-over-cap", "max_in_flight", {"max_in_flight": 100_001}),
    ("ack-wait-1ms", "ack_wait", {"ack_wait": _ms(1)}),
    ("ack-wait-negative", "ack_wait", {"ack_wait": _ms(-30_000)}),
    ("ack-wait-over-12h", "ack_wait", {"ack_wait": _ms(12 * 3600 * 1000 + 1000)}),
    ("deliveries-huge", "max_deliveries", {"max_deliveries": 2**32 - 1}),
    ("deliveries-over-cap", "max_deliveries", {"max_deliveries": 1001}),
]
IDS = [b[0] for b in BAD_SETTINGS]


async def _no_durable(stubs: Stubs, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.GetDurable(admin_pb2.GetDurableRequest(name=name), timeout=10)
    assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_DURABLE")


def _assert_refused(err: grpc.aio.AioRpcError, setting: str) -> None:
    code, reason, meta = error_info(err)
    assert (code, reason, meta.get("setting")) == (INVALID_ARGUMENT, "INVALID_SETTING", setting)
    assert meta.get("min") and meta.get("max") and meta.get("hint")


@pytest.mark.parametrize(("label", "setting", "fields"), BAD_SETTINGS, ids=IDS)
async def test_create_durable_refuses_out_of_range_settings(
    stubs: Stubs, label: str, setting: str, fields: dict[str, object]
) -> None:
    name = f"bound-{uuid.uuid4().hex[:8]}"
    req = admin_pb2.CreateDurableRequest(name=name, pattern=unique("bound"), **fields)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.CreateDurable(req, timeout=10)
    _assert_refused(exc.value, setting)
    await _no_durable(stubs, name)


@pytest.mark.parametrize(("label", "setting", "fields"), BAD_SETTINGS, ids=IDS)
async def test_subscribe_durable_refuses_out_of_range_settings(
    stubs: Stubs, label: str, setting: str, fields: dict[str, object]
) -> None:
    name = f"bound-{uuid.uuid4().hex[:8]}"
    call = stubs.broker.Subscribe()
    opened = broker_pb2.SubscribeOpen(pattern=unique("bound"), durable=name, **fields)  # type: ignore[arg-type]
    await call.write(broker_pb2.SubscribeRequest(open=opened))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(call.read(), 10)
    _assert_refused(exc.value, setting)
    await _no_durable(stubs, name)


@pytest.mark.parametrize("max_in_flight", [2**32 - 1, 100_001])
async def test_ephemeral_subscribe_refuses_huge_max_in_flight(
    stubs: Stubs, max_in_flight: int
) -> None:
    subject = unique("bound")
    call = stubs.broker.Subscribe()
    opened = broker_pb2.SubscribeOpen(pattern=subject, max_in_flight=max_in_flight)
    await call.write(broker_pb2.SubscribeRequest(open=opened))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(call.read(), 10)
    _assert_refused(exc.value, "max_in_flight")
    # The cap itself is accepted, and delivers.
    ok = await subscribe(stubs.broker, pattern=subject, max_in_flight=100_000)
    [resp] = await publish_batches(stubs.broker, subject, [[event()]])
    assert [d.id for d in await ok.collect(1, 10)] == list(resp.ids)
    await ok.close()


async def test_bounds_are_inclusive(stubs: Stubs) -> None:
    name = f"bound-{uuid.uuid4().hex[:8]}"
    req = admin_pb2.CreateDurableRequest(
        name=name,
        pattern=unique("bound"),
        max_in_flight=100_000,
        ack_wait=_ms(100),
        max_deliveries=1000,
    )
    info = (await stubs.admin.CreateDurable(req, timeout=10)).durable
    assert (info.max_in_flight, info.ack_wait.ToMilliseconds(), info.max_deliveries) == (
        100_000,
        100,
        1000,
    )
    await stubs.admin.DeleteDurable(admin_pb2.DeleteDurableRequest(name=name), timeout=10)


async def _pending(stubs: Stubs, name: str) -> list[tuple[int, int]]:
    resp = await stubs.admin.GetDurable(admin_pb2.GetDurableRequest(name=name), timeout=10)
    return [(p.id, p.attempt) for p in resp.pending]


@pytest.mark.parametrize("delay_ms", [-30_000, 12 * 3600 * 1000 + 1000])
async def test_acknowledge_refuses_out_of_range_nack_delay(stubs: Stubs, delay_ms: int) -> None:
    subject = unique("bound")
    name = f"bound-{uuid.uuid4().hex[:8]}"
    sub = await subscribe(stubs.broker, pattern=subject, durable=name)
    [resp] = await publish_batches(stubs.broker, subject, [[event(), event()]])
    ids = list(resp.ids)
    assert [d.id for d in await sub.collect(2, 10)] == ids
    before = await _pending(stubs, name)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.Acknowledge(
            broker_pb2.AcknowledgeRequest(
                durable=name, ack_ids=[ids[0]], nack_ids=[ids[1]], nack_delay=_ms(delay_ms)
            ),
            timeout=10,
        )
    _assert_refused(exc.value, "nack_delay")
    assert await _pending(stubs, name) == before  # neither the ack nor the nack happened
    await sub.close()


async def test_stream_nack_with_negative_delay_ends_the_stream(stubs: Stubs) -> None:
    subject = unique("bound")
    name = f"bound-{uuid.uuid4().hex[:8]}"
    sub = await subscribe(stubs.broker, pattern=subject, durable=name)
    [resp] = await publish_batches(stubs.broker, subject, [[event()]])
    assert [d.id for d in await sub.collect(1, 10)] == list(resp.ids)
    await sub.nack(list(resp.ids), -30.0)
    err = await sub.ended()
    assert err is not None
    _assert_refused(err, "nack_delay")
    # Not redelivered: still the first attempt, pending until ack_wait.
    assert await _pending(stubs, name) == [(resp.ids[0], 1)]


@pytest.mark.parametrize(
    ("attribute", "limit"), [("id", MAX_EVENT_ID), ("source", MAX_EVENT_SOURCE)]
)
async def test_publish_refuses_oversize_id_and_source(
    stubs: Stubs, attribute: str, limit: int
) -> None:
    subject = unique("bound")
    fine = event(**{attribute: "x" * limit})  # type: ignore[arg-type]
    big = event(**{attribute: "y" * (limit + 1)})  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject=subject, event=big), timeout=10
        )
    code, reason, meta = error_info(exc.value)
    assert (code, reason, meta.get("attribute")) == (INVALID_ARGUMENT, "INVALID_EVENT", attribute)
    assert meta.get("limit") == str(limit)
    [resp] = await publish_batches(stubs.broker, subject, [[big, fine]])
    assert resp.ids[0] == 0 and resp.ids[1] != 0
    assert [(e.index, e.reason) for e in resp.errors] == [(0, "INVALID_EVENT")]
    stored = await eventually(lambda: _stored(stubs, subject, 1))
    assert [s.id for s in stored] == [resp.ids[1]]


async def _stored(stubs: Stubs, subject: str, n: int) -> list[broker_pb2.StoredEvent] | None:
    got = await query_all(stubs.broker, subject)
    return got if len(got) == n else None
