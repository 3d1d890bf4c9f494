"""Sealed state tokens (DESIGN §4): round trips, tampering, binding, expiry, rotation, size."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_sessions.core import (
    InvalidState,
    KeyRing,
    OversizedState,
    SealingKey,
    StateCodec,
    newest_token,
    read_token_header,
)
from mcp_sessions.core.sealing import TOKEN_PREFIX
from mcp_sessions.keyfiles import read_key_file

NOW = 1_800_000_000.0
ALICE = '["https://idp","alice","app"]'
BOB = '["https://idp","bob","app"]'
SID = "0123456789abcdef0123456789abcdef"
OTHER_SID = "fedcba9876543210fedcba9876543210"
RING = KeyRing.generate()
CODEC = StateCodec(RING, audience="demo-server", ttl=600)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


def seal(state: dict[str, Any] | None = None, **overrides: Any) -> str:
    args: dict[str, Any] = {"principal": ALICE, "session_id": SID, "seq": 7, "now": NOW}
    args.update(overrides)
    return CODEC.seal({"cart": ["apple"]} if state is None else state, **args)


def unseal(token: object, **overrides: Any) -> Any:
    args: dict[str, Any] = {"principal": ALICE, "session_id": SID, "now": NOW + 1}
    args.update(overrides)
    return CODEC.unseal(token, **args)


@given(json_objects, st.integers(0, 2**64 - 1))
def test_round_trip(state: dict[str, Any], seq: int) -> None:
    token = seal(state, seq=seq)
    opened = unseal(token)
    assert opened.state == state
    assert opened.seq == seq
    assert opened.expires_at == NOW + 600
    assert read_token_header(token).seq == seq
    assert token.startswith(TOKEN_PREFIX) and token.isascii()


def test_tokens_are_immutable_and_older_ones_stay_valid() -> None:
    first = seal({"n": 1}, seq=1)
    second = seal({"n": 2}, seq=2)
    assert first != second
    assert unseal(first).state == {"n": 1}  # rollback by replaying an older token
    assert unseal(second).state == {"n": 2}
    assert newest_token([second, first, "garbage"]) == second
    assert newest_token(["garbage"]) is None


def test_same_state_seals_differently_each_time() -> None:
    assert seal() != seal()  # fresh nonce: equal states are not linkable


def test_every_single_character_change_is_rejected() -> None:
    token = seal({"a": 1})
    alphabet = string.ascii_letters + string.digits + "-_+/=.é\x00 "
    for position, original in enumerate(token):
        for replacement in alphabet:
            if replacement == original:
                continue
            changed = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(InvalidState):
                unseal(changed)


def test_every_truncation_and_extension_is_rejected() -> None:
    token = seal({"a": 1})
    for length in range(len(token)):
        with pytest.raises(InvalidState):
            unseal(token[:length])
    for suffix in ["A", "AA", "AAA", "AAAA", "=", "==", ".", "é", token]:
        with pytest.raises(InvalidState):
            unseal(token + suffix)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_single_character_changes_are_rejected(data: st.DataObject) -> None:
    token = seal({"cart": list(range(20))})
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != token[position]))
    with pytest.raises(InvalidState):
        unseal(token[:position] + replacement + token[position + 1 :])


@given(
    st.one_of(
        st.text(max_size=300), st.binary(max_size=50), st.integers(), st.none(), st.lists(st.text())
    )
)
def test_garbage_never_raises_anything_but_invalid_state(garbage: object) -> None:
    with pytest.raises(InvalidState):
        unseal(garbage)
    if isinstance(garbage, str):
        with pytest.raises(InvalidState):
            unseal(TOKEN_PREFIX + garbage)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"principal": BOB}, "principal"),
        ({"principal": "anonymous"}, "principal"),
        ({"session_id": OTHER_SID}, "session"),
        ({"now": NOW + 600}, "expired"),
        ({"now": NOW + 10_000}, "expired"),
    ],
)
def test_binding_and_expiry(overrides: dict[str, Any], reason: str) -> None:
    token = seal()
    with pytest.raises(InvalidState) as caught:
        unseal(token, **overrides)
    assert caught.value.reason.startswith(reason)


@given(st.text(min_size=1, max_size=40), st.text(min_size=16, max_size=40))
def test_foreign_principal_or_session_always_fails(principal: str, session_id: str) -> None:
    token = seal()
    if principal != ALICE:
        with pytest.raises(InvalidState):
            unseal(token, principal=principal)
    if session_id != SID:
        with pytest.raises(InvalidState):
            unseal(token, session_id=session_id)


def test_other_audience_fails_even_with_the_same_keys() -> None:
    other = StateCodec(RING, audience="another-server", ttl=600)
    with pytest.raises(InvalidState) as caught:
        other.unseal(seal(), principal=ALICE, session_id=SID, now=NOW)
    assert caught.value.reason.startswith("audience")


def test_rotation_newest_seals_all_unseal_until_removed() -> None:
    old, new = SealingKey.generate(), SealingKey.generate()
    before = StateCodec(KeyRing([old]), audience="a")
    during = StateCodec(KeyRing([new, old]), audience="a")
    after = StateCodec(KeyRing([new]), audience="a")
    old_token = before.seal({"v": 1}, principal=ALICE, session_id=SID, seq=1, now=NOW)
    new_token = during.seal({"v": 2}, principal=ALICE, session_id=SID, seq=2, now=NOW)
    assert read_token_header(new_token).kid == new.kid.hex()
    assert during.unseal(old_token, principal=ALICE, session_id=SID, now=NOW).state == {"v": 1}
    assert after.unseal(new_token, principal=ALICE, session_id=SID, now=NOW).state == {"v": 2}
    with pytest.raises(InvalidState) as caught:
        after.unseal(old_token, principal=ALICE, session_id=SID, now=NOW)
    assert caught.value.reason.startswith("unknown key")


def test_size_cap() -> None:
    def fits(size: int) -> bool:
        try:
            token = seal({"blob": "x" * size})
        except OversizedState:
            return False
        assert len(token) <= 4096
        return True

    low, high = 0, 4096  # fits(low) and not fits(high)
    assert fits(low) and not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    # The largest state that fits seals to a token right at the cap.
    assert len(seal({"blob": "x" * low})) > 4090
    with pytest.raises(OversizedState) as caught:
        seal({"blob": "x" * high})
    assert "server" in caught.value.message and "4096" in caught.value.message


def test_non_object_state_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="JSON object"):
        CODEC.seal(["not", "a", "dict"], principal=ALICE, session_id=SID, seq=1)  # type: ignore[arg-type]


def test_key_text_round_trip_and_errors(tmp_path: Any) -> None:
    key = SealingKey.generate()
    assert SealingKey.from_text(key.to_text()) == key
    path = tmp_path / "keys"
    path.write_text(f"# newest first\n{key.to_text()}\n\n{SealingKey.generate().to_text()}\n")
    path.chmod(0o600)
    ring = read_key_file(path)
    assert len(ring.keys) == 2 and ring.sealing_kid == key.kid
    with pytest.raises(ValueError, match="line 1"):
        KeyRing.from_text("nonsense")
    with pytest.raises(ValueError, match="no sealing key"):
        KeyRing.from_text("# only a comment\n")
    with pytest.raises(ValueError, match="32 are required"):
        SealingKey.from_text("mcps-key-1:AAAA")
    with pytest.raises(ValueError, match="cannot read key file"):
        read_key_file(tmp_path / "missing")
    with pytest.raises(ValueError, match="same key twice"):
        KeyRing([key, key])
