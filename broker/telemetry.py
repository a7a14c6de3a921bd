"""OpenTelemetry: spans for publish and deliver, metrics for rates, latencies, depths and
policy decisions. Instrumentation is per batch, never per event, so it costs a few
microseconds per frame. :mod:`broker.telemetry_export` installs the SDK providers the
settings ask for (console, Prometheus ``/metrics``, OTLP); otherwise the API's no-op providers
serve these instruments. Trace context travels in the event's ``traceparent`` attribute
(CloudEvents distributed-tracing extension): a publish span continues the publisher's trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lockgate.broker.v1 import cloudevent_pb2

__all__ = ["RULE_LABELS", "Span", "Telemetry"]

Span = trace.Span

_PROPAGATOR = TraceContextTextMapPropagator()

RULE_LABELS = 200
"""Distinct ``rule`` label values of the decisions metric per process; decisions by rules
met after that count under ``rule="other"``. Rules come from the operator's and the orgs'
policy files (``file:line``, ``org/file:line``) and an edit moves a line, so their number
grows with edits and orgs: the cap keeps a scrape's size bounded whatever the tenants write."""


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
            "lockgate.policy.decisions",
            unit="{decision}",
            description="events decided, by effect and deciding rule",
        )
        self._decision_labels: dict[tuple[str, str], dict[str, str]] = {}
        self._rules: set[str] = set()
        self.slow_consumers = meter.create_counter(
            "lockgate.consumers.slow", unit="{subscription}", description="cut off, too slow"
        )
        self.dead_lettered = meter.create_counter(
            "lockgate.events.dead_lettered", unit="{event}", description="moved to $dlq"
        )
        self.stale_acks = meter.create_counter(
            "lockgate.acks.stale", unit="{ack}", description="acks for ids no longer pending"
        )

    def count_decisions(self, effects: Mapping[tuple[str, str], int]) -> None:
        """Counts one batch's decisions (``{(effect, rule): events}``, rule ``""`` when no
        rule decided: label ``none``), with at most :data:`RULE_LABELS` rule values."""
        for key, n in effects.items():
            labels = self._decision_labels.get(key)
            if labels is None:
                labels = {"effect": key[0], "rule": self._rule_label(key[1])}
                if len(self._decision_labels) < 4 * RULE_LABELS:
                    self._decision_labels[key] = labels
            self.decisions.add(n, labels)

    def _rule_label(self, rule: str) -> str:
        if not rule:
            return "none"
        if rule in self._rules:
            return rule
        if len(self._rules) < RULE_LABELS:
            self._rules.add(rule)
            return rule
        return "other"

    def observe_depths(self, depths: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Registers a gauge of queue depths (``(name, depth)`` pairs, e.g. durable pending)."""

        def cb(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [metrics.Observation(v, {"lockgate.queue": k}) for k, v in depths()]

        metrics.get_meter("lockgate.broker").create_observable_gauge(
            "lockgate.queue.depth", callbacks=[cb], unit="{event}"
        )

    def observe_durable_lag(self, lags: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Registers a gauge of the durables' lag behind the log's head (``(name, batches)``)."""

        def cb(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [metrics.Observation(v, {"lockgate.queue": k}) for k, v in lags()]

        metrics.get_meter("lockgate.broker").create_observable_gauge(
            "lockgate.durable.lag",
            callbacks=[cb],
            unit="{batch}",
            description="log batches a durable has not read yet",
        )

    def observe_subscriptions(self, counts: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Registers a gauge of live subscriptions by kind (``(kind, count)`` pairs)."""

        def cb(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [metrics.Observation(n, {"kind": kind}) for kind, n in counts()]

        metrics.get_meter("lockgate.broker").create_observable_gauge(
            "lockgate.subscriptions",
            callbacks=[cb],
            unit="{subscription}",
            description="live ephemeral subscriptions and active durables",
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
