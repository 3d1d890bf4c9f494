"""Prometheus metrics of one gateway, in a registry of its own (``/metrics``).

A registry per gateway keeps several gateways in one process (tests) apart. Gauges that
describe a moment — upstream health, live sessions, the process pool — are filled in when
``/metrics`` is scraped, from the objects that know them, instead of being kept up to date on
every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from ..core.names import HEADER_LEGACY_SESSION_ID
from .routing import DECISIONS

# The ``*_created`` series double every counter for little use; the gateway runs in a process
# of its own, so switching them off globally touches nothing else.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Latency buckets, in seconds: a proxy hop is sub-millisecond, tool calls can take minutes.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mcp_gateway_requests",
            "HTTP requests answered, by HTTP method and status code.",
            ["method", "status"],
            registry=r,
        )
        self.routing = Counter(
            "mcp_gateway_routing_decisions",
            "Requests by what they were routed on: a session carrier (client_header, meta, "
            "sep2822, openai, bedrock, legacy), a pinned handle (handle), a hashed handle "
            "header (param_header), the principal, or least_loaded.",
            ["carrier"],
            registry=r,
        )
        for decision in DECISIONS:
            self.routing.labels(decision)
        self.pins = Counter(
            "mcp_gateway_pins",
            "Pin events: placed (a new client-id session), learned (a legacy "
            f"{HEADER_LEGACY_SESSION_ID} from an initialize response), minted (a handle a "
            "result listed as minted), moved (failover), forgotten (DELETE), lost (the pinned "
            "upstream is unavailable; the session or handle got an error).",
            ["event"],
            registry=r,
        )
        for event in ("placed", "learned", "minted", "moved", "forgotten", "lost"):
            self.pins.labels(event)
        self.upstream_errors = Counter(
            "mcp_gateway_upstream_errors",
            "Failed hops to an upstream, by upstream and whether the request may have reached "
            "it (sent=true: the client got an error; sent=false: retried elsewhere).",
            ["upstream", "sent"],
            registry=r,
        )
        self.duration = Histogram(
            "mcp_gateway_request_duration_seconds",
            "Time from a request's arrival to the end of its response (event streams included).",
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_healthy = Gauge(
            "mcp_gateway_upstream_healthy",
            "1 if the upstream takes requests, 0 if health checks took it out.",
            ["upstream"],
            registry=r,
        )
        self.upstream_in_flight = Gauge(
            "mcp_gateway_upstream_in_flight",
            "Requests in flight to the upstream (this gateway replica).",
            ["upstream"],
            registry=r,
        )
        self.sessions = Gauge(
            "mcp_gateway_sessions",
            "Live sessions per upstream as this replica sees them: sessions it routed within "
            "the session idle timeout (for --spawn: processes bound to a session).",
            ["upstream"],
            registry=r,
        )
        self.processes = Gauge(
            "mcp_gateway_processes",
            "Spawned server processes by state: warm (pre-started, waiting for a session), "
            "starting, bound (serving a session).",
            ["state"],
            registry=r,
        )
        self.process_exits = Counter(
            "mcp_gateway_process_exits",
            "Spawned processes that ended, by reason: idle (reaped), deleted (DELETE), "
            "crashed (exited on its own), shutdown.",
            ["reason"],
            registry=r,
        )
        for reason in ("idle", "deleted", "crashed", "shutdown"):
            self.process_exits.labels(reason)
        self._refreshers: list[Callable[[], None]] = []

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Run ``refresh`` before every scrape (it sets the point-in-time gauges)."""
        self._refreshers.append(refresh)

    def set_per_upstream(self, gauge: Gauge, values: Iterable[tuple[str, float]]) -> None:
        gauge.clear()
        for name, value in values:
            gauge.labels(name).set(value)

    def render(self) -> bytes:
        for refresh in self._refreshers:
            refresh()
        return bytes(generate_latest(self.registry))
