"""The telemetry settings' refusals, each one sentence with a hint, before anything starts
(the exporters themselves are tested against real receivers: test_e2e_metrics, test_e2e_otlp)."""

from __future__ import annotations

import pytest

from lockgate.broker.errors import InvalidArgument
from lockgate.broker.telemetry_export import TelemetrySettings, setup_telemetry


@pytest.mark.parametrize(
    ("settings", "sentence"),
    [
        (TelemetrySettings(mode="loud"), "telemetry = 'loud' is not one of off, console"),
        (
            TelemetrySettings(otlp_endpoint="http://127.0.0.1:4317", otlp_protocol="thrift"),
            "otlp_protocol = 'thrift' is not one of grpc, http",
        ),
        (
            TelemetrySettings(trace_sample_ratio=1.5),
            "trace_sample_ratio = 1.5 is not between 0 and 1",
        ),
        (
            TelemetrySettings(metrics_listen="0.0.0.0:9464"),
            "metrics_listen = '0.0.0.0:9464' is not a loopback HOST:PORT",
        ),
        (
            TelemetrySettings(metrics_listen="127.0.0.1"),
            "metrics_listen = '127.0.0.1' is not a loopback HOST:PORT",
        ),
    ],
)
def test_bad_settings_are_refused(settings: TelemetrySettings, sentence: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        setup_telemetry(settings)
    assert str(err.value).startswith(sentence + " (hint: ")
    assert err.value.reason == "INVALID_CONFIG"
    assert err.value.hint


def test_off_installs_nothing() -> None:
    out = setup_telemetry(TelemetrySettings())
    assert out.metrics_address is None
    out.close()
