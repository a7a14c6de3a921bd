"""CreateDurable on an existing durable: the same settings are a no-op, other settings are
refused with FAILED_PRECONDITION / DURABLE_MISMATCH naming the setting; a Subscribe that
binds a durable is refused only for settings it gives."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2

from lockgate.broker.v1 import admin_pb2, broker_pb2
from tests.broker.e2e_kit import Stubs, error_info, open_call, unique

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def create(name: str, pattern: str, **kw: object) -> admin_pb2.CreateDurableRequest:
    return admin_pb2.CreateDurableRequest(name=name, pattern=pattern, **kw)  # type: ignore[arg-type]


async def test_identical_settings_are_a_no_op(stubs: Stubs) -> None:
    name, pattern = unique("ds").replace(".", "-"), unique("ds")
    req = create(name, pattern, max_deliveries=3, ack_wait=duration_pb2.Duration(seconds=7))
    first = await stubs.admin.CreateDurable(req, timeout=10)
    again = await stubs.admin.CreateDurable(req, timeout=10)
    assert again.durable == first.durable
    assert (again.durable.max_deliveries, again.durable.ack_wait.seconds) == (3, 7)


@pytest.mark.parametrize(
    ("setting", "changed"),
    [
        ("pattern", {}),
        ("max_deliveries", {"max_deliveries": 4}),
        ("ack_wait", {"ack_wait": duration_pb2.Duration(seconds=9)}),
        ("max_in_flight", {"max_in_flight": 17}),
        ("endpoint_url", {"endpoint_url": "https://example.com/hook"}),
        # Unset means the broker's default, which differs from the 3 given at creation.
        ("max_deliveries", {"max_deliveries": 0}),
    ],
)
async def test_other_settings_are_refused(
    stubs: Stubs, setting: str, changed: dict[str, object]
) -> None:
    name, pattern = unique("ds").replace(".", "-"), unique("ds")
    base: dict[str, object] = {"max_deliveries": 3, "ack_wait": duration_pb2.Duration(seconds=7)}
    await stubs.admin.CreateDurable(create(name, pattern, **base), timeout=10)
    other = pattern + ".x" if setting == "pattern" else pattern
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.CreateDurable(create(name, other, **{**base, **changed}), timeout=10)
    code, reason, meta = error_info(exc.value)
    assert (code, reason, meta.get("setting")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DURABLE_MISMATCH",
        setting,
    )
    assert setting in (exc.value.details() or "")
    # Nothing changed: the durable keeps what it was created with.
    info = await stubs.admin.GetDurable(admin_pb2.GetDurableRequest(name=name), timeout=10)
    assert (info.durable.pattern, info.durable.max_deliveries) == (pattern, 3)


async def test_subscribe_binds_with_unset_settings_and_refuses_different_ones(
    stubs: Stubs,
) -> None:
    name, pattern = unique("ds").replace(".", "-"), unique("ds")
    await stubs.admin.CreateDurable(create(name, pattern, max_deliveries=3), timeout=10)
    call, _ = await open_call(stubs.broker, durable=name, pattern=pattern)  # binds as it is
    call.cancel()
    call = stubs.broker.Subscribe()
    opened = broker_pb2.SubscribeOpen(durable=name, pattern=pattern, max_deliveries=4)
    await call.write(broker_pb2.SubscribeRequest(open=opened))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(call.read(), 10)
    code, reason, meta = error_info(exc.value)
    assert (code, reason, meta.get("setting")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DURABLE_MISMATCH",
        "max_deliveries",
    )
