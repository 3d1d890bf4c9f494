"""Correlation: the session id in every log record, and W3C baggage (DESIGN §2, spec §2.9).

The session id and the conversation id are those of the request being handled (one context
variable holds its scope); a log-record factory copies them onto every record created
meanwhile, whichever logger emits it, so a formatter can print ``%(mcp_session_id)s``. The
conversation id comes from ``gen_ai.conversation.id`` in the W3C ``baggage`` of ``_meta``
(SEP-414, OTel GenAI conventions); baggage is never used as a session key (spec §5.0 item 5).
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

from opentelemetry import propagate
from opentelemetry.propagators.textmap import TextMapPropagator

from ..core.names import BAGGAGE_CONVERSATION_ID, META_BAGGAGE

logger = logging.getLogger("mcp_sessions")


class Correlated(Protocol):
    """What a log record is stamped with: the request scope provides both."""

    @property
    def session_id(self) -> str | None: ...

    @property
    def conversation_id(self) -> str | None: ...


_installed = False
_install_lock = threading.Lock()

#: W3C Baggage caps a header at 8192 bytes; we read no further than that.
_MAX_BAGGAGE = 8192


def install_log_record_factory(current: Callable[[], Correlated | None]) -> None:
    """Wrap the logging record factory once per process (idempotent).

    ``current`` returns the request being handled (a context variable's getter: one variable
    serves both ids, so a request pays for one ``set`` and one ``reset``). Records get
    ``mcp_session_id`` and ``mcp_conversation_id`` attributes (``"-"`` outside a session), so
    any format string may use them.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            request = current()
            if request is None:
                record.mcp_session_id = record.mcp_conversation_id = "-"
            else:
                record.mcp_session_id = request.session_id or "-"
                record.mcp_conversation_id = request.conversation_id or "-"
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


def conversation_id_from_baggage(baggage: object) -> str | None:
    """The ``gen_ai.conversation.id`` member of a W3C baggage string, if well-formed."""
    if not isinstance(baggage, str):
        logger.debug("ignoring _meta.baggage: a %s, not a string", type(baggage).__name__)
        return None
    if len(baggage) > _MAX_BAGGAGE:
        return None
    for member in baggage.split(","):
        key, sep, rest = member.partition("=")
        if not sep or key.strip() != BAGGAGE_CONVERSATION_ID:
            continue
        value = rest.split(";", 1)[0].strip()  # drop member properties
        decoded = urllib.parse.unquote(value)
        return decoded if decoded and decoded.isprintable() else None
    return None


_propagator_installed = False


def install_tolerant_propagator() -> None:
    """Make OpenTelemetry's trace-context extraction ignore a malformed ``_meta.baggage``.

    The SDK extracts W3C context from every request's ``_meta`` before any middleware of
    ours runs, and OpenTelemetry's baggage propagator fails on a baggage that is not a string
    (a number, a list), which the SDK then answers with -32603 and a logged traceback
    (issue #12 row 9). Wrapped once per process: on such a failure the request's context is
    extracted again without the baggage, which is logged at debug and otherwise ignored.
    """
    global _propagator_installed
    with _install_lock:
        if _propagator_installed:
            return
        inner = propagate.get_global_textmap()
        if not isinstance(inner, _TolerantPropagator):
            propagate.set_global_textmap(_TolerantPropagator(inner))
        _propagator_installed = True


class _TolerantPropagator(TextMapPropagator):
    """A TextMap propagator that retries extraction without a malformed baggage."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        kwargs = {} if getter is None else {"getter": getter}
        try:
            return self._inner.extract(carrier, context, **kwargs)
        except (AttributeError, TypeError, ValueError):
            if not (hasattr(carrier, "items") and META_BAGGAGE in carrier):
                raise
            logger.debug("ignoring a malformed _meta.baggage for trace-context extraction")
            kept = {key: value for key, value in carrier.items() if key != META_BAGGAGE}
            return self._inner.extract(kept, context, **kwargs)

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        kwargs = {} if setter is None else {"setter": setter}
        self._inner.inject(carrier, context, **kwargs)

    @property
    def fields(self) -> set[str]:
        fields: set[str] = self._inner.fields
        return fields
