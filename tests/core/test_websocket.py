"""The WebSocket wire rules without I/O (issue #16): negotiation, the rate bucket, limits."""

from __future__ import annotations

import pytest

from mcp_sessions.core.errors import LIMIT_EXCEEDED
from mcp_sessions.core.websocket import (
    RateBucket,
    WebSocketLimits,
    echoable_id,
    is_websocket_url,
    offered_subprotocols,
    select_subprotocol,
)


def test_subprotocol_negotiation() -> None:
    assert select_subprotocol([]) == (True, None)
    assert select_subprotocol(["mcp"]) == (True, "mcp")
    assert select_subprotocol(["graphql-ws", "mcp"]) == (True, "mcp")
    assert select_subprotocol(["graphql-ws"]) == (False, None)
    assert select_subprotocol(["MCP"]) == (False, None)  # tokens are case-sensitive
    assert offered_subprotocols(["a, mcp", " b "]) == ["a", "mcp", "b"]


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = RateBucket(WebSocketLimits(messages_per_second=10, burst=3), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [None, None, None]
    refusal = bucket.take(0.0)
    assert refusal is not None and refusal.code == LIMIT_EXCEEDED
    assert "10 per second" in refusal.message
    assert refusal.retry_after == pytest.approx(0.1)
    assert bucket.take(0.0) is not None
    assert bucket.refused_in_row == 2
    assert bucket.take(0.1) is None  # one token back after 1/10 s
    assert bucket.refused_in_row == 0
    assert [bucket.take(100.0) for _ in range(3)] == [None, None, None]  # capped at the burst
    assert bucket.take(100.0) is not None


@pytest.mark.parametrize(
    "options",
    [
        {"max_message_bytes": 100},
        {"messages_per_second": 0},
        {"messages_per_second": float("nan")},
        {"messages_per_second": float("inf")},
        {"burst": 0},
        {"flood_close_after": 0},
        {"max_in_flight": 0},
        {"idle_timeout": 0},
    ],
)
def test_limits_refuse_nonsense(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WebSocketLimits(**options)  # type: ignore[arg-type]


def test_echoable_ids() -> None:
    assert [echoable_id(v) for v in (1, "a", 2.0, 2.5, True, None, {"x": 1}, [1])] == [
        1,
        "a",
        2,
        None,
        None,
        None,
        None,
        None,
    ]


def test_websocket_urls() -> None:
    assert is_websocket_url("ws://h/mcp") and is_websocket_url("WSS://h/mcp")
    assert not is_websocket_url("http://h/mcp") and not is_websocket_url(None)
