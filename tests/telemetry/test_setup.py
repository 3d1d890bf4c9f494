"""The SDK set up from ``OTEL_*`` variables (issue #13): nothing asked, nothing set; bad
settings refused with the reason before any provider is installed. (Settings that do install
providers are tested on the demo's own process: ``test_demo_telemetry.py``.)"""

from __future__ import annotations

import pytest
from opentelemetry import trace

from mcp_sessions.telemetry.setup import TelemetryConfigError, configure_from_env


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": " , none"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_nothing_asked_nothing_set(environ: dict[str, str]) -> None:
    before = trace.get_tracer_provider()
    assert configure_from_env(service_name="x", environ=environ) is None
    assert trace.get_tracer_provider() is before


def test_an_unknown_trace_exporter_is_refused_before_anything_is_set() -> None:
    before = trace.get_tracer_provider()
    with pytest.raises(TelemetryConfigError, match="use console, otlp or none"):
        configure_from_env(service_name="x", environ={"OTEL_TRACES_EXPORTER": "console,jaeger"})
    assert trace.get_tracer_provider() is before


@pytest.mark.parametrize("port", ["x", "0", "70000", "-1"])
def test_a_bad_prometheus_port_is_refused(port: str) -> None:
    before = trace.get_tracer_provider()
    with pytest.raises(TelemetryConfigError, match="OTEL_EXPORTER_PROMETHEUS_PORT"):
        configure_from_env(
            service_name="x",
            environ={
                "OTEL_TRACES_EXPORTER": "console",
                "OTEL_METRICS_EXPORTER": "prometheus",
                "OTEL_EXPORTER_PROMETHEUS_PORT": port,
            },
        )
    assert trace.get_tracer_provider() is before  # the valid trace setting was not applied
