"""OpenTelemetry: spans for publish and deliver, metrics for rates, latencies, depths and
policy decisions. Instrumentation is per batch, never per event, so it costs a few
microseconds per frame. With ``telemetry = "off"`` (default) the API's no-op providers are
used; ``"console"`` installs the SDK with console exporters (spans as they end, metrics every
``telemetry_interval``). Trace context travels in the event's ``traceparent`` attribute
(CloudEvents distributed-tracing extension): a publish span continues the publisher's trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lockgate.broker.errors import InvalidArgument
from lockgate.broker.v1 import cloudevent_pb2

__all__ = ["Span", "Telemetry", "setup_telemetry"]

Span = trace.Span

_PROPAGATOR = TraceContextTextMapPropagator()


def setup_telemetry(mode: str, interval: float = 60.0) -> None:
    """Installs global providers for ``mode`` ("off" or "console")."""
    if mode == "off":
        return
    if mode != "console":
        raise InvalidArgument(
            f"telemetry = {mode!r} is not one of off, console",
            reason="INVALID_CONFIG",
            hint="point an OpenTelemetry collector at the console output, or use off",
        )
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({"service.name": "lockgate"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tp)
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(), export_interval_millis=int(interval * 1000)
    )
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def _parent(event: cloudevent_pb2.CloudEvent | None) -> Context | None:
    if event is None or "traceparent" not in event.attributes:
        return None
    carrier = {"traceparent": event.attributes["traceparent"].ce_string}
    if "tracestate" in event.attributes:
        carrier["tracestate"] = event.attributes["tracestate"].ce_string
    return _PROPAGATOR.extract(carrier)


class Telemetry:
    """The broker's instruments, created once (after :func:`setup_telemetry`)."""

    def __init__(self) -> None:
        self.tracer = trace.get_tracer("lockgate.broker")
        meter = metrics.get_meter("lockgate.broker")
        self.published = meter.create_counter(
            "lockgate.events.published", unit="{event}", description="events stored"
        )
        self.rejected = meter.create_counter(
            "lockgate.events.rejected", unit="{event}", description="events refused, by reason"
        )
        self.delivered = meter.create_counter(
            "lockgate.events.delivered", unit="{event}", description="events sent to subscribers"
        )
        self.publish_duration = meter.create_histogram(
            "lockgate.publish.duration", unit="s", description="batch admission to store ack"
        )
        self.decisions = meter.create_counter(
            "lockgate.policy.decisions", unit="{decision}", description="decisions, by effect"
        )
        self.slow_consumers = meter.create_counter(
            "lockgate.consumers.slow", unit="{subscription}", description="cut off, too slow"
        )
        self.dead_lettered = meter.create_counter(
            "lockgate.events.dead_lettered", unit="{event}", description="moved to $dlq"
        )
        self.stale_acks = meter.create_counter(
            "lockgate.acks.stale", unit="{ack}", description="acks for ids no longer pending"
        )

    def observe_depths(self, depths: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Registers a gauge of queue depths (``(name, depth)`` pairs, e.g. durable pending)."""

        def cb(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [metrics.Observation(v, {"lockgate.queue": k}) for k, v in depths()]

        metrics.get_meter("lockgate.broker").create_observable_gauge(
            "lockgate.queue.depth", callbacks=[cb], unit="{event}"
        )

    def observe_history_lag(self, lag: Callable[[], int | None]) -> None:
        """Registers the message logger's lag gauge: log batches stored in JetStream and not
        yet in PostgreSQL (``lag`` returns None before its first measurement)."""

        def cb(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            value = lag()
            return [] if value is None else [metrics.Observation(value)]

        metrics.get_meter("lockgate.broker").create_observable_gauge(
            "lockgate.history.lag",
            callbacks=[cb],
            unit="{batch}",
            description="batches stored in the log and not yet in the PostgreSQL history",
        )

    def start_publish(
        self, subject: str, count: int, first: cloudevent_pb2.CloudEvent | None
    ) -> Span:
        """A span from admission to the store's ack; ended by :meth:`end_publish`."""
        return self.tracer.start_span(
            f"publish {subject}",
            context=_parent(first),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "lockgate",
                "messaging.operation.type": "publish",
                "messaging.destination.name": subject,
                "messaging.batch.message_count": count,
            },
        )

    @staticmethod
    def end_publish(span: Span | None, error: BaseException | None) -> None:
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
        span.end()

    @contextmanager
    def deliver_span(self, pattern: str, subscription: str) -> Iterator[trace.Span]:
        with self.tracer.start_as_current_span(
            f"deliver {pattern}",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "lockgate",
                "messaging.operation.type": "deliver",
                "messaging.destination.name": pattern,
                "messaging.consumer.group.name": subscription,
            },
        ) as span:
            yield span
