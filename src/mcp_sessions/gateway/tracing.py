"""A client span per upstream hop, and the trace context handed on to the upstream (issue #13).

Each attempt to send a request to an upstream is one ``SpanKind.CLIENT`` span, named like the
MCP SDK's client spans (``<method> [<tool>]``), with the routing decision as attributes: the
carrier or rule that decided (``mcp_sessions.gateway.decision``), the upstream, and how it was
chosen (``pinned``, ``placed``, ``hashed``, ``least_loaded``). Its parent is the caller's
context: ``params._meta.traceparent`` (where MCP carries it, SEP-414) when the body was read,
else the ``traceparent`` header.

The upstream learns the hop's context twice: a ``traceparent`` (and ``tracestate``) header,
and — where an MCP server looks for it — ``params._meta`` of a JSON-RPC request read whole
(the client's ``baggage`` is kept). A body streamed through (over 64 KiB) keeps its own
``_meta``. Nothing of this runs without an SDK tracer provider: the hot path asks
:attr:`HopTracer.tracing` once per request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, TracerProvider

from ..core import otel_names as n
from ..telemetry.instruments import RECHECK_EVERY, provider_is_live
from .asgi import Incoming

_TRACE_FIELDS = (b"traceparent", b"tracestate")


class HopTracer:
    """The gateway's tracer (the global provider unless one is given)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(n.SCOPE)
        self._tracing = provider_is_live(self._provider or trace.get_tracer_provider())
        self._countdown = RECHECK_EVERY

    @property
    def tracing(self) -> bool:
        """An SDK tracer provider is there (looked for every :data:`RECHECK_EVERY` requests
        while none is: the API's look-up reads the environment)."""
        if not self._tracing:
            self._countdown -= 1
            if self._countdown > 0:
                return False
            self._countdown = RECHECK_EVERY
            self._tracing = provider_is_live(self._provider or trace.get_tracer_provider())
        return self._tracing

    def hop(
        self, request: Incoming, upstream: str, decision: str, placement: str
    ) -> AbstractContextManager[Span | None]:
        """The span of one attempt to reach ``upstream``; a no-op without an SDK."""
        if not self.tracing:
            return nullcontext()
        return self._hop(request, upstream, decision, placement)

    @contextmanager
    def _hop(
        self, request: Incoming, upstream: str, decision: str, placement: str
    ) -> Iterator[Span | None]:
        rpc: dict[str, Any] = {}
        if request.body is not None:
            request.parse()
            rpc = request.rpc
        method = rpc.get("method")
        params = rpc.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        span_name = f"{method} {name}" if isinstance(name, str) else str(method or request.method)
        attributes: dict[str, Any] = {
            n.GATEWAY_UPSTREAM: upstream,
            n.GATEWAY_DECISION: decision,
            n.GATEWAY_PLACEMENT: placement,
        }
        if isinstance(method, str):
            attributes[n.MCP_METHOD_NAME] = method
            if method == "tools/call" and isinstance(name, str):
                attributes[n.GEN_AI_TOOL_NAME] = name
        rpc_id = rpc.get("id")
        if isinstance(rpc_id, str | int) and not isinstance(rpc_id, bool):
            attributes[n.JSONRPC_REQUEST_ID] = str(rpc_id)
        with self.tracer.start_as_current_span(
            span_name,
            kind=SpanKind.CLIENT,
            context=_parent(request),
            attributes=attributes,
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            if span.is_recording():
                _hand_on(request)
            yield span


def _parent(request: Incoming) -> Context | None:
    """The caller's context: ``_meta`` first (MCP's place for it), else the headers."""
    meta = request.meta if request.body is not None else None
    if meta and "traceparent" in meta:
        try:
            context = extract(meta)
        except (TypeError, ValueError, AttributeError):
            context = None
        if context is not None and trace.get_current_span(context).get_span_context().is_valid:
            return context
    header = request.headers.get("traceparent")
    if header is None:
        return None
    carrier = {"traceparent": header}
    state = request.headers.get("tracestate")
    if state is not None:
        carrier["tracestate"] = state
    return extract(carrier)


def _hand_on(request: Incoming) -> None:
    """Put the current (hop) span's context on the request: headers, and ``_meta`` of a
    single JSON-RPC request read whole."""
    carrier: dict[str, str] = {}
    inject(carrier)
    traceparent = carrier.get("traceparent")
    if traceparent is None:
        return
    fields = {"traceparent": traceparent}
    if "tracestate" in carrier:
        fields["tracestate"] = carrier["tracestate"]
    request.raw_headers = [
        (name, value) for name, value in request.raw_headers if name not in _TRACE_FIELDS
    ] + [(key.encode(), value.encode("latin-1")) for key, value in fields.items()]
    message = request.message if request.body is not None else None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return  # a batch, a response, not JSON: its body goes on unchanged
    params = message.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return
    meta = params.get("_meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        return
    kept = {key: value for key, value in meta.items() if key not in ("traceparent", "tracestate")}
    rewritten = {**message, "params": {**params, "_meta": {**kept, **fields}}}
    try:
        # allow_nan=False: a number too large for a float (1e400) was read as inf, which
        # would go out as the non-JSON "Infinity"; such a body goes on as the client sent it.
        request.body = json.dumps(rewritten, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        return


__all__ = ["HopTracer"]
