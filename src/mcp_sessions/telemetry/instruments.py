"""What a server emits through the OpenTelemetry API (issue #13; docs/observability.md).

:class:`SessionTelemetry` is looked up once per server: one tracer, one meter, its instruments.
Through the API only, so everything is a no-op until an SDK is configured (globally, or by
passing providers). The request path asks :attr:`SessionTelemetry.active` first and does
nothing more while no SDK is there, and builds span attributes only for a recording span.

Spans: the SDK's ``OpenTelemetryMiddleware`` opens a server span per request (named
``<method> [<tool>]``, with the method, protocol version, request id and tool attributes,
its parent taken from ``params._meta.traceparent``); the session middleware adds the session
attributes to that span. Without the SDK's span (middleware removed) it opens its own, with
the same name, parent and attributes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol
from weakref import WeakKeyDictionary, WeakSet

from mcp.shared.exceptions import MCPError
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.propagate import extract
from opentelemetry.trace import Span, SpanKind, TracerProvider

from ..core import otel_names as n
from ..core.carriers import CLIENT_CARRIERS, Carrier
from ..core.names import (
    METHOD_SESSION_CREATE,
    METHOD_SESSION_DESTROY,
    SESSION_ID_MAX_LENGTH,
    SESSION_KIND,
)
from ..core.principal import Principal
from ..core.records import Record
from .tracker import SessionTracker, Tracked

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

#: The SDK's tracer name: a current span of this scope is the SDK's request span.
SDK_SCOPE = "mcp-python-sdk"
#: Carriers whose id the client supplies on every request: its conversation id (semconv:
#: ``gen_ai.conversation.id`` only when the client supplied it, never synthesised).
CONVERSATION_CARRIERS = CLIENT_CARRIERS
#: Sessions of the transport, which the semconv's ``mcp.session.id`` names.
TRANSPORT_CARRIERS = frozenset({Carrier.LEGACY, Carrier.CONNECTION})
#: Methods that do not count as a session's requests (see :mod:`.tracker`).
_UNCOUNTED = frozenset({METHOD_SESSION_CREATE, METHOD_SESSION_DESTROY})
_API_MODULES = ("opentelemetry.metrics", "opentelemetry.trace")
#: Requests between two looks for an SDK provider while there is none.
RECHECK_EVERY = 256
_METHOD_NOT_FOUND = "-32601"
#: semconv's value for a method name outside the known set (bounded metric cardinality).
_OTHER = "_OTHER"


class LoadedSession(Protocol):
    @property
    def origin(self) -> str: ...

    created: bool


class RequestScope(Protocol):
    """What the telemetry reads of a request's session scope (``server/session.py``)."""

    principal: Principal
    conversation_id: str | None

    @property
    def carrier(self) -> Carrier: ...

    @property
    def session_id(self) -> str | None: ...

    @property
    def loaded(self) -> LoadedSession | None: ...


def provider_is_live(provider: object) -> bool:
    """Whether ``provider`` is an SDK's (the API's own are no-ops and proxies)."""
    return not type(provider).__module__.startswith(_API_MODULES)


