"""OpenTelemetry SDK fixtures (issue #13): in-memory span exporter and metric reader.

The MCP SDK's request spans come from the *global* tracer provider, so one SDK provider is
set for the rest of the test session (the API allows one), with an in-memory exporter that
each test clears; after this package's tests the exporter stops keeping spans. Metrics need
no global: each test passes its own meter provider to :class:`SessionTelemetry`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_sessions.telemetry import SessionTelemetry


@pytest.fixture(scope="package")
def _span_exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert isinstance(trace.get_tracer_provider(), TracerProvider), "another provider is global"
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # spans of later tests (other packages) are no longer kept


@pytest.fixture
def spans(_span_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """The finished spans of this test (``spans.get_finished_spans()``)."""
    _span_exporter.clear()
    yield _span_exporter
    _span_exporter.clear()


class Metrics:
    """A meter provider with an in-memory reader, and the telemetry built on it."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = SessionTelemetry(meter_provider=self.provider)

    def points(self, name: str) -> list[Any]:
        """Every data point of metric ``name`` collected now."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def total(self, name: str, **attributes: Any) -> float:
        """The sum of a counter (or the count of a histogram) over points with
        ``attributes`` (dots spelled as ``__``)."""
        wanted = {key.replace("__", "."): value for key, value in attributes.items()}
        total = 0.0
        for point in self.points(name):
            if all(point.attributes.get(k) == v for k, v in wanted.items()):
                total += getattr(point, "count", None) or getattr(point, "value", 0)
        return total


@pytest.fixture
def metered() -> Iterator[Metrics]:
    metrics = Metrics()
    yield metrics
    metrics.provider.shutdown()


#: Longest wait for a span to end: a server thread ends its span just after the response
#: has gone out, so the client may see the response first.
SPAN_WAIT = 10.0


def finished(
    exporter: InMemorySpanExporter, keep: Callable[[ReadableSpan], bool], count: int
) -> list[ReadableSpan]:
    """The finished spans ``keep`` selects, once there are ``count`` (bounded wait)."""
    deadline = time.monotonic() + SPAN_WAIT
    while True:
        found = [span for span in exporter.get_finished_spans() if keep(span)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def server_spans(exporter: InMemorySpanExporter, name: str, count: int = 1) -> list[ReadableSpan]:
    """Finished server spans called ``name``, once ``count`` have ended."""
    return finished(
        exporter, lambda span: span.name == name and span.kind is trace.SpanKind.SERVER, count
    )
