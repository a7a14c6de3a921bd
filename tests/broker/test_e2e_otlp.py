"""OTLP export of a real ``lockgate serve`` to a real OTLP receiver started by the test (the
collector's TraceService and MetricsService from ``opentelemetry-proto``, over gRPC; the
same messages POSTed as http/protobuf): the publish span of a batch carries the messaging
semantic conventions and the event count, and continues the publisher's trace from the
first event's ``traceparent``. Metrics arrive on the same endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2_grpc
from tests.broker.e2e_kit import event, publish_batches, unique
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PUBLISHER_SPAN = "00f067aa0ba902b7"


class Receiver:
    """What the collector received: spans, and the names of the metrics."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.metrics: set[str] = set()

    def take_traces(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)

    def take_metrics(self, req: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                self.metrics.update(m.name for m in sm.metrics)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, r: Receiver) -> None:
        self.r = r

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.r.take_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, r: Receiver) -> None:
        self.r = r

    async def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: object
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self.r.take_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


async def _grpc_receiver(r: Receiver) -> tuple[str, Callable[[], object]]:
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(r), server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(r), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return f"http://127.0.0.1:{port}", lambda: server.stop(0)


async def _http_receiver(r: Receiver) -> tuple[str, Callable[[], object]]:
    async def traces(request: web.Request) -> web.Response:
        r.take_traces(trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(
            body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def metrics(request: web.Request) -> web.Response:
        r.take_metrics(
            metrics_service_pb2.ExportMetricsServiceRequest.FromString(await request.read())
        )
        return web.Response(
            body=metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}", runner.cleanup


@pytest.fixture
def quick_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker's span batches and metric readings leave within a fraction of a second."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")


@pytest.fixture(params=["grpc", "http"])
async def receiver(
    request: pytest.FixtureRequest, quick_export: None
) -> AsyncIterator[tuple[str, str, Receiver]]:
    r = Receiver()
    protocol = str(request.param)
    start = _grpc_receiver if protocol == "grpc" else _http_receiver
    endpoint, stop = await start(r)
    yield protocol, endpoint, r
    result = stop()
    if asyncio.iscoroutine(result):
        await result


async def test_publish_span_continues_the_publishers_trace(
    receiver: tuple[str, str, Receiver],
) -> None:
    protocol, endpoint, r = receiver
    args = ["--otlp-endpoint", endpoint, "--otlp-protocol", protocol]
    args += ["--telemetry-interval", "0.2s"]
    async with run_broker(extra_args=args) as b:
        async with grpc.aio.insecure_channel(b.target) as ch:
            stub = broker_pb2_grpc.BrokerServiceStub(ch)
            subject = unique("otlp")
            events = [event(str(i)) for i in range(3)]
            for ev in events:
                ev.attributes["traceparent"].ce_string = f"00-{TRACE_ID}-{PUBLISHER_SPAN}-01"
            (resp,) = await publish_batches(stub, subject, [events])
            assert len(resp.ids) == 3

        def published() -> trace_pb2.Span | None:
            return next((s for s in r.spans if s.name == f"publish {subject}"), None)

        span = await eventually(published)
        assert span.trace_id.hex() == TRACE_ID
        assert span.parent_span_id.hex() == PUBLISHER_SPAN
        assert span.kind == trace_pb2.Span.SPAN_KIND_PRODUCER
        attrs = {a.key: a.value for a in span.attributes}
        assert attrs["messaging.system"].string_value == "lockgate"
        assert attrs["messaging.operation.type"].string_value == "publish"
        assert attrs["messaging.destination.name"].string_value == subject
        assert attrs["messaging.batch.message_count"].int_value == 3
        await eventually(lambda: "lockgate.events.published" in r.metrics)
