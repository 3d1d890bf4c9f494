"""The OpenTelemetry SDK set up from the standard environment variables (issue #13).

``mcp-sessions demo`` and ``mcp-sessions gateway`` call :func:`configure_from_env` at start:
with ``opentelemetry-sdk`` installed (``pip install 'mcp-sessions[otel]'``) and an exporter
asked for, it sets the global tracer and meter providers, and the library's spans and
metrics (and the MCP SDK's own spans) go there. Nothing asked for, nothing set: the API stays
a no-op and costs next to nothing.

Honoured, as the OpenTelemetry specification names them:

* ``OTEL_SDK_DISABLED=true``: nothing at all;
* ``OTEL_TRACES_EXPORTER``: ``console``, ``otlp`` (OTLP over HTTP/protobuf; the exporter reads
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends itself), ``none``; a comma-separated list;
* ``OTEL_METRICS_EXPORTER``: ``console``, ``otlp``, ``prometheus`` (a scrape endpoint on
  ``OTEL_EXPORTER_PROMETHEUS_HOST``:``OTEL_EXPORTER_PROMETHEUS_PORT``, default
  localhost:9464), ``none``; export interval ``OTEL_METRIC_EXPORT_INTERVAL`` (ms);
* ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``; batching ``OTEL_BSP_*``.

The demo's ``--metrics`` adds a Prometheus reader whose text it serves at ``/metrics``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("mcp_sessions")

#: What to install for the SDK (the message of every "not installed" error).
INSTALL_HINT = "pip install 'mcp-sessions[otel]'"
_PROMETHEUS_HINT = "pip install 'mcp-sessions[otel]' (opentelemetry-exporter-prometheus)"


class TelemetryConfigError(ValueError):
    """An ``OTEL_*`` setting this process cannot honour (unknown exporter, SDK missing)."""


@dataclass
class Telemetry:
    """The providers :func:`configure_from_env` set, to serve ``/metrics`` and shut down."""

    tracer_provider: Any = None
    meter_provider: Any = None
    #: The reader whose metrics ``/metrics`` serves (``--metrics``), if any.
    prometheus_reader: Any = None
    exporters: list[str] = field(default_factory=list)

    def shutdown(self) -> None:
        """Flush and stop (the SDK also does so at interpreter exit)."""
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()


def _names(environ: Mapping[str, str], variable: str) -> list[str]:
    value = environ.get(variable, "").strip().lower()
    names = (name.strip() for name in value.split(","))
    # Each once: a repeated exporter would export everything twice (or bind a port twice).
    return list(dict.fromkeys(name for name in names if name and name != "none"))


def configure_from_env(
    *,
    service_name: str,
    environ: Mapping[str, str] | None = None,
    prometheus: bool = False,
) -> Telemetry | None:
    """Set the global SDK providers the ``OTEL_*`` variables ask for; ``None`` if none.

    ``service_name`` is the default ``service.name`` (``OTEL_SERVICE_NAME`` wins);
    ``prometheus`` adds a reader for a ``/metrics`` endpoint the caller serves. Raises
    :class:`TelemetryConfigError` for an unknown exporter or a missing package.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces = _names(env, "OTEL_TRACES_EXPORTER")
    metric_names = _names(env, "OTEL_METRICS_EXPORTER")
    if not traces and not metric_names and not prometheus:
        return None
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        raise TelemetryConfigError(
            f"OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER / --metrics need the OpenTelemetry "
            f"SDK: {INSTALL_HINT}"
        ) from None
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    resource = Resource.create(attributes)
    configured = Telemetry()
    # Every setting is checked before any global is set: a refusal leaves the process as it was.
    processors = [_span_processor(name) for name in traces]
    readers = [_metric_reader(name, env) for name in metric_names]
    if prometheus:
        # One Prometheus reader only: two would put every series twice in the registry.
        pairs = zip(metric_names, readers, strict=True)
        shared = [reader for name, reader in pairs if name == "prometheus"]
        configured.prometheus_reader = shared[0] if shared else _prometheus_reader()
        if not shared:
            readers.append(configured.prometheus_reader)
    if processors:
        tracer_provider = TracerProvider(resource=resource)
        for processor in processors:
            tracer_provider.add_span_processor(processor)
        trace.set_tracer_provider(tracer_provider)
        configured.tracer_provider = tracer_provider
        configured.exporters += [f"traces:{name}" for name in traces]
    if readers:
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
        configured.meter_provider = meter_provider
        configured.exporters += [f"metrics:{name}" for name in metric_names]
        if prometheus:
            configured.exporters.append("metrics:/metrics")
    return configured


def _span_processor(name: str) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if name == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise TelemetryConfigError(
                f"OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http: "
                f"{INSTALL_HINT}"
            ) from None
        return BatchSpanProcessor(OTLPSpanExporter())
    raise TelemetryConfigError(
        f"OTEL_TRACES_EXPORTER={name!r} is not supported here: use console, otlp or none"
    )


def _metric_reader(name: str, env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
        except ImportError:
            raise TelemetryConfigError(
                f"OTEL_METRICS_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http: "
                f"{INSTALL_HINT}"
            ) from None
        return PeriodicExportingMetricReader(OTLPMetricExporter())
    if name == "prometheus":
        host = env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
        port_text = env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464")
        if not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise TelemetryConfigError(
                f"OTEL_EXPORTER_PROMETHEUS_PORT must be a port number, not {port_text!r}"
            )
        port = int(port_text)
        reader = _prometheus_reader()
        from prometheus_client import start_http_server

        start_http_server(port, addr=host)
        logger.info("Prometheus metrics on http://%s:%d/metrics", host, port)
        return reader
    raise TelemetryConfigError(
        f"OTEL_METRICS_EXPORTER={name!r} is not supported here: use console, otlp, "
        "prometheus or none"
    )


def _prometheus_reader() -> Any:
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
    except ImportError:
        raise TelemetryConfigError(
            f"Prometheus metrics need opentelemetry-exporter-prometheus: {_PROMETHEUS_HINT}"
        ) from None
    return PrometheusMetricReader()


def prometheus_text() -> tuple[bytes, str]:
    """The Prometheus exposition of the default registry (where the reader registers), and
    its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


__all__ = ["Telemetry", "TelemetryConfigError", "configure_from_env", "prometheus_text"]
