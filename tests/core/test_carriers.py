"""Carrier resolution as a table: every carrier, alias, mismatch and malformed case (DESIGN §2)."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_sessions.core import (
    Carrier,
    CarrierPolicy,
    HeaderMismatch,
    InvalidSessionId,
    RequestView,
    resolve_carrier,
    validate_meta_key,
)
from mcp_sessions.core.errors import HEADER_MISMATCH, INVALID_PARAMS

SID = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"

ALL_OFF = CarrierPolicy(sep2822=False, openai=False, bedrock=False, legacy=False)

# (case, meta, headers, protocol version, policy, expected carrier, expected id)
RESOLVED: list[
    tuple[str, dict[str, Any], dict[str, str], str | None, CarrierPolicy, Carrier, str | None]
] = [
    ("nothing", {}, {}, MODERN, CarrierPolicy(), Carrier.NONE, None),
    (
        "own meta key",
        {"dev.mcpsessions/sessionId": SID},
        {},
        MODERN,
        CarrierPolicy(),
        Carrier.META,
        SID,
    ),
    (
        "own key + equal header",
        {"dev.mcpsessions/sessionId": SID},
        {"Mcp-Client-Session-Id": SID},
        MODERN,
        CarrierPolicy(),
        Carrier.META,
        SID,
    ),
    (
        "header name case-insensitive",
        {"dev.mcpsessions/sessionId": SID},
        {"mcp-client-session-id": SID},
        MODERN,
        CarrierPolicy(),
        Carrier.META,
        SID,
    ),
    (
        "header surrounding whitespace",
        {"dev.mcpsessions/sessionId": SID},
        {"Mcp-Client-Session-Id": f" {SID} "},
        MODERN,
        CarrierPolicy(),
        Carrier.META,
        SID,
    ),
    (
        "header alone is ignored",
        {},
        {"Mcp-Client-Session-Id": SID},
        MODERN,
        CarrierPolicy(),
        Carrier.NONE,
        None,
    ),
    (
        "own key on legacy request",
        {"dev.mcpsessions/sessionId": SID},
        {},
        LEGACY,
        CarrierPolicy(),
        Carrier.META,
        SID,
    ),
    (
        "own key wins over legacy header",
        {"dev.mcpsessions/sessionId": SID},
        {"Mcp-Session-Id": OTHER},
        LEGACY,
        CarrierPolicy(),
        Carrier.META,
        SID,
    ),
    (
        "own key wins over aliases",
        {"dev.mcpsessions/sessionId": SID, "clientSessionId": OTHER, "openai/session": OTHER},
        {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": OTHER},
        MODERN,
        CarrierPolicy(),
        Carrier.META,
        SID,
    ),
    ("sep-2822 meta", {"clientSessionId": SID}, {}, MODERN, CarrierPolicy(), Carrier.SEP2822, SID),
    (
        "sep-2822 meta + header",
        {"clientSessionId": SID},
        {"Mcp-Client-Session-Id": SID},
        MODERN,
        CarrierPolicy(),
        Carrier.SEP2822,
        SID,
    ),
    (
        "sep-2822 switched off",
        {"clientSessionId": SID},
        {},
        MODERN,
        CarrierPolicy(sep2822=False),
        Carrier.NONE,
        None,
    ),
    (
        "sep-2822 wins over openai",
        {"clientSessionId": SID, "openai/session": OTHER},
        {},
        MODERN,
        CarrierPolicy(),
        Carrier.SEP2822,
        SID,
    ),
    ("openai meta", {"openai/session": SID}, {}, MODERN, CarrierPolicy(), Carrier.OPENAI, SID),
    (
        "openai switched off",
        {"openai/session": SID},
        {},
        MODERN,
        CarrierPolicy(openai=False),
        Carrier.NONE,
        None,
    ),
    (
        "openai wins over bedrock",
        {"openai/session": SID},
        {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": OTHER},
        MODERN,
        CarrierPolicy(),
        Carrier.OPENAI,
        SID,
    ),
    (
        "bedrock header",
        {},
        {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SID},
        MODERN,
        CarrierPolicy(),
        Carrier.BEDROCK,
        SID,
    ),
    (
        "bedrock header lowercase",
        {},
        {"x-amzn-bedrock-agentcore-runtime-session-id": SID},
        MODERN,
        CarrierPolicy(),
        Carrier.BEDROCK,
        SID,
    ),
    (
        "bedrock switched off",
        {},
        {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SID},
        MODERN,
        CarrierPolicy(bedrock=False),
        Carrier.NONE,
        None,
    ),
    (
        "bedrock wins over legacy",
        {},
        {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SID, "Mcp-Session-Id": OTHER},
        LEGACY,
        CarrierPolicy(),
        Carrier.BEDROCK,
        SID,
    ),
    (
        "legacy header on 2025-11-25",
        {},
        {"Mcp-Session-Id": SID},
        LEGACY,
        CarrierPolicy(),
        Carrier.LEGACY,
        SID,
    ),
    (
        "legacy header, version unknown",
        {},
        {"Mcp-Session-Id": SID},
        None,
        CarrierPolicy(),
        Carrier.LEGACY,
        SID,
    ),
    (
        "legacy header on 2025-06-18",
        {},
        {"mcp-session-id": SID},
        "2025-06-18",
        CarrierPolicy(),
        Carrier.LEGACY,
        SID,
    ),
    (
        "legacy header ignored on modern",
        {},
        {"Mcp-Session-Id": SID},
        MODERN,
        CarrierPolicy(),
        Carrier.NONE,
        None,
    ),
    (
        "legacy value returned as sent",
        {},
        {"Mcp-Session-Id": "short"},
        LEGACY,
        CarrierPolicy(),
        Carrier.LEGACY,
        "short",
    ),
    (
        "legacy switched off",
        {},
        {"Mcp-Session-Id": SID},
        LEGACY,
        CarrierPolicy(legacy=False),
        Carrier.NONE,
        None,
    ),
    (
        "all aliases off, own key still works",
        {"dev.mcpsessions/sessionId": SID, "clientSessionId": OTHER},
        {},
        MODERN,
        ALL_OFF,
        Carrier.META,
        SID,
    ),
    (
        "all aliases off, nothing else",
        {"clientSessionId": SID, "openai/session": SID},
        {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SID, "Mcp-Session-Id": SID},
        LEGACY,
        ALL_OFF,
        Carrier.NONE,
        None,
    ),
    (
        "extra vendor key",
        {"com.example/conversation": SID},
        {},
        MODERN,
        CarrierPolicy(extra_meta_keys=("com.example/conversation",)),
        Carrier.META,
        SID,
    ),
    (
        "uuid4 is a valid id",
        {"dev.mcpsessions/sessionId": "9f1c1f0e-3b7a-4c52-9a43-1d2b0f6e8a77"},
        {},
        MODERN,
        CarrierPolicy(),
        Carrier.META,
        "9f1c1f0e-3b7a-4c52-9a43-1d2b0f6e8a77",
    ),
    (
        "other meta keys pass through",
        {"traceparent": "00-abc", "io.modelcontextprotocol/protocolVersion": MODERN},
        {},
        MODERN,
        CarrierPolicy(),
        Carrier.NONE,
        None,
    ),
]


@pytest.mark.parametrize(
    ("meta", "headers", "version", "policy", "carrier", "session_id"),
    [case[1:] for case in RESOLVED],
    ids=[case[0] for case in RESOLVED],
)
def test_resolution(
    meta: dict[str, Any],
    headers: dict[str, str],
    version: str | None,
    policy: CarrierPolicy,
    carrier: Carrier,
    session_id: str | None,
) -> None:
    result = resolve_carrier(RequestView("tools/call", meta, headers, version), policy)
    assert result.carrier is carrier
    assert result.session_id == session_id


# (case, meta, headers, error type, words the message must contain)
REFUSED: list[tuple[str, dict[str, Any], dict[str, str], type[Exception], str]] = [
    (
        "header differs from own key",
        {"dev.mcpsessions/sessionId": SID},
        {"Mcp-Client-Session-Id": OTHER},
        HeaderMismatch,
        "does not match",
    ),
    (
        "header differs in case only",
        {"dev.mcpsessions/sessionId": SID},
        {"Mcp-Client-Session-Id": SID.upper()},
        HeaderMismatch,
        "does not match",
    ),
    (
        "header differs from sep-2822 key",
        {"clientSessionId": SID},
        {"Mcp-Client-Session-Id": OTHER},
        HeaderMismatch,
        "clientSessionId",
    ),
    (
        "non-ASCII header against meta",
        {"dev.mcpsessions/sessionId": SID},
        {"Mcp-Client-Session-Id": SID[:-1] + "é"},
        HeaderMismatch,
        "does not match",
    ),
    ("too short", {"dev.mcpsessions/sessionId": "abc"}, {}, InvalidSessionId, "at least 16"),
    ("15 characters", {"dev.mcpsessions/sessionId": "a" * 15}, {}, InvalidSessionId, "at least 16"),
    ("too long", {"dev.mcpsessions/sessionId": "a" * 129}, {}, InvalidSessionId, "at most 128"),
    ("bad character", {"dev.mcpsessions/sessionId": SID[:-1] + "_"}, {}, InvalidSessionId, "'_'"),
    (
        "space inside",
        {"dev.mcpsessions/sessionId": SID[:8] + " " + SID[9:]},
        {},
        InvalidSessionId,
        "' '",
    ),
    (
        "non-ASCII meta",
        {"dev.mcpsessions/sessionId": SID[:-1] + "é"},
        {},
        InvalidSessionId,
        "non-ASCII",
    ),
    (
        "not a string",
        {"dev.mcpsessions/sessionId": 12345678901234567890},
        {},
        InvalidSessionId,
        "must be a string",
    ),
    ("null", {"dev.mcpsessions/sessionId": None}, {}, InvalidSessionId, "must be a string"),
    ("bad sep-2822 id", {"clientSessionId": "short"}, {}, InvalidSessionId, "clientSessionId"),
    ("bad openai id", {"openai/session": "x" * 200}, {}, InvalidSessionId, "openai/session"),
    (
        "non-ASCII bedrock header",
        {},
        {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "é" * 20},
        InvalidSessionId,
        "non-ASCII",
    ),
    (
        "typo under our prefix",
        {"dev.mcpsessions/sessionid": SID},
        {},
        InvalidSessionId,
        "not defined",
    ),
    (
        "unknown key under our prefix",
        {"dev.mcpsessions/token": "x"},
        {},
        InvalidSessionId,
        "dev.mcpsessions/sessionId",
    ),
]


@pytest.mark.parametrize(
    ("meta", "headers", "error", "words"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refusal(
    meta: dict[str, Any], headers: dict[str, str], error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        resolve_carrier(RequestView("tools/call", meta, headers, MODERN))
    assert words in str(caught.value)


def test_mismatch_is_http_400_with_32020() -> None:
    with pytest.raises(HeaderMismatch) as caught:
        resolve_carrier(
            RequestView(
                "tools/call", {"dev.mcpsessions/sessionId": SID}, {"Mcp-Client-Session-Id": OTHER}
            )
        )
    assert caught.value.http_status == 400
    assert caught.value.to_jsonrpc()["code"] == HEADER_MISMATCH == -32020


def test_malformed_id_is_400_invalid_params() -> None:
    with pytest.raises(InvalidSessionId) as caught:
        resolve_carrier(RequestView("tools/call", {"dev.mcpsessions/sessionId": "x"}))
    assert caught.value.http_status == 400
    assert caught.value.code == INVALID_PARAMS


@pytest.mark.parametrize(
    "key",
    [
        "modelcontextprotocol.io/state/session/",  # SEP-1655's draft key: '/' in the name
        "io.modelcontextprotocol/session",  # reserved prefix
        "dev.mcp/session",  # reserved: second label 'mcp'
        "com.mcp.tools/x",
        "a/b/c",
        "-bad/x",
        "com.example/-x",
        "",
    ],
)
def test_meta_key_validator_refuses(key: str) -> None:
    with pytest.raises(ValueError):
        validate_meta_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "dev.mcpsessions/sessionId",
        "com.example.mcp/x",
        "clientSessionId",
        "openai/session",
        "a.b-c/d_e.f",
    ],
)
def test_meta_key_validator_accepts(key: str) -> None:
    assert validate_meta_key(key) == key


def test_policy_refuses_reserved_extra_key() -> None:
    with pytest.raises(ValueError, match="reserved"):
        CarrierPolicy(extra_meta_keys=("io.modelcontextprotocol/conversation",))


HANDLE_POLICY = CarrierPolicy(handle_argument="session")


@pytest.mark.parametrize(
    ("method", "meta", "arguments", "policy", "carrier"),
    [
        ("tools/call", {}, {"session": "session-" + SID}, HANDLE_POLICY, Carrier.HANDLE),
        ("tools/call", {}, {"session": "session-" + SID}, CarrierPolicy(), Carrier.NONE),
        ("tools/call", {}, {"other": 1}, HANDLE_POLICY, Carrier.NONE),
        ("tools/call", {}, {"session": None}, HANDLE_POLICY, Carrier.NONE),
        ("prompts/get", {}, {"session": "session-" + SID}, HANDLE_POLICY, Carrier.NONE),
    ],
)
def test_handle_argument_carrier(
    method: str,
    meta: dict[str, Any],
    arguments: dict[str, Any],
    policy: CarrierPolicy,
    carrier: Carrier,
) -> None:
    view = RequestView(method, meta, {}, MODERN, arguments)
    assert resolve_carrier(view, policy).carrier is carrier


def test_malformed_handle_argument() -> None:
    view = RequestView("tools/call", {}, {}, MODERN, {"session": "nope"})
    with pytest.raises(InvalidSessionId, match="'session' argument"):
        resolve_carrier(view, HANDLE_POLICY)
