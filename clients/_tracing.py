"""A ``receive`` span per batch of deliveries, when the application traces with OpenTelemetry.

The client never imports OpenTelemetry itself (an agent installs it without it): only when
the application has imported ``opentelemetry.trace`` and installed a tracer provider does a
received batch get a CONSUMER span, a child of the first event's ``traceparent`` (the
publisher's span), per the OpenTelemetry messaging semantic conventions. Otherwise it costs
one dictionary lookup per batch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lockgate.broker.v1 import broker_pb2

__all__ = ["receive_span"]


def receive_span(deliveries: Sequence[broker_pb2.Delivery], consumer: str) -> None:
    """Records the ``receive SUBJECT`` span of one batch (``consumer``: the durable, or
    empty for an ephemeral subscription)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None or isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    first = deliveries[0]
    attrs = first.event.attributes
    parent = None
    if "traceparent" in attrs:
        carrier = {"traceparent": attrs["traceparent"].ce_string}
        if "tracestate" in attrs:
            carrier["tracestate"] = attrs["tracestate"].ce_string
        parent = TraceContextTextMapPropagator().extract(carrier)
    attributes: dict[str, str | int] = {
        "messaging.system": "lockgate",
        "messaging.operation.type": "receive",
        "messaging.destination.name": first.subject,
        "messaging.batch.message_count": len(deliveries),
    }
    if consumer:
        attributes["messaging.consumer.group.name"] = consumer
    span = trace.get_tracer("lockgate.client").start_span(
        f"receive {first.subject}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
    )
    span.end()