class SessionTelemetry:
    """The tracer, meter and instruments of one server, and the sessions it follows.

    ``tracer_provider`` / ``meter_provider`` default to the global ones (set by an
    application, or by :func:`mcp_sessions.telemetry.configure_from_env`).
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        tracker: SessionTracker | None = None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        #: An SDK tracer / meter provider is there (plain flags: read on every request).
        self.tracing = self.metering = False
        self._countdown = RECHECK_EVERY
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(n.SCOPE)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(n.SCOPE)
        self.sessions = tracker if tracker is not None else SessionTracker()
        self.operation_duration = meter.create_histogram(
            n.METRIC_OPERATION_DURATION,
            unit=n.UNIT_SECONDS,
            description="Duration of MCP requests as observed by the server",
            explicit_bucket_boundaries_advisory=n.DURATION_BUCKETS,
        )
        self.session_duration = meter.create_histogram(
            n.METRIC_SESSION_DURATION,
            unit=n.UNIT_SECONDS,
            description="Lifetime of sessions this process created, recorded when they end",
            explicit_bucket_boundaries_advisory=n.SESSION_DURATION_BUCKETS,
        )
        self.created = meter.create_counter(
            n.METRIC_SESSIONS_CREATED, unit=n.UNIT_SESSIONS, description="Sessions created"
        )
        self.destroyed = meter.create_counter(
            n.METRIC_SESSIONS_DESTROYED,
            unit=n.UNIT_SESSIONS,
            description="Sessions ended by session/destroy or a legacy DELETE",
        )
        self.expired = meter.create_counter(
            n.METRIC_SESSIONS_EXPIRED,
            unit=n.UNIT_SESSIONS,
            description="Sessions this process created that idled out (as this process saw)",
        )
        _ratio_gauge(meter_provider or metrics.get_meter_provider(), meter).add(self.sessions)
        self.conflicts = meter.create_counter(
            n.METRIC_STATE_CONFLICTS,
            unit=n.UNIT_CONFLICTS,
            description="State compare-and-set attempts that lost to another writer",
        )
        self.retries = meter.create_counter(
            n.METRIC_STATE_RETRIES,
            unit=n.UNIT_CONFLICTS,
            description="State edits run again after a lost compare-and-set",
        )
        self.exhausted = meter.create_counter(
            n.METRIC_STATE_EXHAUSTED,
            unit=n.UNIT_CONFLICTS,
            description="State edits that ran out of attempts (-31004)",
        )
        self.quota_refusals = meter.create_counter(
            n.METRIC_QUOTA_REFUSALS,
            unit=n.UNIT_REFUSALS,
            description="Creations refused by a quota or the creation rate (-31005)",
        )
        self.store_duration = meter.create_histogram(
            n.METRIC_STORE_DURATION,
            unit=n.UNIT_SECONDS,
            description="Duration of session store operations",
            explicit_bucket_boundaries_advisory=n.DURATION_BUCKETS,
        )
        self._store_attributes: dict[str, Mapping[str, str]] = {}
        self.refresh()

    # -- is anything listening? ---------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether an SDK provider is there; without one the request path does nothing more.

        The API's provider look-up reads the environment, so while none is found it is
        repeated only every :data:`RECHECK_EVERY` requests: a provider set after the server
        started is found by then.
        """
        if self.tracing or self.metering:
            return True
        self._countdown -= 1
        if self._countdown > 0:
            return False
        self._countdown = RECHECK_EVERY
        self.refresh()
        return self.tracing or self.metering

    def refresh(self) -> None:
        """Look for SDK providers now (the global ones unless providers were given)."""
        tracer_provider = self._tracer_provider or trace.get_tracer_provider()
        meter_provider = self._meter_provider or metrics.get_meter_provider()
        self.tracing = provider_is_live(tracer_provider)
        self.metering = provider_is_live(meter_provider)

    # -- one request ---------------------------------------------------------------------------

    async def around(
        self, ctx: ServerRequestContext[Any, Any], scope: RequestScope, call_next: CallNext
    ) -> HandlerResult:
        """Run the rest of the request's chain, observed: its span, its duration, its
        session's request count."""
        own: AbstractContextManager[Any] = nullcontext()
        span: Span | None = None
        if self.tracing:
            current = trace.get_current_span()
            if _is_sdk_request_span(current):
                span = current
            elif not current.get_span_context().is_valid or current.is_recording():
                own = self._own_span(ctx)
        metering = self.metering
        started = time.perf_counter() if metering else 0.0
        error_type: str | None = None
        with own as opened:
            if opened is not None:
                span = opened
            if span is not None and span.is_recording():
                span.set_attributes(request_attributes(ctx, scope))
            try:
                result = await call_next(ctx)
                if ctx.method == "tools/call" and _is_tool_error(result):
                    error_type = "tool_error"  # as the SDK marks the span (semconv)
            except MCPError as error:
                error_type = str(error.error.code)
                raise
            except Exception as error:
                error_type = type(error).__qualname__
                raise
            finally:
                if span is not None and span.is_recording():
                    span.set_attributes(session_attributes(scope))
                if metering:
                    self._finish(ctx, scope, started, error_type)
        return result

    def _own_span(self, ctx: ServerRequestContext[Any, Any]) -> AbstractContextManager[Span]:
        name = ctx.params.get("name") if ctx.params else None
        target = f" {name}" if isinstance(name, str) else ""
        parent = None
        meta = ctx.meta
        if meta and "traceparent" in meta:
            try:
                parent = extract(meta)
            except (TypeError, ValueError, AttributeError):
                parent = None  # a malformed traceparent: a trace of its own, as the SDK does
        attributes: dict[str, Any] = {
            n.MCP_METHOD_NAME: ctx.method,
            n.MCP_PROTOCOL_VERSION: ctx.protocol_version or "",
        }
        if ctx.request_id is not None:
            attributes[n.JSONRPC_REQUEST_ID] = str(ctx.request_id)
        if ctx.method == "tools/call" and target:
            attributes[n.GEN_AI_OPERATION_NAME] = "execute_tool"
            attributes[n.GEN_AI_TOOL_NAME] = target[1:]
        return self.tracer.start_as_current_span(
            f"{ctx.method}{target}", kind=SpanKind.SERVER, context=parent, attributes=attributes
        )

    def _finish(
        self,
        ctx: ServerRequestContext[Any, Any],
        scope: RequestScope,
        started: float,
        error_type: str | None,
    ) -> None:
        elapsed = time.perf_counter() - started
        method = ctx.method
        attributes: dict[str, Any] = {
            # An unknown method is the client's word: one value for all (bounded cardinality).
            n.MCP_METHOD_NAME: _OTHER if error_type == _METHOD_NOT_FOUND else method,
            n.CARRIER: scope.carrier.value,
        }
        if ctx.protocol_version:
            attributes[n.MCP_PROTOCOL_VERSION] = ctx.protocol_version
        if error_type is not None:
            attributes[n.ERROR_TYPE] = error_type
        self.operation_duration.record(elapsed, attributes)
        session_id = scope.session_id
        if session_id is not None and method not in _UNCOUNTED:
            now = time.time()
            self.sessions.seen(scope.principal.key, session_id, now)
            self.retire_expired(now)

    # -- sessions ------------------------------------------------------------------------------

    def session_created(self, record: Record, carrier: str) -> None:
        """A session was created (any carrier): counted and followed until it ends."""
        if record.kind != SESSION_KIND or not self.metering:
            return
        self.created.add(1, {n.CARRIER: carrier, n.SESSION_ORIGIN: record.origin})
        replaced = self.sessions.created(record, carrier)
        if replaced is not None:
            self._ended(replaced, "expired", replaced.deadline)
        self.retire_expired(record.created_at)

    def session_destroyed(self, principal: str, session_id: str) -> None:
        """A session was destroyed (``session/destroy``, a legacy ``DELETE``)."""
        if not self.metering:
            return
        entry = self.sessions.ended_now(principal, session_id)
        if entry is None:
            self.destroyed.add(1)
            return
        self.destroyed.add(1, {n.CARRIER: entry.carrier, n.SESSION_ORIGIN: entry.origin})
        self._ended(entry, "destroyed", time.time())

    def retire_expired(self, now: float) -> None:
        for entry in self.sessions.expired(now):
            self.expired.add(1, {n.CARRIER: entry.carrier, n.SESSION_ORIGIN: entry.origin})
            self._ended(entry, "expired", entry.deadline)

    def _ended(self, entry: Tracked, how: str, at: float) -> None:
        self.session_duration.record(
            max(0.0, at - entry.created_at),
            {
                n.CARRIER: entry.carrier,
                n.SESSION_ORIGIN: entry.origin,
                n.SESSION_END: how,
                n.SESSION_DEGENERATE: entry.degenerate,
            },
        )

    # -- state, quotas, store -----------------------------------------------------------------

    def state_conflict(self, kind: str, retried: bool) -> None:
        if not self.metering:
            return
        attributes = {n.SESSION_KIND_ATTR: kind}
        self.conflicts.add(1, attributes)
        (self.retries if retried else self.exhausted).add(1, attributes)

    def quota_refused(self, counted: str, reason: str) -> None:
        if self.metering:
            self.quota_refusals.add(1, {n.QUOTA_COUNTED: counted, n.QUOTA_REASON: reason})

    def store_timed(self, operation: str, seconds: float, error_type: str | None) -> None:
        attributes = self._store_attributes.get(operation) if error_type is None else None
        if attributes is None:
            attributes = {n.STORE_OPERATION: operation}
            if error_type is None:
                self._store_attributes[operation] = attributes
            else:
                attributes[n.ERROR_TYPE] = error_type
        self.store_duration.record(seconds, attributes)


