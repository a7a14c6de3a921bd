"""Where the broker's spans and metrics go: the console, a Prometheus ``/metrics`` listener,
an OTLP collector (gRPC or HTTP). :mod:`broker.telemetry` holds the instruments; this module
installs the OpenTelemetry SDK providers behind them once per process, from the settings.

The Prometheus listener is plain HTTP with no authentication, so it binds loopback addresses
only: a scraper on another host reaches it through a proxy or an agent on the node.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace

from lockgate.broker.errors import InvalidArgument

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["TelemetryExport", "TelemetrySettings", "prometheus_text", "setup_telemetry"]

log = logging.getLogger("lockgate.telemetry")

_MODES = ("off", "console")
_PROTOCOLS = ("grpc", "http")


@dataclass(frozen=True)
class TelemetrySettings:
    """The telemetry settings of :class:`~broker.config.Config`."""

    mode: str = "off"
    interval: float = 60.0
    metrics_listen: str = ""
    otlp_endpoint: str = ""
    otlp_protocol: str = "grpc"
    trace_sample_ratio: float = 1.0
    prometheus: bool = False
    """Collect for :func:`prometheus_text` (the HTTP gateway's ``/metrics``) without a
    listener of its own; ``metrics_listen`` implies it."""


@dataclass
class TelemetryExport:
    """The installed exporters; :meth:`close` flushes and stops them."""

    metrics_address: tuple[str, int] | None = None
    _server: WSGIServer | None = None
    _thread: threading.Thread | None = None
    _closers: list[object] = field(default_factory=list)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for provider in self._closers:
            shutdown = getattr(provider, "shutdown", None)
            if shutdown is not None:
                shutdown()


def _bad(text: str, hint: str) -> InvalidArgument:
    return InvalidArgument(text, reason="INVALID_CONFIG", hint=hint)


def _check(s: TelemetrySettings) -> None:
    if s.mode not in _MODES:
        raise _bad(
            f"telemetry = {s.mode!r} is not one of off, console",
            "set otlp_endpoint to export to an OpenTelemetry collector, or use off",
        )
    if s.otlp_protocol not in _PROTOCOLS:
        raise _bad(
            f"otlp_protocol = {s.otlp_protocol!r} is not one of grpc, http",
            "grpc (port 4317) or http (port 4318, http/protobuf)",
        )
    if not 0.0 <= s.trace_sample_ratio <= 1.0:
        raise _bad(
            f"trace_sample_ratio = {s.trace_sample_ratio} is not between 0 and 1",
            "0.01 samples one trace in a hundred",
        )
    if s.metrics_listen:
        host, _, port = s.metrics_listen.rpartition(":")
        if not port.isdigit() or not _loopback(host.strip("[]")):
            raise _bad(
                f"metrics_listen = {s.metrics_listen!r} is not a loopback HOST:PORT",
                "/metrics has no authentication: listen on 127.0.0.1:9464 and let a "
                "proxy or agent on this host forward it",
            )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _otlp(s: TelemetrySettings) -> tuple[SpanExporter, MetricReader]:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    interval = int(s.interval * 1000)
    if s.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = s.otlp_endpoint.startswith("http://")
        spans: SpanExporter = OTLPSpanExporter(endpoint=s.otlp_endpoint, insecure=insecure)
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=s.otlp_endpoint, insecure=insecure),
            export_interval_millis=interval,
        )
        return spans, reader
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    base = s.otlp_endpoint.rstrip("/")
    return HTTPSpanExporter(endpoint=base + "/v1/traces"), PeriodicExportingMetricReader(
        HTTPMetricExporter(endpoint=base + "/v1/metrics"), export_interval_millis=interval
    )


def setup_telemetry(s: TelemetrySettings) -> TelemetryExport:
    """Installs the global providers the settings ask for (none: the API's no-ops stay)."""
    _check(s)
    out = TelemetryExport()
    if s.mode == "off" and not s.metrics_listen and not s.otlp_endpoint and not s.prometheus:
        return out
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create({"service.name": "lockgate"})
    readers: list[MetricReader] = []
    span_exporters: list[SpanExporter] = []
    if s.mode == "console":
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        span_exporters.append(ConsoleSpanExporter())
        readers.append(
            PeriodicExportingMetricReader(
                ConsoleMetricExporter(), export_interval_millis=int(s.interval * 1000)
            )
        )
    if s.otlp_endpoint:
        spans, reader = _otlp(s)
        span_exporters.append(spans)
        readers.append(reader)
    if s.metrics_listen or s.prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())  # collected into prometheus_client's REGISTRY
    if s.metrics_listen:
        from prometheus_client import start_http_server

        host, _, port = s.metrics_listen.rpartition(":")
        server, thread = start_http_server(int(port), host.strip("[]"))
        out._server, out._thread = server, thread
        out.metrics_address = (host.strip("[]"), server.server_port)
    if span_exporters:
        # A parent's decision wins, so a publisher's sampled trace stays whole.
        tp = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(s.trace_sample_ratio))
        )
        for exporter in span_exporters:
            tp.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(tp)
        out._closers.append(tp)
    mp = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(mp)
    out._closers.append(mp)
    return out


def prometheus_text() -> tuple[bytes, str]:
    """The process's metrics in the Prometheus text format and its content type (what the
    ``metrics_listen`` listener serves). Blocking: the gauges' callbacks run here, so call it
    off the event loop, as that listener's threads do."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
