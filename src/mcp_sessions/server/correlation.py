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

from ..core.names import BAGGAGE_CONVERSATION_ID


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
    if not isinstance(baggage, str) or len(baggage) > _MAX_BAGGAGE:
        return None
    for member in baggage.split(","):
        key, sep, rest = member.partition("=")
        if not sep or key.strip() != BAGGAGE_CONVERSATION_ID:
            continue
        value = rest.split(";", 1)[0].strip()  # drop member properties
        decoded = urllib.parse.unquote(value)
        return decoded if decoded and decoded.isprintable() else None
    return None


def baggage_with_conversation(baggage: str | None, conversation_id: str) -> str:
    """``baggage`` with ``gen_ai.conversation.id`` set (clients use this)."""
    member = f"{BAGGAGE_CONVERSATION_ID}={urllib.parse.quote(conversation_id, safe='')}"
    if not baggage:
        return member
    kept = [m for m in baggage.split(",") if m.partition("=")[0].strip() != BAGGAGE_CONVERSATION_ID]
    return ",".join([*kept, member])