class _RatioGauge:
    """The degenerate-session ratio of every server of the process on one meter provider.

    One gauge per provider: a second registration of the same name would be the first one
    to the SDK, and its callback would see the first server's sessions only.
    """

    def __init__(self, meter: Meter) -> None:
        self.trackers: WeakSet[SessionTracker] = WeakSet()
        meter.create_observable_gauge(
            n.METRIC_DEGENERATE_RATIO,
            callbacks=[self.observe],
            unit=n.UNIT_RATIO,
            description="Share of the sessions this process created and saw end that saw "
            "exactly one request",
        )

    def add(self, tracker: SessionTracker) -> None:
        self.trackers.add(tracker)

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        # Reads integers only: safe from the exporter's thread.
        trackers = list(self.trackers)
        ended = sum(tracker.ended for tracker in trackers)
        degenerate = sum(tracker.degenerate for tracker in trackers)
        return [Observation(degenerate / ended if ended else 0.0)]


_RATIO_GAUGES: WeakKeyDictionary[object, _RatioGauge] = WeakKeyDictionary()
_RATIO_LOCK = threading.Lock()


def _ratio_gauge(provider: object, meter: Meter) -> _RatioGauge:
    with _RATIO_LOCK:
        gauge = _RATIO_GAUGES.get(provider)
        if gauge is None:
            gauge = _RATIO_GAUGES[provider] = _RatioGauge(meter)
        return gauge


