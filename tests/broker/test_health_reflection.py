"""Health and reflection are always on, so `grpcurl -plaintext HOST:PORT list` works."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lockgate.broker.testing import RunningBroker

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_health_serving(broker: RunningBroker) -> None:
    async with grpc.aio.insecure_channel(broker.target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "broker.v1.BrokerService", "broker.v1.PolicyService"):
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_services(broker: RunningBroker) -> None:
    async with grpc.aio.insecure_channel(broker.target) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def requests():  # type: ignore[no-untyped-def]
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = set()
        async for resp in stub.ServerReflectionInfo(requests()):
            names |= {s.name for s in resp.list_services_response.service}
        assert {
            "broker.v1.BrokerService",
            "broker.v1.AdminService",
            "broker.v1.PolicyService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names


async def test_terminate_drains_with_exit_code_zero(tmp_path: object) -> None:
    from lockgate.broker.testing import run_broker

    async with run_broker() as b:
        assert await b.terminate() == 0
        log = b"".join(b.output).decode()
        assert "draining" in log and "stopped" in log


async def test_terminate_ends_idle_streams_at_once() -> None:
    """SIGTERM tells connected publishers and subscribers to go elsewhere right away,
    instead of holding them until the grace period ends."""
    import asyncio
    import time

    from lockgate.broker.testing import run_broker
    from lockgate.broker.v1 import broker_pb2, broker_pb2_grpc
    from tests.broker.e2e_kit import error_info, event

    async with run_broker() as b, grpc.aio.insecure_channel(b.target) as ch:
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        pub = stub.Publish()
        await pub.write(broker_pb2.PublishRequest(subject="d.x", events=[event()], batch_id=1))
        assert (await pub.read()).batch_id == 1
        sub = stub.Subscribe()
        await sub.write(broker_pb2.SubscribeRequest(open=broker_pb2.SubscribeOpen(pattern=">")))
        await sub.read()
        started = time.monotonic()
        b.proc.send_signal(__import__("signal").SIGTERM)
        for call in (pub, sub):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await asyncio.wait_for(call.read(), 5)
            assert error_info(exc.value)[:2] == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")
        assert await asyncio.wait_for(b.proc.wait(), 5) == 0
        assert time.monotonic() - started < 5
