"""Session ids, handle strings, principals and error objects (DESIGN §2-§4)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_sessions.core import (
    ANONYMOUS,
    InvalidHandle,
    InvalidSessionId,
    InvalidState,
    Principal,
    SessionNotFound,
    SessionRequired,
    StateConflict,
    mint_handle,
    new_session_id,
    parse_handle,
    validate_kind,
    validate_session_id,
)


def test_minted_ids_are_valid_128_bit_and_distinct() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        assert validate_session_id(value) == value
        assert re.fullmatch(r"[0-9a-f]{32}", value)  # 32 hex digits = 128 bits


@given(st.text(alphabet=st.sampled_from("abcXYZ019-"), min_size=16, max_size=128))
def test_ids_in_the_alphabet_are_accepted(value: str) -> None:
    assert validate_session_id(value) == value


@given(st.text(min_size=0, max_size=200))
def test_validation_raises_only_invalid_session_id(value: str) -> None:
    try:
        validate_session_id(value)
    except InvalidSessionId:
        return
    assert 16 <= len(value) <= 128 and re.fullmatch(r"[A-Za-z0-9-]+", value)


def test_handles_round_trip() -> None:
    handle = mint_handle("vm")
    parsed = parse_handle(handle, kind="vm")
    assert parsed.kind == "vm" and str(parsed) == handle
    assert re.fullmatch(r"vm-[0-9a-f]{32}", handle)
    assert mint_handle("vm") != handle


@pytest.mark.parametrize(
    ("value", "kind", "words"),
    [
        (42, None, "must be a string"),
        ("vm", None, "is not a handle"),
        ("vm-1234", None, "is not a handle"),
        ("VM-" + "0" * 32, None, "is not a handle"),
        ("vm-" + "0" * 31 + "g", None, "is not a handle"),
        ("vm-" + "0" * 33, None, "is not a handle"),
        ("cart-" + "0" * 32, "vm", "is a 'cart' handle, but a 'vm' handle is needed"),
    ],
)
def test_bad_handles(value: object, kind: str | None, words: str) -> None:
    with pytest.raises(InvalidHandle, match=re.escape(words)):
        parse_handle(value, kind=kind)


@pytest.mark.parametrize("kind", ["", "Vm", "1vm", "v-m", "v_m", "x" * 33])
def test_bad_kinds(kind: str) -> None:
    with pytest.raises(ValueError, match="handle kind"):
        validate_kind(kind)
    with pytest.raises(ValueError):
        mint_handle(kind)


def test_principal_keys_round_trip_and_differ() -> None:
    alice = Principal(issuer="https://idp", subject="alice", client_id="app")
    bob = Principal(issuer="https://idp", subject="bob", client_id="app")
    assert ANONYMOUS.is_anonymous and ANONYMOUS.key == "anonymous"
    assert not alice.is_anonymous
    assert alice.key != bob.key != ANONYMOUS.key
    assert Principal.from_key(alice.key) == alice
    assert Principal.from_key("anonymous") is ANONYMOUS
    # Parts containing separators cannot collide.
    assert Principal("a,b", "c").key != Principal("a", "b,c").key
    with pytest.raises(ValueError):
        Principal.from_key("not a key")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SessionNotFound(), -31001),
        (SessionRequired(), -31002),
        (InvalidState(), -31003),
        (StateConflict(), -31004),
    ],
)
def test_error_codes_and_actionable_messages(error: Exception, code: int) -> None:
    wire = error.to_jsonrpc()  # type: ignore[attr-defined]
    assert wire["code"] == code
    assert len(wire["message"]) > 40  # says what to do, not just a name
    assert "data" not in wire  # never leaks whether an id exists


def test_invalid_state_reason_stays_off_the_wire() -> None:
    error = InvalidState("principal: sealed for another principal")
    assert "sealed for another principal" not in error.to_jsonrpc()["message"]
    assert "sealed for another principal" in str(error)
    assert InvalidState("expired").to_jsonrpc() == InvalidState("tampered").to_jsonrpc()