def request_attributes(ctx: ServerRequestContext[Any, Any], scope: RequestScope) -> dict[str, Any]:
    """A request span's session attributes, known before its handler runs. Never a state
    token or a handle's data: ids and carrier names only."""
    carrier = scope.carrier
    attributes: dict[str, Any] = {n.CARRIER: carrier.value}
    session_id = scope.session_id
    if session_id is not None:
        if carrier in TRANSPORT_CARRIERS:
            attributes[n.MCP_SESSION_ID] = session_id
        elif carrier in CONVERSATION_CARRIERS:
            attributes[n.GEN_AI_CONVERSATION_ID] = session_id
    conversation = scope.conversation_id
    if (
        conversation is not None
        and carrier not in CONVERSATION_CARRIERS
        and len(conversation) <= SESSION_ID_MAX_LENGTH
    ):
        # The client's own conversation id from W3C baggage (SEP-414), when no carrier of
        # its own names one; no longer than a session id (baggage may carry 8 KiB of it).
        attributes[n.GEN_AI_CONVERSATION_ID] = conversation
    transport = _transport(ctx, carrier)
    if transport is not None:
        attributes[n.NETWORK_TRANSPORT] = transport
    return attributes


def session_attributes(scope: RequestScope) -> dict[str, Any]:
    """What the handler learnt of the session: its kind and origin, whether it was created."""
    session = scope.loaded
    if session is None:
        return {}
    return {
        n.SESSION_KIND_ATTR: SESSION_KIND,
        n.SESSION_ORIGIN: session.origin,
        n.SESSION_CREATED: session.created,
    }


def _transport(ctx: ServerRequestContext[Any, Any], carrier: Carrier) -> str | None:
    if ctx.request is not None:
        return "tcp"  # Streamable HTTP
    if carrier is Carrier.CONNECTION:
        return "pipe"  # stdio: one connection, one client
    return None


def _is_tool_error(result: object) -> bool:
    if isinstance(result, dict):
        return result.get("isError") is True
    return getattr(result, "is_error", False) is True


def _is_sdk_request_span(span: Span) -> bool:
    scope = getattr(span, "instrumentation_scope", None)
    return getattr(scope, "name", None) == SDK_SCOPE


__all__ = ["SessionTelemetry", "provider_is_live", "request_attributes"]
