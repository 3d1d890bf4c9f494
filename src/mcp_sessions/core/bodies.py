"""Request bodies: one JSON-RPC message per HTTP request, parsed without surprises.

Every HTTP entry point of the project (the served app's gate in ``server/http.py``, and the
gateway) parses a request body the same way, here, so a body the JSON decoder refuses gets the
same clear answer everywhere (issue #12 item 4): HTTP 400 with JSON-RPC **-32700** (Parse
error), never a 500.

What counts as malformed:

* an empty body, a body that is not UTF-8 (RFC 8259 §8.1: JSON between systems is UTF-8), or
  text the decoder refuses (including ``NaN``/``Infinity``, which are not JSON, and integers
  over Python's digit limit);
* nesting deeper than :data:`MAX_JSON_DEPTH`: checked on the raw bytes *before* decoding, so a
  ``[[[[…]]]]`` body 100,000 deep costs one linear scan instead of a ``RecursionError`` deep in
  a decoder (the SDK's and ours).

JSON that decodes but is not one message object (an array — JSON-RPC batches were removed
from MCP in 2025-06-18 — or a bare number, string, ``null``…) is -32600 (Invalid Request), as
JSON-RPC 2.0 §5.1 defines it; also HTTP 400.

Sans-IO: bytes in, a value or an exception out.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from .errors import INVALID_REQUEST, SessionError

PARSE_ERROR = -32700

#: Deepest array/object nesting accepted in a request body. MCP messages sit 3–4 levels deep
#: (envelope, params, arguments); 100 leaves tool arguments ample room while staying far
#: below the depth where recursive decoders and validators exhaust the stack (~1,000).
MAX_JSON_DEPTH = 100

#: One JSON string (escapes included, possibly unterminated), or one bracket. Strings are
#: matched whole so that brackets inside them are not counted.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")


class MalformedBody(SessionError):
    """The body is not one JSON text the decoder accepts (JSON-RPC 2.0 §5.1: -32700)."""

    code: ClassVar[int] = PARSE_ERROR
    default_message = "Parse error: the request body is not valid JSON"
    http_status = 400


class NotAMessage(SessionError):
    """Valid JSON, but not one JSON-RPC message object (JSON-RPC 2.0 §5.1: -32600)."""

    code: ClassVar[int] = INVALID_REQUEST
    default_message = "Invalid Request: the body must be one JSON-RPC message object"
    http_status = 400


def nesting_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``raw`` opens more than ``limit`` arrays/objects inside each other.

    Linear in ``len(raw)`` and never recursive; stops at the first bracket over the limit.
    Brackets inside strings do not count. Malformed text is measured as far as it goes (the
    decoder refuses it afterwards anyway).
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # cannot nest deeper than the number of brackets it opens
    depth = 0
    for token in _TOKENS.finditer(raw):
        first = raw[token.start()]
        if first in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif first in _CLOSE:
            depth -= 1
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode ``raw`` as one JSON text, or raise :class:`MalformedBody` saying why."""
    if not raw.strip():
        raise MalformedBody("Parse error: the request body is empty; send one JSON-RPC message")
    if nesting_exceeds(raw, max_depth):
        raise MalformedBody(f"Parse error: JSON nested deeper than {max_depth} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(
            f"Parse error: the request body is not valid UTF-8 (byte {exc.start})"
        ) from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise MalformedBody(
            f"Parse error: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:  # huge integers, NaN; depth is checked above
        raise MalformedBody(f"Parse error: {exc}") from None


def parse_message(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Decode ``raw`` as one JSON-RPC message object.

    Raises :class:`MalformedBody` (-32700) or :class:`NotAMessage` (-32600).
    """
    value = parse_json(raw, max_depth=max_depth)
    if isinstance(value, list):
        raise NotAMessage(
            "Invalid Request: JSON-RPC batches are not supported (MCP removed them in "
            "2025-06-18); send one message per request"
        )
    if not isinstance(value, dict):
        raise NotAMessage()
    return value
