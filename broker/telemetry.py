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

__all__ = [
    "ORG_LABELS",
    "RULES_PER_ORG",
    "RULE_LABELS",
    "CappedLabel",
    "OrgTotals",
    "Span",
    "Telemetry",
]

Span = trace.Span

_PROPAGATOR = TraceContextTextMapPropagator()

RULE_LABELS = 200
"""Distinct ``rule`` label values of the decisions metric per process; decisions by rules
met after that count under ``rule="other"``. Rules come from the operator's and the orgs'
policy files (``file:line``, ``org/file:line``) and an edit moves a line, so their number
grows with edits and orgs: the cap keeps a scrape's size bounded whatever the tenants write."""

RULES_PER_ORG = 20
"""Of those, the most one org's rules (``org/file:line``) take: past it that org's further
rules read ``other``, so one tenant editing its policies cannot use up the labels of the
other orgs and of the operator's rules."""

ORG_LABELS = 100
"""Distinct ``org`` label values per process (published events, gRPC connections); orgs met
after that count under ``org="other"``. Orgs come from keys and tokens, which a deployment
with many tenants has thousands of: the first hundred seen get a series of their own."""

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
"""Seconds: the SDK's default boundaries are for milliseconds (0 to 10,000)."""


class CappedLabel:
    """Label values that keep their own series until ``cap`` distinct ones were seen; later
    ones read ``other`` (and ``""`` reads ``none``). A value keeps its label for life. With
    ``per_org``, values of the form ``org/...`` get at most that many per org."""

    __slots__ = ("_orgs", "_seen", "cap", "per_org")

    def __init__(self, cap: int, per_org: int | None = None) -> None:
        self.cap = cap
        self.per_org = per_org
        self._seen: set[str] = set()
        self._orgs: dict[str, int] = {}

    def __call__(self, value: str) -> str:
        if not value:
            return "none"
        if value in self._seen:
            return value
        if len(self._seen) >= self.cap:
            return "other"
        org, slash, _ = value.partition("/")
        if self.per_org is not None and slash:
            if self._orgs.get(org, 0) >= self.per_org:
                return "other"
            self._orgs[org] = self._orgs.get(org, 0) + 1
        self._seen.add(value)
        return value


def _parent(event: cloudevent_pb2.CloudEvent | None) -> Context | None:
    if event is None or "traceparent" not in event.attributes:
        return None
    carrier = {"traceparent": event.attributes["traceparent"].ce_string}
    if "tracestate" in event.attributes:
        carrier["tracestate"] = event.attributes["tracestate"].ce_string
    return _PROPAGATOR.extract(carrier)


class OrgTotals:
    """Events published, delivered and rejected per org since the start, for GetStatus (an
    org-admin sees its own org's figures, the metrics carry no unbounded org label)."""

    __slots__ = ("_orgs",)

    def __init__(self) -> None:
        self._orgs: dict[str, list[int]] = {}

    def add(self, org: str, kind: int, n: int) -> None:
        """``kind``: 0 published, 1 delivered, 2 rejected."""
        row = self._orgs.get(org)
        if row is None:
            row = self._orgs[org] = [0, 0, 0]
        row[kind] += n

    def of(self, org: str | None) -> tuple[int, int, int]:
        """One org's ``(published, delivered, rejected)``; None: every org's."""
        rows = list(self._orgs.values()) if org is None else [self._orgs.get(org, [0, 0, 0])]
        return (sum(r[0] for r in rows), sum(r[1] for r in rows), sum(r[2] for r in rows))


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
            "lockgate.publish.duration",
            unit="s",
            description="batch admission to store ack",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.delivery_latency = meter.create_histogram(
            "lockgate.delivery.latency",
            unit="s",
            description="from a batch's admission (its first id's time) to its send, by kind",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.org_label = CappedLabel(ORG_LABELS)
        self.totals = OrgTotals()
        self._org_labels: dict[str, dict[str, str]] = {}
        self.decisions = meter.create_counter(
            "lockgate.policy.decisions",
            unit="{decision}",
            description="events decided, by effect and deciding rule",
        )
        self._decision_labels: dict[tuple[str, str], dict[str, str]] = {}
        self._rule_label = CappedLabel(RULE_LABELS, RULES_PER_ORG)
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

    def count_published(self, org: str, count: int) -> None:
        """Counts one stored batch of ``org`` (at most :data:`ORG_LABELS` org values)."""
        labels = self._org_labels.get(org)
        if labels is None:
            labels = {"org": self.org_label(org)}
            if len(self._org_labels) < 4 * ORG_LABELS:
                self._org_labels[org] = labels
        self.published.add(count, labels)
        self.totals.add(org, 0, count)

    def observe_grpc_connections(self, by_org: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Registers the gauge of gRPC connections holding open streams, per org (``(org,
        connections)`` pairs; orgs past :data:`ORG_LABELS` are summed as ``other``)."""

        def cb(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            sums: dict[str, int] = {}
            for org, n in by_org():
                label = self.org_label(org)
                sums[label] = sums.get(label, 0) + n
            return [
                metrics.Observation(n, {"surface": "grpc", "org": org}) for org, n in sums.items()
            ]

        metrics.get_meter("lockgate.broker").create_observable_gauge(
            "lockgate.connections",
            callbacks=[cb],
            unit="{connection}",
            description="gRPC connections holding open streams (Publish, Subscribe, "
            "RequestStream), per org",
        )

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
