"""The record type and its JSON copy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_sessions.core.records import Record, copy_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=15,
)


@given(json_values)
def test_copy_json_is_equal_and_independent(value: object) -> None:
    copied = copy_json(value)
    assert copied == value
    if isinstance(value, dict | list) and value:
        assert copied is not value
        # Mutating the copy, however deep, leaves the original alone.
        snapshot = repr(value)
        stack = [copied]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                stack.extend(node.values())
                node["__mutated__"] = True
            elif isinstance(node, list):
                stack.extend(node)
                node.append("mutated")
        assert repr(value) == snapshot


def test_expiry_is_the_earlier_of_idle_and_cap() -> None:
    record = Record.new(
        kind="session", id="x" * 16, principal="p", origin="t", now=100.0, idle_ttl=10
    )
    assert record.expires_at == 110.0 and math.isinf(record.max_expires_at)
    capped = Record.new(
        kind="session",
        id="x" * 16,
        principal="p",
        origin="t",
        now=100.0,
        idle_ttl=10,
        max_lifetime=5,
    )
    assert capped.expires_at == 105.0
    assert capped.is_expired(105.0) and not capped.is_expired(104.9)
    with pytest.raises(ValueError, match="idle_ttl"):
        Record.new(kind="session", id="x", principal="p", origin="t", now=0, idle_ttl=0)
