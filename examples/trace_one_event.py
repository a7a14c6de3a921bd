"""See the trace of one event: a tiny OTLP receiver (the collector's TraceService from
``opentelemetry-proto``) prints the spans a ``lockgate serve --otlp-endpoint`` sends it for
one event published with a W3C ``traceparent``. In production, point ``--otlp-endpoint`` at
your OpenTelemetry collector, Jaeger or Tempo instead of this receiver.

Run: python examples/trace_one_event.py (it starts its own broker and receiver).
"""

from __future__ import annotations

import asyncio
import os

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from lockgate.broker.testing import run_broker
from lockgate.clients import Client

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"  # the publisher's own trace
PUBLISHER_SPAN = "00f067aa0ba902b7"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def main() -> None:
    receiver = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export spans every 0.1 s, not 5 s
    args = ["--otlp-endpoint", f"http://127.0.0.1:{port}"]
    async with run_broker(extra_args=args) as broker, Client(broker.target) as c:
        async with c.subscribe("demo.traced") as sub:
            await c.publish(
                "demo.traced",
                {"step": 1},
                attributes={"traceparent": f"00-{TRACE_ID}-{PUBLISHER_SPAN}-01"},
            )
            msg = await anext(sub)
        for _ in range(100):  # wait for the export, at most 10 s
            ours = [s for s in receiver.spans if s.trace_id.hex() == TRACE_ID]
            if ours:
                break
            await asyncio.sleep(0.1)
    await server.stop(0)
    print(f"subscriber got {msg.data} with traceparent {msg.attributes['traceparent']}")
    for span in ours:
        attrs = {a.key: a.value for a in span.attributes}
        count = attrs["messaging.batch.message_count"].int_value
        print(
            f"span {span.name!r} in trace {span.trace_id.hex()}, "
            f"child of {span.parent_span_id.hex()}, {count} event(s)"
        )


if __name__ == "__main__":
    asyncio.run(main())
