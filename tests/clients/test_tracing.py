"""The Python client's ``receive`` span: in an application that traces with OpenTelemetry
(its own process, so its tracer provider is its own), a subscriber's received batch is a
CONSUMER span that continues the publisher's trace from the event's ``traceparent``; an
application that does not trace gets no OpenTelemetry import from the client (test_api)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lockgate.broker.testing import run_broker

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

APP = """
import asyncio, json, sys
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from lockgate.clients import Client

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)

async def main(target):
    async with Client(target) as c:
        async with c.subscribe("traced.x") as sub:
            with trace.get_tracer("app").start_as_current_span("send") as span:
                carrier = {}
                inject(carrier)
                await c.publish("traced.x", "hi", attributes=carrier)
            async for msg in sub:
                break
    ctx = span.get_span_context()
    out = [
        {"name": s.name, "kind": s.kind.name, "trace": s.context.trace_id,
         "parent": s.parent.span_id if s.parent else None, "attrs": dict(s.attributes)}
        for s in spans.get_finished_spans() if s.name.startswith("receive")
    ]
    print(json.dumps({"trace": ctx.trace_id, "span": ctx.span_id, "receive": out}))

asyncio.run(main(sys.argv[1]))
"""


async def test_a_received_batch_continues_the_publishers_trace() -> None:
    async with run_broker() as b:
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", APP, b.target],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    (receive,) = got["receive"]
    assert receive["name"] == "receive traced.x" and receive["kind"] == "CONSUMER"
    assert receive["trace"] == got["trace"] and receive["parent"] == got["span"]
    assert receive["attrs"]["messaging.system"] == "lockgate"
    assert receive["attrs"]["messaging.operation.type"] == "receive"
    assert receive["attrs"]["messaging.batch.message_count"] == 1
