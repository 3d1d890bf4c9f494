"""The carrier order of DESIGN §2 as revised for issue #11: ``_meta`` id, aliases, handle
argument, legacy ``Mcp-Session-Id``, the connection; and what happens when two explicit
carriers of one call disagree, or a handle argument is malformed."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_sessions.core import (
    Carrier,
    CarrierConflict,
    CarrierPolicy,
    MalformedHandle,
    RequestView,
    resolve_carrier,
)
from mcp_sessions.core.errors import INVALID_PARAMS

SID = "0123456789abcdef0123456789abcdef"
HANDLE = "session-fedcba9876543210fedcba9876543210"
CONNECTION = "connection-00112233445566778899aabbccddeeff"
LEGACY_ID = "a" * 32
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
POLICY = CarrierPolicy(handle_argument="session")


def view(
    meta: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    arguments: dict[str, Any] | None = None,
    *,
    version: str = MODERN,
    connection_id: str | None = None,
    method: str = "tools/call",
) -> RequestView:
    return RequestView(method, meta, headers, version, arguments, connection_id)


def test_handle_argument_beats_the_legacy_session() -> None:
    resolution = resolve_carrier(
        view(None, {"Mcp-Session-Id": LEGACY_ID}, {"session": HANDLE}, version=LEGACY), POLICY
    )
    assert (resolution.carrier, resolution.session_id) == (Carrier.HANDLE, HANDLE)
    # The adapter takes the argument out before the tool's own arguments are validated.
    assert resolution.argument == "session"


def test_without_a_handle_argument_the_legacy_session_applies() -> None:
    resolution = resolve_carrier(
        view(None, {"Mcp-Session-Id": LEGACY_ID}, {"x": 1}, version=LEGACY), POLICY
    )
    assert (resolution.carrier, resolution.session_id, resolution.argument) == (
        Carrier.LEGACY,
        LEGACY_ID,
        None,
    )


@pytest.mark.parametrize(
    ("meta", "headers", "named"),
    [
        ({"dev.mcpsessions/sessionId": SID}, None, "params._meta['dev.mcpsessions/sessionId']"),
        ({"clientSessionId": SID}, None, "params._meta['clientSessionId']"),
        ({"openai/session": SID}, None, "params._meta['openai/session']"),
        (None, {"X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SID}, "Bedrock"),
    ],
)
def test_an_explicit_id_that_disagrees_with_the_handle_argument_is_refused(
    meta: dict[str, Any] | None, headers: dict[str, str] | None, named: str
) -> None:
    with pytest.raises(CarrierConflict) as caught:
        resolve_carrier(view(meta, headers, {"session": HANDLE}), POLICY)
    error = caught.value
    assert error.code == INVALID_PARAMS
    # The message names both carriers, so the client knows which two to reconcile.
    assert named in error.message
    assert "'session'" in error.message


def test_an_explicit_id_that_agrees_with_the_handle_argument_is_one_session() -> None:
    resolution = resolve_carrier(
        view({"dev.mcpsessions/sessionId": HANDLE}, None, {"session": HANDLE}), POLICY
    )
    assert (resolution.carrier, resolution.session_id, resolution.argument) == (
        Carrier.META,
        HANDLE,
        "session",
    )


def test_a_handle_argument_is_not_read_when_the_fallback_is_off() -> None:
    resolution = resolve_carrier(
        view({"dev.mcpsessions/sessionId": SID}, None, {"session": HANDLE}), CarrierPolicy()
    )
    assert (resolution.carrier, resolution.session_id, resolution.argument) == (
        Carrier.META,
        SID,
        None,
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (42, "must be a string, got int"),
        (["session-x"], "must be a string, got list"),
        ("x", "is 1 characters long"),
        ("session-ZZZ", "is 11 characters long"),
        ("s" * 10_000, "is 10000 characters long"),
        ("session-" + "é" * 20, "only letters, digits and '-'"),
        ("session/" + "0" * 32, "only letters, digits and '-'"),
    ],
)
def test_a_malformed_handle_argument_names_the_argument(value: object, problem: str) -> None:
    with pytest.raises(MalformedHandle) as caught:
        resolve_carrier(view(None, None, {"session": value}), POLICY)
    assert caught.value.argument == "session"
    assert caught.value.message.startswith("The 'session' argument ")
    assert problem in caught.value.message
    # Never echoes the value: it may be anything, of any size.
    assert len(caught.value.message) < 200


def test_the_connection_is_the_last_carrier() -> None:
    alone = resolve_carrier(view(None, None, {}, connection_id=CONNECTION), POLICY)
    assert (alone.carrier, alone.session_id) == (Carrier.CONNECTION, CONNECTION)
    # Every explicit carrier wins over it.
    meta = resolve_carrier(
        view({"dev.mcpsessions/sessionId": SID}, None, {}, connection_id=CONNECTION), POLICY
    )
    assert (meta.carrier, meta.session_id) == (Carrier.META, SID)
    handle = resolve_carrier(
        view(None, None, {"session": HANDLE}, connection_id=CONNECTION), POLICY
    )
    assert (handle.carrier, handle.session_id) == (Carrier.HANDLE, HANDLE)
    legacy = resolve_carrier(
        view(None, {"Mcp-Session-Id": LEGACY_ID}, None, version=LEGACY, connection_id=CONNECTION),
        POLICY,
    )
    assert legacy.carrier is Carrier.LEGACY
    # Any method may belong to the connection's session (resources/read, prompts/get, ...).
    other = resolve_carrier(view(method="resources/read", connection_id=CONNECTION), POLICY)
    assert other.carrier is Carrier.CONNECTION


def test_the_connection_carrier_can_be_switched_off() -> None:
    resolution = resolve_carrier(
        view(connection_id=CONNECTION), CarrierPolicy(handle_argument="session", connection=False)
    )
    assert resolution.carrier is Carrier.NONE
    assert resolution.session_id is None
